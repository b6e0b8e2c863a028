"""Offline layer ranking (`trady rank`, SPEC 6): model + proxy data set -> `topk.json` (+ PNG plots).

The float twin of the int8 graph (compiler/torch_model.py; dequantised weights, int8 output
ranges as clamps, a fresh head for the data set's classes) is fully fine-tuned: every conv weight
and bias and the head, SGD without momentum, batch 64, a per-step cosine learning rate from `lr`
down to 0 (optionally after a linear warm-up, off by default), training images shuffled each epoch from `seed`. After every step, for
every conv layer and input channel c, the L2 norm of the weight gradient slice dW[:, c] (depthwise:
W[c]) is added to that channel's running sum: the cumulative gradient norm. dW is the gradient
with respect to the dequantised float weight W_q * s_w: on the device QAS (dW_q / s_w^2) makes the
int8 update equal to a float SGD step on exactly this weight (SPEC 5).

Then (SPEC 6): channel RGN = cumulative norm / (C_W + C_A) of its layer (compiler/costs.py); layer
RGN = sum over its channels that can be sampled (dead channels excluded, as in the sampler's pool);
layers are ranked by layer RGN, best first (ties: forward order), and K is the smallest number of
top layers whose RGN sum reaches 97% of the total. `topk.json` is read back by
`compiler.sampler.read_topk` (`--topk FILE`); `auto_topk` caches one per model file and ranking
parameters for `trady compile --topk auto`.

Defaults are SPEC 11's (2 epochs, lr 0.01), and with them (seed 0) this reproduces its figures on
mcunet-5fps: K = 17 on CIFAR-10, 18 (SPEC: 19) on the 6 animal classes, Spearman 0.996, the last
conv first (60% of the RGN). But at lr 0.01 the float full fine-tuning of mcunet-5fps does not
train: the early layers' gradients are large (no batch norm), the loss peaks near 100 in epoch 1
(seed 0) or the features collapse (seed 1: K = 24), and the accuracy stays at chance, so the
ranking reflects that phase. At lr 0.001-0.003 it trains (~52% train accuracy in epoch 2),
K = 28-29 (closer to the paper's 27 in SPEC 6), conv 32 comes first and the last conv falls to ~3%;
rankings across seeds and those learning rates agree at Spearman >= 0.993, and correlate with the
lr 0.01 ranking at 0.93. `RankResult.diverged` flags a run that blew up or learned nothing.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from compiler import data
from compiler.costs import layer_costs
from compiler.errors import TradyError
from compiler.ir import Graph
from compiler.sampler import _eligible

THRESHOLD = 0.97  # SPEC 6: K holds >= 97% of the total RGN
DEFAULTS = {"epochs": 2, "lr": 0.01, "seed": 0, "batch": 64}
ANIMALS = (2, 3, 4, 5, 6, 7)  # CIFAR-10 bird, cat, deer, dog, frog, horse (SPEC 11's 6 animal classes)


@dataclass(frozen=True)
class LayerRGN:
    index: int  # conv index in forward order
    name: str
    kind: str
    c_w: int
    c_a: int
    in_channels: int
    eligible: int  # input channels that count (not dead)
    raw_norm: float  # sum over eligible channels of the cumulative gradient norm
    rgn: float  # raw_norm / (C_W + C_A)


@dataclass(frozen=True, eq=False)
class RankResult:
    model: str
    model_file: str
    model_sha256: str
    data: str
    classes: tuple[int, ...]  # data set labels trained on (mapped to 0..n-1 in this order)
    epochs: int
    seed: int
    lr: float
    batch: int
    train_images: int
    steps: int
    threshold: float
    layers: tuple[LayerRGN, ...]  # forward order
    order: tuple[int, ...]  # conv indices, best first
    k: int
    channel_norms: tuple[np.ndarray, ...]  # cumulative ||dW[:, c]|| per conv, every input channel
    history: tuple[dict, ...] = field(default=())  # per epoch: mean loss and accuracy during the epoch
    step_loss: tuple[float, ...] = field(default=())  # per step (shows a divergence, if any)
    seconds: float = 0.0
    warmup_epochs: float = 0.0
    fake_quant: bool = False

    def cumulative_shares(self) -> list[float]:
        """Share of total RGN held by the top 1, 2, ... layers (ranking order)."""
        return cumulative_shares([self.layers[i].rgn for i in self.order])

    @property
    def loss_peak(self) -> float:
        """Largest step loss over the first step's loss (>> 1: the fine-tuning blew up on the way)."""
        if not self.step_loss or self.step_loss[0] <= 0:
            return 1.0
        return max(self.step_loss) / self.step_loss[0]

    @property
    def diverged(self) -> bool:
        """The fine-tuning blew up or learned nothing: the loss peaked above 5x its start, the last
        epoch's mean loss is no better than the first step's, or its accuracy is below 1.5x chance.
        Not judged on runs under 10 steps (a smoke test has nothing to learn from)."""
        if not self.history or len(self.step_loss) < 10:
            return False
        last = self.history[-1]
        return (self.loss_peak > 5 or last["train_loss"] >= self.step_loss[0]
                or last["train_acc"] < 1.5 / max(len(self.classes), 1))

    def top(self) -> list[str]:
        return [self.layers[i].name for i in self.order[:self.k]]

    def as_json(self) -> dict:
        cum = self.cumulative_shares()
        total = math.fsum(la.rgn for la in self.layers)
        total_raw = math.fsum(la.raw_norm for la in self.layers)
        ranking = [{"layer": self.layers[i].name, "index": i, "rgn": self.layers[i].rgn,
                    "raw_norm": self.layers[i].raw_norm, "cumulative_share": cum[r]}
                   for r, i in enumerate(self.order)]
        position = {i: r for r, i in enumerate(self.order)}
        layers = [{"index": la.index, "layer": la.name, "kind": la.kind, "C_W": la.c_w, "C_A": la.c_a,
                   "in_channels": la.in_channels, "eligible_channels": la.eligible,
                   "raw_norm": la.raw_norm, "raw_share": la.raw_norm / total_raw if total_raw > 0 else 0.0,
                   "rgn": la.rgn, "rgn_share": la.rgn / total if total > 0 else 0.0,
                   "rank": position[la.index] + 1, "in_topk": position[la.index] < self.k}
                  for la in self.layers]
        return {"k": self.k, "threshold": self.threshold, "ranking": ranking, "model": self.model,
                "model_file": self.model_file, "model_sha256": self.model_sha256, "data": self.data,
                "classes": list(self.classes), "train_images": self.train_images, "epochs": self.epochs,
                "seed": self.seed, "lr": self.lr, "warmup_epochs": self.warmup_epochs, "batch": self.batch,
                "steps": self.steps, "fake_quant": self.fake_quant,
                "optimizer": "SGD, no momentum, per-step cosine learning rate, full fine-tuning (float)",
                "gradient": "cumulative sum over steps of ||dL/dW[:, c]||_2 on the dequantised float weight",
                "total_rgn": total, "total_raw_norm": total_raw, "layers": layers,
                "history": list(self.history), "loss_peak": self.loss_peak, "diverged": self.diverged,
                "step_loss": [round(v, 4) for v in self.step_loss],
                "seconds": round(self.seconds, 1)}


def cumulative_shares(values: Sequence[float]) -> list[float]:
    total = math.fsum(values)
    if total <= 0:
        return [0.0] * len(values)
    out, acc = [], 0.0
    for v in values:
        acc += v
        out.append(acc / total)
    return out


def ranking_order(values: Sequence[float]) -> list[int]:
    """Indices by value, largest first; ties keep the lower index (forward order) first."""
    return sorted(range(len(values)), key=lambda i: (-values[i], i))


def choose_k(values: Sequence[float], threshold: float = THRESHOLD) -> int:
    """Smallest number of top values (sorted descending) whose sum reaches `threshold` of the total.

    The comparison allows a relative 1e-12 for rounding, so values of exactly 97% count as 97%. All
    zero (nothing to choose between): every layer.
    """
    if not 0 < threshold <= 1:
        raise TradyError(f"threshold {threshold}: expected a fraction in (0, 1]")
    vals = sorted((float(v) for v in values), reverse=True)
    if any(v < 0 or not math.isfinite(v) for v in vals):
        raise TradyError("RGN values must be finite and non-negative")
    total = math.fsum(vals)
    if total <= 0:
        return len(vals)
    need = threshold * total * (1 - 1e-12)
    acc = 0.0
    for k, v in enumerate(vals, 1):
        acc += v
        if acc >= need:
            return k
    return len(vals)


def layer_rgn(graph: Graph, channel_norms: Sequence[np.ndarray]) -> tuple[LayerRGN, ...]:
    """Per-channel cumulative norms -> per-layer raw norm and RGN (dead channels left out)."""
    out = []
    for cost, norms in zip(layer_costs(graph), channel_norms, strict=True):
        ok = _eligible(graph, cost)
        raw = math.fsum(float(norms[c]) for c in ok)
        out.append(LayerRGN(cost.index, cost.name, cost.kind, cost.c_w, cost.c_a, cost.in_channels, len(ok),
                            raw, raw / (cost.c_w + cost.c_a)))
    return tuple(out)


def cosine_lr(lr: float, step: int, total: int, warmup: int = 0) -> float:
    """Per-step learning rate: linear warm-up over `warmup` steps (lr/warmup, 2 lr/warmup, ... lr),
    then a cosine from lr towards 0 (after the last step)."""
    if step < warmup:
        return lr * (step + 1) / warmup
    return lr * 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(total - warmup, 1)))


def select_classes(split: data.Split, classes: Sequence[int] | None) -> tuple[data.Split, tuple[int, ...]]:
    """Keep the images of `classes` (labels remapped to 0..n-1 in that order); None: all labels."""
    if classes is None:
        labels = tuple(int(c) for c in np.unique(split.y))
        if labels != tuple(range(len(labels))):
            labels = tuple(range(int(split.y.max(initial=0)) + 1))
        return split, labels
    labels = tuple(int(c) for c in classes)
    if len(set(labels)) != len(labels) or len(labels) < 2:
        raise TradyError(f"classes {list(labels)}: expected at least two distinct labels")
    lut = np.full(int(max(int(split.y.max(initial=0)), max(labels))) + 1, -1, np.int64)
    lut[list(labels)] = np.arange(len(labels))
    keep = np.flatnonzero(lut[split.y] >= 0)
    missing = sorted(set(labels) - {int(v) for v in np.unique(split.y[keep])})
    if missing:
        raise TradyError(f"classes {missing}: no training images with these labels")
    return data.Split(split.x[keep], lut[split.y[keep]]), labels


def rank(graph: Graph, dataset: data.Dataset, epochs: int = 2, lr: float = 0.01, seed: int = 0, batch: int = 64,
         classes: Sequence[int] | None = None, threshold: float = THRESHOLD, fake_quant: bool = False,
         warmup_epochs: float = 0.0, threads: int = 2, progress: bool = True) -> RankResult:
    """Fine-tune the float twin of `graph` on `dataset.train`, accumulate RGN, rank the layers."""
    from compiler.torch_model import TorchModel

    if epochs < 1:
        raise TradyError(f"--epochs {epochs}: expected at least 1")
    if not (math.isfinite(lr) and lr > 0):
        raise TradyError(f"--lr {lr}: expected a positive learning rate")
    if batch < 1:
        raise TradyError(f"batch {batch}: expected at least 1")
    want = graph.tensors[graph.input].shape
    train, labels = select_classes(dataset.train, classes)
    if len(train.y) == 0:
        raise TradyError(f"{dataset.name}: no training images")
    if train.x.shape[1:] != want:
        raise TradyError(f"{dataset.name}: images {train.x.shape[1:]}, the model wants {want}")
    n_cls = len(labels)
    if n_cls < 2:
        raise TradyError(f"{dataset.name}: the training images hold {n_cls} class; ranking needs at least 2")
    t0 = time.perf_counter()
    old_threads = torch.get_num_threads()
    torch.set_num_threads(max(1, min(threads, old_threads)))
    try:
        model = TorchModel(graph, n_cls, fake_quant=fake_quant, seed=seed)  # fresh head: pipeline.init_head
        model = model.to(memory_format=torch.channels_last)  # ~1.5-2x faster depthwise convs on CPU
        model.train()
        opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.0)
        gen = torch.Generator().manual_seed(seed)
        n = len(train.y)
        per_epoch = (n + batch - 1) // batch
        total = epochs * per_epoch
        warmup = min(round(warmup_epochs * per_epoch), total)
        sums = [torch.zeros(c.in_channels, dtype=torch.float64) for c in graph.convs]
        x_all, y_all = torch.from_numpy(train.x), torch.from_numpy(train.y)
        history: list[dict] = []
        step_loss: list[float] = []
        step = 0
        from tqdm import tqdm

        with tqdm(total=total, desc=f"rank {graph.name}", unit="step", file=sys.stderr,
                  disable=not progress) as bar:
            for epoch in range(epochs):
                perm = torch.randperm(n, generator=gen)
                loss_sum, correct = 0.0, 0
                for b in range(per_epoch):
                    idx = perm[b * batch:(b + 1) * batch]
                    rate = cosine_lr(lr, step, total, warmup)
                    for grp in opt.param_groups:
                        grp["lr"] = rate
                    xb = model.input_real(x_all[idx]).contiguous(memory_format=torch.channels_last)
                    logits = model(xb)
                    loss = F.cross_entropy(logits, y_all[idx])
                    if not math.isfinite(loss.item()):
                        raise TradyError(f"rank: the loss diverged at step {step + 1} (lr {lr}); try a smaller --lr")
                    opt.zero_grad(set_to_none=False)
                    loss.backward()
                    for acc, norm in zip(sums, model.conv_weight_grad_norms(), strict=True):
                        acc += norm.double()
                    opt.step()
                    step += 1
                    step_loss.append(loss.item())
                    loss_sum += loss.item() * len(idx)
                    correct += int((logits.argmax(1) == y_all[idx]).sum())
                    bar.update(1)
                    bar.set_postfix(epoch=epoch + 1, loss=f"{loss.item():.3f}", lr=f"{rate:.2g}")
                history.append({"epoch": epoch + 1, "train_loss": loss_sum / n, "train_acc": correct / n})
                if progress:
                    bar.write(f"epoch {epoch + 1}: train loss {loss_sum / n:.4f}, "
                              f"train acc {100 * correct / n:.2f}% (during the epoch)")
    finally:
        torch.set_num_threads(old_threads)
    norms = tuple(s.numpy() for s in sums)
    layers = layer_rgn(graph, norms)
    values = [la.rgn for la in layers]
    order = tuple(ranking_order(values))
    return RankResult(graph.name, graph.source, graph.source_sha256, dataset.name, labels, epochs, seed, float(lr),
                      batch, len(train.y), total, threshold, layers, order, choose_k(values, threshold), norms,
                      tuple(history), tuple(step_loss), time.perf_counter() - t0, float(warmup_epochs), fake_quant)


def write_topk(result: RankResult, path: Path, plot: bool = True) -> Path:
    """Write topk.json atomically (and `<stem>.png` next to it); return the json path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(result.as_json(), indent=1) + "\n")
    os.replace(tmp, path)
    if plot:
        plot_ranking(result, path.with_suffix(".png"))
    return path


def plot_ranking(result: RankResult, png: Path) -> None:
    """Per-layer raw norm and RGN (bars, forward order, top-K highlighted) and the cumulative curve."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = result.layers
    top = set(result.order[:result.k])
    colors = ["tab:orange" if la.index in top else "tab:blue" for la in layers]
    x = np.arange(len(layers))
    fig, ax = plt.subplots(3, 1, figsize=(max(8.0, 0.22 * len(layers)), 9.5))
    ax[0].bar(x, [la.raw_norm for la in layers], color=colors)
    ax[0].set(yscale="log", ylabel="cumulative ||dW[:, c]|| (sum)",
              title=f"{result.model}: raw gradient norm per layer (orange: top-{result.k})")
    ax[1].bar(x, [la.rgn for la in layers], color=colors)
    ax[1].set(yscale="log", ylabel="RGN = norm / (C_W + C_A)", title="reweighted gradient norm (RGN) per layer")
    for a in ax[:2]:
        a.set_xticks(x, [str(la.index) for la in layers], fontsize=7)
        a.set_xlabel("conv index (forward order)")
        a.grid(alpha=0.3, axis="y")
    cum = [0.0, *result.cumulative_shares()]
    ax[2].plot(range(len(cum)), [100 * c for c in cum], marker=".")
    ax[2].axhline(100 * result.threshold, color="grey", ls="--", lw=1)
    ax[2].axvline(result.k, color="tab:red", ls="--", lw=1)
    ax[2].annotate(f"K = {result.k} ({100 * result.threshold:g}%)", (result.k, 100 * result.threshold),
                   xytext=(6, -18), textcoords="offset points", color="tab:red")
    ax[2].set(xlabel="top layers by RGN", ylabel="cumulative RGN (%)", ylim=(0, 102),
              title=f"cumulative RGN ({result.data}, {result.train_images} images, {result.epochs} epochs, "
                    f"lr {result.lr:g}, seed {result.seed})")
    ax[2].grid(alpha=0.3)
    fig.tight_layout()
    tmp = png.with_name(f".{png.name}.{os.getpid()}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, png)


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman rank correlation of two per-layer value lists (average ranks for ties)."""
    def ranks(v: Sequence[float]) -> np.ndarray:
        v = np.asarray(v, np.float64)
        order = np.argsort(v, kind="stable")
        r = np.empty(len(v))
        r[order] = np.arange(len(v), dtype=np.float64)
        for val in np.unique(v):
            same = v == val
            r[same] = r[same].mean()
        return r

    ra, rb = ranks(a), ranks(b)
    if len(ra) != len(rb) or len(ra) < 2:
        raise ValueError("spearman: two lists of the same length >= 2")
    ra, rb = ra - ra.mean(), rb - rb.mean()
    den = math.sqrt(float((ra * ra).sum() * (rb * rb).sum()))
    return float((ra * rb).sum() / den) if den > 0 else 0.0


def summary(result: RankResult, top: int = 10) -> str:
    cum = result.cumulative_shares()
    total = math.fsum(la.rgn for la in result.layers)
    lines = [(f"rank {result.model}: K = {result.k} of {len(result.layers)} layers hold "
              f">= {100 * result.threshold:g}% of the RGN ({result.train_images} images x {result.epochs} "
              f"epochs, {result.steps} steps, {result.seconds:.0f} s)")]
    for r, i in enumerate(result.order[:top]):
        la = result.layers[i]
        lines.append(f"  {r + 1:2d}. conv {i:2d} {la.name:24s} {la.kind:9s} RGN {la.rgn:.4g} "
                     f"({100 * la.rgn / total:5.2f}%, cumulative {100 * cum[r]:6.2f}%)")
    if result.diverged:
        last = result.history[-1]
        lines.append(f"warning: the float fine-tuning did not train (loss peaked at {result.loss_peak:.1f}x its "
                     f"start; last epoch: loss {last['train_loss']:.3g}, accuracy {100 * last['train_acc']:.1f}%), "
                     "so the gradient norms reflect a blow-up or a collapse (as at SPEC 11's lr 0.01 on "
                     "mcunet-5fps); a smaller --lr, e.g. 0.001, trains stably.")
    return "\n".join(lines)


def _load(model: Path, data_path: Path, train: int | None) -> tuple[Graph, data.Dataset]:
    from compiler.importers import tiny_training

    if train is not None and train < 2:
        raise TradyError(f"--train {train}: expected at least 2 images")
    graph = tiny_training.load(Path(model))
    res = graph.tensors[graph.input].shape[0]
    return graph, data.load(data_path, res, limit_train=train, limit_test=0)


def cmd_rank(args: argparse.Namespace) -> int:
    """`trady rank MODEL --data DATA --out topk.json [--epochs E] [--seed S] [--lr LR] [--train N]`."""
    out = Path(args.out)
    if out.is_dir():
        raise TradyError(f"--out {out}: is a folder; expected a file name such as topk.json")
    epochs = DEFAULTS["epochs"] if args.epochs is None else int(args.epochs)
    seed = DEFAULTS["seed"] if args.seed is None else int(args.seed)
    lr = DEFAULTS["lr"] if args.lr is None else float(args.lr)
    if epochs < 1:
        raise TradyError(f"--epochs {epochs}: expected at least 1")
    if not (math.isfinite(lr) and lr > 0):
        raise TradyError(f"--lr {lr}: expected a positive learning rate")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise TradyError(f"--out {out}: cannot create its folder ({e})") from None
    graph, ds = _load(Path(args.model), Path(args.data), args.train)
    result = rank(graph, ds, epochs=epochs, lr=lr, seed=seed)
    try:
        path = write_topk(result, out)
    except OSError as e:
        raise TradyError(f"--out {out}: cannot write ({e})") from None
    print(summary(result))
    print(f"wrote {path} and {path.with_suffix('.png')}")
    return 0


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def auto_topk(model_path: str | Path, cache_dir: str | Path, *, data_path: str | Path | None = None,
              epochs: int = DEFAULTS["epochs"], lr: float = DEFAULTS["lr"], seed: int = DEFAULTS["seed"],
              train: int | None = None, progress: bool = True) -> Path:
    """`compile --topk auto`: the ranking on the shipped CIFAR-10 subset, cached; returns the json path.

    Cache key: the model file's sha256 and the ranking parameters (data file name and size, epochs,
    lr, seed, train, batch); a cached file is reused when it parses and names the same model sha256.
    """
    model_path = Path(model_path)
    if not model_path.is_file():
        raise TradyError(f"{model_path}: model file not found")
    if data_path is None:
        from compiler.cli import default_data

        data_path = default_data()
    data_path = Path(data_path)
    if not data_path.exists():
        raise TradyError(f"{data_path}: data set not found (needed by --topk auto)")
    sha = sha256_file(model_path)
    size = data_path.stat().st_size if data_path.is_file() else 0
    params = {"data": data_path.name, "data_size": size, "epochs": epochs, "lr": lr, "seed": seed,
              "train": train, "batch": DEFAULTS["batch"], "threshold": THRESHOLD}
    key = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:12]
    path = Path(cache_dir) / f"topk-{model_path.stem}-{sha[:16]}-{key}.json"
    if path.is_file():
        try:
            meta = json.loads(path.read_text())
            if meta.get("model_sha256") == sha and isinstance(meta.get("ranking"), list):
                return path
        except (OSError, ValueError):
            pass
    graph, ds = _load(model_path, data_path, train)
    result = rank(graph, ds, epochs=epochs, lr=lr, seed=seed, progress=progress)
    return write_topk(result, path)
