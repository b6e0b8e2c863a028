"""Analyses behind the TraDy paper's claims (SPEC 6): heavy-tailed gradients, task-independent layer
rankings, task-dependent channel importance. `trady analyze tail|rankings`.

- `tail_index`: the estimator of Mohammadi, Mohammadpour and Ogata (2015) for a symmetric
  alpha-stable sample, as used by Simsekli et al. (2019) and the TraDy paper on stochastic gradient
  noise. With K = K1 * K2 samples X, Y_i = sum of the i-th block of K1 of them (i = 1..K2):
  1/alpha_hat = (1 / log K1) * (mean_i log|Y_i| - mean_j log|X_j|). (A sum of K1 i.i.d. S-alpha-S
  variables is K1^(1/alpha) times one of them, hence log K1, the block length.) alpha = 2: Gaussian;
  alpha < 2: heavy-tailed. K1 = K2 = floor(sqrt(K)) by default, zeros dropped first.
- `gradient_tail_indices`: full float fine-tuning (the ranking's trainer: compiler/torch_model.py,
  SGD, per-step cosine lr); at the end of every epoch, at fixed weights, `probe` mini-batch
  gradients of every conv weight; the stochastic gradient noise is each mini-batch gradient minus
  their mean; alpha per layer and over all conv weights.
- `ranking_study`: `trady rank` (compiler/rank.py) for every (task, seed); the Spearman
  correlation matrix of the layer RGN vectors (layer level, claim b) and, per layer, the Spearman
  correlation of the per-channel RGN between two runs of the same task (other seed) and of
  different tasks (other seed too, when there is one; claim c). Test: per layer, d = mean within-task r - mean cross-task r; one-sided
  Wilcoxon signed-rank over layers (H1: d > 0, channel importance depends on the task beyond seed
  noise) and an exact/sampled sign-flip permutation test of mean d.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from compiler import data
from compiler.errors import TradyError
from compiler.ir import Graph

# Tasks built from the CIFAR-10 subset: label lists (None: all 10 classes).
TASKS: dict[str, tuple[int, ...] | None] = {
    "cifar10": None,
    "animals": (2, 3, 4, 5, 6, 7),  # bird cat deer dog frog horse (SPEC 11)
    "vehicles": (0, 1, 8, 9),  # airplane automobile ship truck
    "first5": (0, 1, 2, 3, 4),
}


def tail_index(x: np.ndarray | Sequence[float], k1: int | None = None) -> float:
    """Mohammadi et al. (2015) tail-index estimate alpha_hat of a symmetric alpha-stable sample."""
    v = np.asarray(x, np.float64).ravel()
    v = v[np.isfinite(v) & (v != 0)]
    k = len(v)
    if k1 is None:
        k1 = math.isqrt(k)
    if k1 < 2 or k // k1 < 1:
        raise ValueError(f"tail_index: {k} non-zero samples; need at least 4")
    k2 = k // k1
    blocks = v[:k1 * k2].reshape(k2, k1)
    y = blocks.sum(axis=1)
    y = y[y != 0]
    inv = (np.log(np.abs(y)).mean() - np.log(np.abs(blocks)).mean()) / math.log(k1)
    return float(1.0 / inv) if inv > 0 else float("inf")


# ---------------------------------------------------------------------------------------------- tail index

@dataclass(frozen=True)
class TailResult:
    model: str
    data: str
    epochs: int
    lr: float
    seed: int
    probe: int
    layers: tuple[str, ...]
    alpha: tuple[tuple[float, ...], ...]  # [epoch][layer]
    alpha_all: tuple[float, ...]  # [epoch], all conv weights together
    history: tuple[dict, ...]

    def as_json(self) -> dict:
        return {"model": self.model, "data": self.data, "epochs": self.epochs, "lr": self.lr, "seed": self.seed,
                "probe_batches": self.probe, "estimator": "Mohammadi et al. 2015, K1 = K2 = floor(sqrt(K))",
                "layers": list(self.layers), "alpha": [list(a) for a in self.alpha],
                "alpha_all": list(self.alpha_all), "history": list(self.history)}


def gradient_tail_indices(graph: Graph, dataset: data.Dataset, epochs: int = 2, lr: float = 0.001, seed: int = 0,
                          batch: int = 64, probe: int = 8, classes: Sequence[int] | None = None,
                          progress: bool = True) -> TailResult:
    """Full float fine-tuning; alpha of the stochastic gradient noise per layer after every epoch."""
    import torch
    import torch.nn.functional as F

    from compiler.rank import cosine_lr, select_classes
    from compiler.torch_model import TorchModel

    if probe < 2:
        raise TradyError(f"--probe {probe}: expected at least 2 mini-batches")
    train, labels = select_classes(dataset.train, classes)
    n = len(train.y)
    if n < batch * probe:
        raise TradyError(f"{dataset.name}: {n} training images; --probe {probe} x batch {batch} needs more")
    model = TorchModel(graph, len(labels), seed=seed).to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.0)
    gen = torch.Generator().manual_seed(seed)
    x_all, y_all = torch.from_numpy(train.x), torch.from_numpy(train.y)
    per_epoch = (n + batch - 1) // batch
    total = epochs * per_epoch
    alphas, alpha_all, history = [], [], []
    step = 0

    def grads(idx: torch.Tensor) -> list[torch.Tensor]:
        opt.zero_grad(set_to_none=False)
        xb = model.input_real(x_all[idx]).contiguous(memory_format=torch.channels_last)
        loss = F.cross_entropy(model(xb), y_all[idx])
        loss.backward()
        return [w.grad.detach().flatten().clone() for w in model.weights]

    for epoch in range(epochs):
        perm = torch.randperm(n, generator=gen)
        loss_sum = 0.0
        for b in range(per_epoch):
            idx = perm[b * batch:(b + 1) * batch]
            for grp in opt.param_groups:
                grp["lr"] = cosine_lr(lr, step, total)
            xb = model.input_real(x_all[idx]).contiguous(memory_format=torch.channels_last)
            loss = F.cross_entropy(model(xb), y_all[idx])
            opt.zero_grad(set_to_none=False)
            loss.backward()
            opt.step()
            loss_sum += loss.item() * len(idx)
            step += 1
        # probe: `probe` disjoint mini-batches at the epoch's final weights
        pidx = torch.randperm(n, generator=gen)[:probe * batch].view(probe, batch)
        g = [grads(i) for i in pidx]
        per_layer = []
        noise_all = []
        for li in range(len(model.weights)):
            stack = torch.stack([gi[li] for gi in g]).double()
            noise = (stack - stack.mean(0, keepdim=True)).numpy()
            noise_all.append(noise.ravel())
            try:
                per_layer.append(tail_index(noise))
            except ValueError:
                per_layer.append(float("nan"))
        alphas.append(tuple(per_layer))
        alpha_all.append(tail_index(np.concatenate(noise_all)))
        history.append({"epoch": epoch + 1, "train_loss": loss_sum / n, "alpha_all": alpha_all[-1]})
        if progress:
            print(f"tail epoch {epoch + 1}: train loss {loss_sum / n:.4f}, alpha (all convs) {alpha_all[-1]:.3f}, "
                  f"median over layers {np.nanmedian(per_layer):.3f}", file=sys.stderr)
    return TailResult(graph.name, dataset.name, epochs, float(lr), seed, probe, tuple(c.name for c in graph.convs),
                      tuple(alphas), tuple(alpha_all), tuple(history))


def plot_tail(result: TailResult, png: Path) -> None:
    plt = _plt()
    a = np.array(result.alpha)
    fig, ax = plt.subplots(1, 2, figsize=(13, 4.2))
    x = np.arange(a.shape[1])
    for e in range(a.shape[0]):
        ax[0].plot(x, a[e], marker=".", label=f"epoch {e + 1}")
    ax[0].axhline(2.0, color="grey", ls="--", lw=1)
    ax[0].set(xlabel="conv index (forward order)", ylabel="tail index alpha",
              title=f"{result.model}: alpha of the stochastic gradient noise per layer")
    ax[0].legend()
    ax[0].grid(alpha=0.3)
    ax[1].plot(range(1, len(result.alpha_all) + 1), result.alpha_all, marker="o")
    ax[1].set_xticks(range(1, len(result.alpha_all) + 1))
    ax[1].axhline(2.0, color="grey", ls="--", lw=1)
    ax[1].set(xlabel="epoch", ylabel="alpha (all conv weights)", title=f"{result.data}, lr {result.lr:g}, "
              f"{result.probe} probe batches")
    ax[1].grid(alpha=0.3)
    _save(fig, png)


# ---------------------------------------------------------------------------------------------- rankings

@dataclass(frozen=True)
class Run:
    task: str
    seed: int
    layer_rgn: np.ndarray  # [layers]
    channel_rgn: tuple[np.ndarray, ...]  # per layer, per eligible input channel
    k: int


def run_from_rank(task: str, seed: int, result, graph: Graph) -> Run:
    """A `rank.RankResult` -> layer RGN and per-channel RGN (eligible channels only)."""
    from compiler.costs import layer_costs
    from compiler.sampler import _eligible

    return Run(task, seed, np.array([la.rgn for la in result.layers]),
               tuple(np.asarray(norms)[_eligible(graph, cost)] / (cost.c_w + cost.c_a)
                     for cost, norms in zip(layer_costs(graph), result.channel_norms, strict=True)),
               result.k)


def spearman_matrix(vectors: Sequence[np.ndarray]) -> np.ndarray:
    from scipy.stats import spearmanr

    n = len(vectors)
    m = np.eye(n)
    for i, j in itertools.combinations(range(n), 2):
        r = float(spearmanr(vectors[i], vectors[j]).statistic)
        m[i, j] = m[j, i] = r
    return m


def sign_flip_p(d: np.ndarray, samples: int = 20000, seed: int = 0) -> float:
    """One-sided p-value of mean(d) > 0 under random sign flips (exact when 2^n <= samples)."""
    d = np.asarray(d, np.float64)
    n = len(d)
    obs = d.mean()
    if n == 0:
        return float("nan")
    if 2 ** n <= samples:
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=n)))
        return float(((signs * d).mean(axis=1) >= obs - 1e-12).mean())
    signs = np.random.default_rng(seed).choice((1.0, -1.0), size=(samples, n))
    hits = int(((signs * d).mean(axis=1) >= obs - 1e-12).sum())
    return (hits + 1) / (samples + 1)  # sampled: the observed sign pattern counts as one


def channel_test(runs: Sequence[Run]) -> dict:
    """Per layer: mean Spearman of per-channel RGN within a task (across seeds) and across tasks."""
    from scipy.stats import spearmanr, wilcoxon

    pairs_within = [(a, b) for a, b in itertools.combinations(range(len(runs)), 2) if runs[a].task == runs[b].task]
    pairs_across = [(a, b) for a, b in itertools.combinations(range(len(runs)), 2) if runs[a].task != runs[b].task]
    # compare like with like: both kinds of pair differ in seed (head init, shuffle), when possible
    pairs_across = [(a, b) for a, b in pairs_across if runs[a].seed != runs[b].seed] or pairs_across
    if not pairs_within or not pairs_across:
        raise TradyError("channel test: needs at least two tasks and two seeds of one task")
    within, across, layers = [], [], []
    for li in range(len(runs[0].channel_rgn)):
        if len(runs[0].channel_rgn[li]) < 2:
            continue

        def r(a: int, b: int, li: int = li) -> float:
            v = spearmanr(runs[a].channel_rgn[li], runs[b].channel_rgn[li]).statistic
            return float(v) if np.isfinite(v) else 0.0

        within.append(np.mean([r(a, b) for a, b in pairs_within]))
        across.append(np.mean([r(a, b) for a, b in pairs_across]))
        layers.append(li)
    if not layers:
        raise TradyError("channel test: no layer has two channels that can be compared")
    w, a = np.array(within), np.array(across)
    d = w - a
    wil = wilcoxon(w, a, alternative="greater", zero_method="zsplit") if np.any(d != 0) else None
    return {"layers": layers, "within": w.tolist(), "across": a.tolist(), "mean_within": float(w.mean()),
            "mean_across": float(a.mean()), "layers_within_greater": int((d > 0).sum()), "n_layers": len(d),
            "wilcoxon_p": float(wil.pvalue) if wil is not None else 1.0, "sign_flip_p": sign_flip_p(d),
            "pairs_within": len(pairs_within), "pairs_across": len(pairs_across)}


def ranking_study(graph: Graph, dataset: data.Dataset, tasks: Sequence[str], seeds: Sequence[int], epochs: int,
                  lr: float, progress: bool = True) -> tuple[list[Run], dict]:
    from compiler import rank

    runs = []
    for task in tasks:
        if task not in TASKS:
            raise TradyError(f"--tasks {task!r}: expected one of {', '.join(TASKS)}")
        for seed in seeds:
            t0 = time.perf_counter()
            res = rank.rank(graph, dataset, epochs=epochs, lr=lr, seed=seed, classes=TASKS[task], progress=False)
            runs.append(run_from_rank(task, seed, res, graph))
            if progress:
                print(f"rank {task} seed {seed}: K = {res.k}, last epoch train acc "
                      f"{100 * res.history[-1]['train_acc']:.1f}%{' (diverged)' if res.diverged else ''} "
                      f"({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    labels = [f"{r.task}/s{r.seed}" for r in runs]
    m = spearman_matrix([r.layer_rgn for r in runs])
    within = [m[i, j] for i, j in itertools.combinations(range(len(runs)), 2) if runs[i].task == runs[j].task]
    across = [m[i, j] for i, j in itertools.combinations(range(len(runs)), 2) if runs[i].task != runs[j].task]
    summary = {"model": graph.name, "data": dataset.name, "epochs": epochs, "lr": lr, "runs": labels,
               "k": [r.k for r in runs], "layer_spearman": m.tolist(),
               "layer_spearman_min_within_task": float(min(within)) if within else None,
               "layer_spearman_min_across_tasks": float(min(across)) if across else None,
               "channel_test": None}
    try:
        summary["channel_test"] = channel_test(runs)
    except TradyError as e:
        summary["channel_test_skipped"] = str(e)
    return runs, summary


def plot_rankings(summary: dict, png: Path) -> None:
    plt = _plt()
    m = np.array(summary["layer_spearman"])
    labels = summary["runs"]
    ct = summary["channel_test"]
    fig, ax = plt.subplots(1, 2 if ct else 1, figsize=(14 if ct else 7, 5.5), squeeze=False)
    ax = ax[0]
    im = ax[0].imshow(m, vmin=min(0.0, float(m.min())), vmax=1, cmap="viridis")
    ax[0].set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax[0].set_yticks(range(len(labels)), labels)
    for i in range(len(labels)):
        for j in range(len(labels)):
            ax[0].text(j, i, f"{m[i, j]:.2f}", ha="center", va="center", fontsize=8,
                       color="black" if m[i, j] > 0.6 else "white")
    fig.colorbar(im, ax=ax[0], fraction=0.046)
    ax[0].set_title(f"{summary['model']}: Spearman of layer RGN rankings (K = {summary['k']})")
    if not ct:
        _save(fig, png)
        return
    x = np.array(ct["layers"])
    ax[1].plot(x, ct["within"], marker="o", label=f"same task, other seed (mean {ct['mean_within']:.2f})")
    ax[1].plot(x, ct["across"], marker="s", label=f"other task (mean {ct['mean_across']:.2f})")
    ax[1].set(xlabel="conv index", ylabel="Spearman of per-channel RGN",
              title=f"channel importance: Wilcoxon p = {ct['wilcoxon_p']:.2g}, sign-flip p = {ct['sign_flip_p']:.2g}")
    ax[1].legend()
    ax[1].grid(alpha=0.3)
    _save(fig, png)


# ---------------------------------------------------------------------------------------------- plotting, files

def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, png: Path) -> None:
    png = Path(png)
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    tmp = png.with_name(f".{png.name}.{os.getpid()}.tmp.png")
    fig.savefig(tmp, dpi=110)
    _plt().close(fig)
    os.replace(tmp, png)


def _write_json(obj: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=1) + "\n")
    os.replace(tmp, path)


def cmd_analyze(a: argparse.Namespace) -> int:
    """`trady analyze tail|rankings MODEL --data D --out DIR [--epochs E] [--lr LR] [--train N] ...`."""
    import torch

    from compiler.rank import _load

    out = Path(a.out)
    if out.exists() and not out.is_dir():
        raise TradyError(f"--out {out}: not a folder")
    torch.set_num_threads(1)  # 2 threads on a busy 2-core machine are several times slower
    graph, ds = _load(Path(a.model), Path(a.data), a.train)
    if a.what == "tail":
        res = gradient_tail_indices(graph, ds, epochs=a.epochs, lr=a.lr, seed=a.seeds[0], probe=a.probe)
        _write_json(res.as_json(), out / "tail.json")
        plot_tail(res, out / "tail.png")
        for e, al in enumerate(res.alpha_all):
            lay = np.array(res.alpha[e])
            print(f"epoch {e + 1}: alpha (all conv weights) {al:.3f}; per layer median {np.nanmedian(lay):.3f}, "
                  f"min {np.nanmin(lay):.3f}, max {np.nanmax(lay):.3f}, layers with alpha < 2: "
                  f"{int((lay < 2).sum())} of {len(lay)}")
        print(f"wrote {out / 'tail.json'} and {out / 'tail.png'}")
    else:
        _, summary = ranking_study(graph, ds, a.tasks, a.seeds, a.epochs, a.lr)
        _write_json(summary, out / "rankings.json")
        plot_rankings(summary, out / "rankings.png")
        ct = summary["channel_test"] or {}
        print(f"layer rankings ({', '.join(summary['runs'])}; K = {summary['k']}): Spearman min within a task "
              f"{summary['layer_spearman_min_within_task']}, min across tasks "
              f"{summary['layer_spearman_min_across_tasks']:.3f}")
        if not ct:
            print(f"channel test skipped: {summary.get('channel_test_skipped')}")
        else:
            print(f"channel RGN Spearman per layer: within a task (other seed) mean {ct['mean_within']:.3f}, "
                  f"across tasks mean {ct['mean_across']:.3f}; within > across in {ct['layers_within_greater']} "
                  f"of {ct['n_layers']} layers; Wilcoxon one-sided p = {ct['wilcoxon_p']:.3g}, sign-flip p = "
                  f"{ct['sign_flip_p']:.3g}")
        print(f"wrote {out / 'rankings.json'} and {out / 'rankings.png'}")
    return 0


def register(sub) -> None:
    from compiler.cli import positive_int

    p = sub.add_parser("analyze", help="gradient tail index; layer/channel ranking correlations across tasks/seeds")
    p.add_argument("what", choices=("tail", "rankings"))
    p.add_argument("model", type=Path, help="tiny-training .pkl model")
    p.add_argument("--data", type=Path, default=None, help="data set; default: shared CIFAR-10 subset")
    p.add_argument("--out", type=Path, required=True, help="output folder (JSON + PNG)")
    p.add_argument("--epochs", type=positive_int, default=2)
    p.add_argument("--lr", type=float, default=0.001)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--tasks", nargs="+", default=["cifar10", "animals"], help=f"of {', '.join(TASKS)}")
    p.add_argument("--train", type=positive_int, default=None, help="use N class-balanced training images")
    p.add_argument("--probe", type=positive_int, default=8, help="tail: mini-batches per gradient-noise probe")
    p.set_defaults(func=cmd_analyze)
