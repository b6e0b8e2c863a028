"""Experiment runner (`trady experiment CONFIG`): a grid of model x budget x strategy x seed training
runs on Ray, and the paper's comparison: a Table-1-style results table, a paired one-sided t-test
matrix between strategies and per-epoch efficiency curves.

Config (JSON, or TOML by the `.toml` suffix): `models` (names in the shared models folder or .pkl
paths), `budgets` (units, SPEC 6), `strategies` (`STRATEGIES`), `seeds`, and optionally `epochs`,
`lr`, `batch`, `warmup_epochs`, `train`/`test` (class-balanced image limits), `data`, `backend`
(`torch` | `sim`), `topk` (`auto`: `trady rank` on the data, cached as for `compile --topk auto`;
a TopK file; or `all`), `rank_lr`/`rank_epochs` (for `auto`), `rgn_batches` (det-rgn), `fake_quant`.

Backend `torch` (default): the float twin of the int8 graph (compiler/torch_model.py, a fresh
head from the seed), batched SGD without momentum, per-step cosine lr after a linear warm-up,
the head always trained, conv biases frozen (SPEC 7.1: bias updates are off by default). A
strategy is a per-epoch selection of (conv, input channel) pairs; only those weight slices are
updated (the gradient of every other slice is zeroed, and convs without a selected channel get no
weight gradient at all). The device strategies take their selection from compiler/sampler.py
(the same pools, costs, budgets and xorshift32 draws as the generated C, seeded by the run's seed;
re-drawn each epoch for trady / dynamic-full). The others:
- `full`: every non-dead channel of every conv (the unconstrained baseline; budget-free);
- `head-only`: no conv channel (budget-free);
- `det-rgn-dynamic` / `det-rgn-static`: at the start of every epoch (static: the first only), the
  full weight gradients of `rgn_batches` mini-batches give each channel's RGN = sum ||dW[:, c]|| /
  (C_W + C_A); channels are taken by decreasing RGN, over all convs, while they fit the budget
  (reference-only: the device cannot afford full gradients).
Weights stay float (no int8 saturation or rounding): this is the float simulation SPEC 11 speaks of.

Backend `sim`: each cell is `trady compile` + `trady sim` (the generated C on the host, batch 1,
one warm-up epoch), through compiler/benchmarks.py's cell runner; only the device strategies.

Per epoch each run records train loss/accuracy, test accuracy, the selection (channels, units,
layers) and its efficiency against full fine-tuning: weight sparsity (share of conv weights not
updated), activation sparsity (share of conv input activations not kept for dW) and the share of
weight-derivative MACs saved.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

from compiler.errors import TradyError

DEVICE_STRATEGIES = ("trady", "static-topk", "dynamic-full", "static-full", "su", "head-only")
STRATEGIES = (*DEVICE_STRATEGIES, "det-rgn-dynamic", "det-rgn-static", "full")
BUDGET_FREE = ("head-only", "full")


@dataclass(frozen=True)
class Config:
    models: tuple[str, ...]
    budgets: tuple[int, ...]
    strategies: tuple[str, ...]
    seeds: tuple[int, ...]
    epochs: int = 2
    lr: float = 0.01
    batch: int = 64
    warmup_epochs: float = 1.0
    train: int | None = None
    test: int | None = None
    data: str | None = None
    backend: str = "torch"
    topk: str = "auto"
    rank_lr: float | None = None
    rank_epochs: int = 2
    rgn_batches: int = 4
    fake_quant: bool = False
    extra: dict = field(default_factory=dict)  # free-form notes copied into the outputs

    def check(self, where: str = "config") -> Config:
        def bad(name: str, msg: str) -> TradyError:
            return TradyError(f"{where}: field {name!r}: {msg}")

        for name in ("models", "budgets", "strategies", "seeds"):
            if not getattr(self, name):
                raise bad(name, "expected a non-empty list")
        for s in self.strategies:
            if s not in STRATEGIES:
                raise bad("strategies", f"{s!r}: expected one of {', '.join(STRATEGIES)}")
        if any(not isinstance(b, int) or b < 1 for b in self.budgets):
            raise bad("budgets", "expected positive integers (units)")
        if self.backend not in ("torch", "sim"):
            raise bad("backend", f"{self.backend!r}: expected 'torch' or 'sim'")
        if self.backend == "sim":
            other = [s for s in self.strategies if s not in DEVICE_STRATEGIES]
            if other:
                raise bad("strategies", f"{', '.join(other)}: not compiled to C (backend 'sim' runs "
                                        f"{', '.join(DEVICE_STRATEGIES)})")
            if self.train is None or self.test is None:
                raise bad("train", "backend 'sim' needs 'train' and 'test' image counts")
        if self.epochs < 1 or self.batch < 1 or self.rgn_batches < 1:
            raise bad("epochs", "epochs, batch and rgn_batches must be >= 1")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise bad("lr", f"{self.lr}: expected a positive learning rate")
        for name in ("train", "test"):
            v = getattr(self, name)
            if v is not None and v < 2:
                raise bad(name, f"{v}: expected at least 2 images")
        return self


def load_config(path: Path) -> Config:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise TradyError(f"{path}: cannot read the config ({e})") from None
    try:
        if path.suffix == ".toml":
            import tomllib

            raw = tomllib.loads(text)
        else:
            raw = json.loads(text)
    except ValueError as e:
        raise TradyError(f"{path}: not valid {'TOML' if path.suffix == '.toml' else 'JSON'} ({e})") from None
    if not isinstance(raw, dict):
        raise TradyError(f"{path}: expected an object of fields")
    known = {f.name for f in fields(Config)}
    for k in raw:
        if k not in known:
            raise TradyError(f"{path}: unknown field {k!r} (known: {', '.join(sorted(known))})")
    for k in ("models", "budgets", "strategies", "seeds"):
        if k not in raw:
            raise TradyError(f"{path}: missing field {k!r}")
        if isinstance(raw[k], (str, int)):
            raw[k] = [raw[k]]
        raw[k] = tuple(raw[k])
    try:
        return Config(**raw).check(str(path))
    except TypeError as e:
        raise TradyError(f"{path}: {e}") from None


def resolve_model(name: str) -> Path:
    from compiler.cli import shared_dir

    p = Path(name)
    if p.suffix == ".pkl" and p.is_file():
        return p.resolve()
    q = shared_dir() / "models" / f"{name}.pkl"
    if q.is_file():
        return q
    raise TradyError(f"models: {name!r}: neither a .pkl file nor a model of {shared_dir() / 'models'}")


# ---------------------------------------------------------------------------------------------- runs

@dataclass(frozen=True)
class RunSpec:
    model: str  # display name (file stem)
    model_path: str
    strategy: str
    budget: int | None  # None: budget-free
    seed: int
    epochs: int
    lr: float
    batch: int
    warmup_epochs: float
    train: int | None
    test: int | None
    data: str
    backend: str
    topk: tuple[str, ...] | None  # TopK layer names (trady / static-topk); None: all layers
    topk_file: str
    rgn_batches: int
    fake_quant: bool
    sim_budget: int  # the budget compiled for a budget-free strategy on backend sim (the smallest)

    @property
    def key(self) -> str:
        b = "free" if self.budget is None else str(self.budget)
        return f"{self.model}_{self.strategy}_b{b}_s{self.seed}_{self.backend}"


def expand(cfg: Config, topk_files: dict[str, str], data_path: Path) -> list[RunSpec]:
    """Every run of the grid; budget-free strategies once per (model, seed)."""
    from compiler import sampler
    from compiler.importers import tiny_training

    out = []
    for name in cfg.models:
        path = resolve_model(name)
        topk_file = topk_files.get(name, "all")
        names = None
        if topk_file != "all":
            names = tuple(sampler.read_topk(Path(topk_file), tiny_training.load(path)))
        for s in cfg.strategies:
            for b in ([None] if s in BUDGET_FREE else cfg.budgets):
                for seed in cfg.seeds:
                    out.append(RunSpec(path.stem, str(path), s, b, seed, cfg.epochs, cfg.lr, cfg.batch,
                                       cfg.warmup_epochs, cfg.train, cfg.test, str(data_path), cfg.backend,
                                       names if s in ("trady", "static-topk") else None,
                                       topk_file if s in ("trady", "static-topk") else "all",
                                       cfg.rgn_batches, cfg.fake_quant, min(cfg.budgets)))
    return out


class Selector:
    """Per-epoch (conv index, input channel) selection of one run's strategy."""

    def __init__(self, graph, strategy: str, budget: int | None, topk: Sequence[str] | None, seed: int):
        from compiler import sampler
        from compiler.costs import layer_costs

        self.graph, self.strategy, self.budget = graph, strategy, budget
        self.costs = layer_costs(graph)
        self.eligible = [sampler._eligible(graph, c) for c in self.costs]
        self.sampler = None
        self.fixed: list[tuple[int, int]] | None = None
        self.note = ""
        if strategy in DEVICE_STRATEGIES and strategy != "head-only":
            pool = sampler.build_pool(graph, strategy, list(topk) if topk is not None else None, int(budget))
            self.pool, self.note = pool, pool.note
            self.sampler = sampler.Sampler(pool, int(budget), seed)

    @property
    def needs_gradients(self) -> bool:
        return self.strategy.startswith("det-rgn")

    def epoch(self, e: int, rgn: list[np.ndarray] | None = None) -> list[tuple[int, int]]:
        if self.strategy == "head-only":
            return []
        if self.strategy == "full":
            return [(i, c) for i, ok in enumerate(self.eligible) for c in ok]
        if self.sampler is not None:
            sel = self.sampler.epoch_begin()
            return [(int(self.pool.entry_layer[k]), int(self.pool.entry_channel[k])) for k in sel]
        if self.fixed is not None and self.strategy == "det-rgn-static":
            return self.fixed
        assert rgn is not None
        self.fixed = greedy_by_score(rgn, self.eligible, [c.c_w + c.c_a for c in self.costs], int(self.budget))
        return self.fixed


def greedy_by_score(norms: Sequence[np.ndarray], eligible: Sequence[Sequence[int]], cost: Sequence[int],
                    budget: int) -> list[tuple[int, int]]:
    """Channels by decreasing RGN = norm / cost (ties: forward order), each taken if it still fits;
    stops when the remaining budget is below the cheapest channel. Returns (conv, channel) sorted."""
    cand = [(-float(norms[i][c]) / cost[i], i, c) for i, ok in enumerate(eligible) for c in ok]
    cand.sort()
    cheapest = min((cost[i] for i, ok in enumerate(eligible) if ok), default=0)
    left, out = budget, []
    for _, i, c in cand:
        if left < cheapest:
            break
        if cost[i] <= left:
            out.append((i, c))
            left -= cost[i]
    return sorted(out)


def efficiency(costs, sel: Sequence[tuple[int, int]]) -> dict:
    """Selection size and its savings against updating every channel of every conv."""
    w_all = sum(c.c_w * c.in_channels for c in costs)
    a_all = sum(c.c_a * c.in_channels for c in costs)
    f_all = sum(c.macs for c in costs)
    w = sum(costs[i].c_w for i, _ in sel)
    a = sum(costs[i].c_a for i, _ in sel)
    f = sum(costs[i].macs // costs[i].in_channels for i, _ in sel)
    return {"channels": len(sel), "units": w + a, "layers": len({i for i, _ in sel}),
            "weight_sparsity": 1 - w / w_all, "activation_sparsity": 1 - a / a_all, "dw_flops_saved": 1 - f / f_all}


def train_torch(spec: RunSpec, graph=None, dataset=None, progress=None, return_model: bool = False) -> dict:
    """One run of the batched PyTorch trainer; returns {"spec", "epochs": [...], "seconds", ...}
    (and the trained TorchModel and each epoch's selection under "model" / "selections" if asked)."""
    import torch
    import torch.nn.functional as F

    from compiler import data as data_mod
    from compiler.importers import tiny_training
    from compiler.rank import cosine_lr
    from compiler.torch_model import TorchModel

    t0 = time.perf_counter()
    if graph is None:
        graph = tiny_training.load(Path(spec.model_path))
    if dataset is None:
        res = graph.tensors[graph.input].shape[0]
        dataset = data_mod.load(spec.data, res, limit_train=spec.train, limit_test=spec.test)
    n_cls = int(max(dataset.train.y.max(initial=0), dataset.test.y.max(initial=0))) + 1
    torch.manual_seed(spec.seed)
    model = TorchModel(graph, n_cls, fake_quant=spec.fake_quant, seed=spec.seed)
    model = model.to(memory_format=torch.channels_last)
    for b in model.biases:
        b.requires_grad_(False)
    sel_obj = Selector(graph, spec.strategy, spec.budget, spec.topk, spec.seed)
    opt = torch.optim.SGD([*model.weights, *model.head.parameters()], lr=spec.lr, momentum=0.0)
    gen = torch.Generator().manual_seed(spec.seed)
    x_all, y_all = torch.from_numpy(dataset.train.x), torch.from_numpy(dataset.train.y)
    n = len(y_all)
    per_epoch = (n + spec.batch - 1) // spec.batch
    total = spec.epochs * per_epoch
    warmup = min(round(spec.warmup_epochs * per_epoch), total)
    costs = sel_obj.costs
    step = 0
    rows, selections = [], []

    def batch_x(idx):
        return model.input_real(x_all[idx]).contiguous(memory_format=torch.channels_last)

    for epoch in range(spec.epochs):
        perm = torch.randperm(n, generator=gen)
        rgn = None
        if sel_obj.needs_gradients and not (spec.strategy == "det-rgn-static" and epoch > 0):
            for w in model.weights:
                w.requires_grad_(True)
            sums = [torch.zeros(c.in_channels, dtype=torch.float64) for c in graph.convs]
            for b in range(min(spec.rgn_batches, per_epoch)):
                idx = perm[b * spec.batch:(b + 1) * spec.batch]
                model.zero_grad(set_to_none=True)
                F.cross_entropy(model(batch_x(idx)), y_all[idx]).backward()
                for acc, norm in zip(sums, model.conv_weight_grad_norms(), strict=True):
                    acc += norm.double()
            model.zero_grad(set_to_none=True)
            rgn = [s.numpy() for s in sums]
        sel = sel_obj.epoch(epoch, rgn)
        selections.append(list(sel))
        if spec.budget is not None:
            used = sum(costs[i].c_w + costs[i].c_a for i, _ in sel)
            assert used <= spec.budget, (spec.key, used)
        masks: dict[int, torch.Tensor] = {}
        for i, c in sel:
            if i not in masks:
                conv = graph.convs[i]
                shape = (conv.in_channels, 1, 1, 1) if conv.depthwise else (1, conv.in_channels, 1, 1)
                masks[i] = torch.zeros(shape)
            masks[i].view(-1)[c] = 1.0
        for i, w in enumerate(model.weights):
            w.requires_grad_(i in masks)
        loss_sum, correct = 0.0, 0
        model.train()
        for b in range(per_epoch):
            idx = perm[b * spec.batch:(b + 1) * spec.batch]
            rate = cosine_lr(spec.lr, step, total, warmup)
            for grp in opt.param_groups:
                grp["lr"] = rate
            logits = model(batch_x(idx))
            loss = F.cross_entropy(logits, y_all[idx])
            if not math.isfinite(loss.item()):
                raise TradyError(f"{spec.key}: the loss diverged at step {step + 1} (lr {spec.lr})")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            for i, m in masks.items():
                g = model.weights[i].grad
                if g is not None:
                    g.mul_(m)
            opt.step()
            step += 1
            loss_sum += loss.item() * len(idx)
            correct += int((logits.argmax(1) == y_all[idx]).sum())
        acc = evaluate(model, dataset.test)
        row = {"epoch": epoch + 1, "train_loss": loss_sum / n, "train_acc": correct / n, "test_acc": acc,
               **efficiency(costs, sel)}
        rows.append(row)
        if progress is not None:
            progress(row)
    out = {"spec": asdict(spec), "key": spec.key, "epochs": rows, "final_test_acc": rows[-1]["test_acc"],
           "note": sel_obj.note, "seconds": round(time.perf_counter() - t0, 2)}
    if return_model:
        out |= {"model": model, "selections": selections}
    return out


def evaluate(model, split, batch: int = 256) -> float:
    import torch

    if len(split.y) == 0:
        return float("nan")
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(split.y), batch):
            x = model.input_real(torch.from_numpy(split.x[i:i + batch])).contiguous(memory_format=torch.channels_last)
            correct += int((model(x).argmax(1) == torch.from_numpy(split.y[i:i + batch])).sum())
    model.train()
    return correct / len(split.y)


def train_sim(spec: RunSpec, work: Path) -> dict:
    """One cell as `trady compile` + `trady sim` (compiler/benchmarks.py's cell runner)."""
    from compiler.benchmarks import Cell, _run_cell

    t0 = time.perf_counter()
    cell = Cell(spec.strategy, spec.budget if spec.budget is not None else spec.sim_budget, spec.lr, spec.seed)
    cell_dir = work / "cells" / spec.key
    row = _run_cell(cell, cell_dir, Path(spec.model_path), Path(spec.data), spec.topk_file, spec.epochs,
                    int(spec.train), int(spec.test), lambda: None)
    lines = [json.loads(x) for x in Path(row["metrics"]).read_text().splitlines() if x.strip()]
    rows = [{"epoch": i + 1, "train_loss": r.get("train_loss"), "train_acc": r.get("train_acc"),
             "test_acc": r.get("test_acc"), "channels": r.get("channels")} for i, r in enumerate(lines)]
    return {"spec": asdict(spec), "key": spec.key, "epochs": rows, "final_test_acc": rows[-1]["test_acc"],
            "note": f"trady sim ({cell_dir})", "seconds": round(time.perf_counter() - t0, 2)}


def run_one(spec: RunSpec, work: str) -> dict:
    """A Ray task's body: one training run, torch on 1 thread."""
    import torch

    torch.set_num_threads(1)
    if spec.backend == "sim":
        return train_sim(spec, Path(work))
    return train_torch(spec)


def execute(specs: Sequence[RunSpec], work: Path, num_cpus: int | None = None, address: str | None = None,
            inline: bool = False) -> Iterator[dict]:
    """Run every spec, one Ray task each (at most `num_cpus` at once); yield results as they finish.

    `inline=True` runs them one after another in this process (tests only: no Ray start-up)."""
    if inline:
        for s in specs:
            yield run_one(s, str(work))
        return
    import ray

    started = not ray.is_initialized()
    if started:
        kw = dict(include_dashboard=False, log_to_driver=False, configure_logging=False)
        if address:
            ray.init(address=address, **kw)
        else:
            ray.init(num_cpus=num_cpus or os.cpu_count() or 1, **kw)
    try:
        task = ray.remote(num_cpus=1, max_retries=0)(run_one)
        pending = [task.remote(s, str(work)) for s in specs]
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            yield ray.get(done[0])
    finally:
        if started:
            ray.shutdown()


def run_grid(cfg: Config, out: Path, num_cpus: int | None = None, address: str | None = None,
             inline: bool = False, progress: bool = True) -> list[dict]:
    """Run the grid (finished runs under out/runs are reused), write the tables and plots."""
    from tqdm import tqdm

    from compiler import rank

    out = Path(out)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    data_path = Path(cfg.data) if cfg.data else _default_data()
    if not data_path.exists():
        raise TradyError(f"data: {data_path}: not found")
    topk_files: dict[str, str] = {}
    needs_topk = any(s in ("trady", "static-topk") for s in cfg.strategies)
    import torch

    torch.set_num_threads(1)  # the ranking runs here; 2 threads on a busy 2-core machine are much slower
    for name in cfg.models:
        if not needs_topk or cfg.topk == "all":
            topk_files[name] = "all"
        elif cfg.topk == "auto":
            lr = cfg.rank_lr if cfg.rank_lr is not None else rank.DEFAULTS["lr"]
            topk_files[name] = str(rank.auto_topk(resolve_model(name), out / "topk", data_path=data_path,
                                                  epochs=cfg.rank_epochs, lr=lr, train=cfg.train,
                                                  progress=progress))
        else:
            if not Path(cfg.topk).is_file():
                raise TradyError(f"topk: {cfg.topk}: not a file (expected 'auto', 'all' or a TopK file)")
            topk_files[name] = str(Path(cfg.topk).resolve())
    specs = expand(cfg, topk_files, data_path)
    results, todo = [], []
    for s in specs:
        f = out / "runs" / f"{s.key}.json"
        try:
            old = json.loads(f.read_text())
            if old.get("spec") == json.loads(json.dumps(asdict(s))):
                results.append(old)
                continue
        except (OSError, ValueError):
            pass
        todo.append(s)
    todo.sort(key=lambda s: s.seed)  # seed by seed: a grid cut short still has every strategy paired
    if progress:
        print(f"experiment: {len(specs)} runs, {len(results)} already done, {len(todo)} to run "
              f"({'in process' if inline else 'on Ray'}, backend {cfg.backend})", file=sys.stderr)
    with tqdm(total=len(todo), desc="runs", unit="run", file=sys.stderr, disable=not progress) as bar:
        for r in execute(todo, out, num_cpus, address, inline):
            _write_json(r, out / "runs" / f"{r['key']}.json")
            results.append(r)
            bar.update(1)
            bar.write(f"{r['key']}: test {100 * r['final_test_acc']:.1f}% ({r['seconds']:.0f} s)")
    write_reports(results, cfg, out)
    return results


def _default_data() -> Path:
    from compiler.cli import default_data

    return default_data()


# ---------------------------------------------------------------------------------------------- reports

def _group(results: Sequence[dict]) -> dict[tuple[str, str, int | None], dict[int, float]]:
    """(model, strategy, budget) -> seed -> final test accuracy."""
    g: dict = {}
    for r in results:
        s = r["spec"]
        g.setdefault((s["model"], s["strategy"], s["budget"]), {})[s["seed"]] = r["final_test_acc"]
    return g


def _cell(accs: dict[int, float] | None) -> str:
    if not accs:
        return "–"
    v = [100 * a for a in accs.values()]
    sd = statistics.stdev(v) if len(v) > 1 else 0.0
    return f"{statistics.fmean(v):.1f} ± {sd:.1f} (n={len(v)})"


def table_markdown(results: Sequence[dict], cfg: Config) -> str:
    """Table 1 shape: one row per strategy, one column per (model, budget); mean ± std over seeds."""
    g = _group(results)
    models = sorted({k[0] for k in g})
    budgets = sorted(cfg.budgets)
    cols = [(m, b) for m in models for b in budgets]
    head = ("| strategy | " + " | ".join(f"{m} {b:,}" for m, b in cols) + " |\n"
            + "|---|" + "---|" * len(cols) + "\n")
    lines = []
    for s in [x for x in STRATEGIES if x in cfg.strategies]:
        cells = [_cell(g.get((m, s, None if s in BUDGET_FREE else b))) for m, b in cols]
        lines.append(f"| {s}{' (budget-free)' if s in BUDGET_FREE else ''} | " + " | ".join(cells) + " |")
    return head + "\n".join(lines) + "\n"


def ttest_matrix(accs: dict[str, dict[int, float]]) -> tuple[list[str], np.ndarray]:
    """p[i, j] = one-sided paired t-test (on seeds present in both) of H1: strategy i > strategy j.

    NaN on the diagonal and where fewer than 2 common seeds exist or the differences are all equal to 0.
    """
    from scipy.stats import ttest_rel

    names = list(accs)
    p = np.full((len(names), len(names)), np.nan)
    for i, a in enumerate(names):
        for j, b in enumerate(names):
            if i == j:
                continue
            common = sorted(set(accs[a]) & set(accs[b]))
            if len(common) < 2:
                continue
            x = np.array([accs[a][s] for s in common])
            y = np.array([accs[b][s] for s in common])
            if np.all(x == y):
                continue
            d = x - y
            if np.all(d == d[0]):  # constant non-zero difference: t is infinite
                p[i, j] = 0.0 if d[0] > 0 else 1.0
                continue
            p[i, j] = float(ttest_rel(x, y, alternative="greater").pvalue)
    return names, p


def write_reports(results: Sequence[dict], cfg: Config, out: Path) -> None:
    out = Path(out)
    results = sorted(results, key=lambda r: (r["spec"]["model"], r["spec"]["strategy"],
                                             r["spec"]["budget"] or 0, r["spec"]["seed"]))
    with open(out / "runs.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["model", "strategy", "budget", "seed", "backend", "epochs", "final_test_acc", "final_train_acc",
                    "final_train_loss", "channels", "units", "seconds", "note"])
        for r in results:
            s, last = r["spec"], r["epochs"][-1]
            w.writerow([s["model"], s["strategy"], s["budget"] if s["budget"] is not None else "", s["seed"],
                        s["backend"], s["epochs"], f"{last['test_acc']:.4f}", _f(last.get("train_acc")),
                        _f(last.get("train_loss")), last.get("channels", ""), last.get("units", ""), r["seconds"],
                        r.get("note", "")])
    with open(out / "epochs.csv", "w", newline="") as f:
        keys = ["epoch", "train_loss", "train_acc", "test_acc", "channels", "units", "layers", "weight_sparsity",
                "activation_sparsity", "dw_flops_saved"]
        w = csv.writer(f)
        w.writerow(["model", "strategy", "budget", "seed", *keys])
        for r in results:
            s = r["spec"]
            for e in r["epochs"]:
                w.writerow([s["model"], s["strategy"], s["budget"] or "", s["seed"], *[_f(e.get(k)) for k in keys]])
    spec0 = results[0]["spec"] if results else {}
    header = (f"Final test accuracy (%), mean ± std over seeds; backend {cfg.backend}, {cfg.epochs} epochs, lr "
              f"{cfg.lr:g}, batch {cfg.batch if cfg.backend == 'torch' else 1}, warm-up {cfg.warmup_epochs:g} epoch(s), "
              f"train {cfg.train or 'all'} / test {cfg.test or 'all'} images of {Path(spec0.get('data', '')).name}.\n\n")
    md = header + table_markdown(results, cfg)
    g = _group(results)
    blocks = []
    for m in sorted({k[0] for k in g}):
        for b in sorted(cfg.budgets):
            accs = {s: g[(m, s, None if s in BUDGET_FREE else b)] for s in STRATEGIES
                    if s in cfg.strategies and (m, s, None if s in BUDGET_FREE else b) in g}
            names, p = ttest_matrix(accs)
            blocks.append((f"{m} @ {b:,}", names, p))
            md += (f"\nPaired one-sided t-test p-values, {m} @ {b:,} units (row > column, paired on seed):\n\n"
                   "| row > col | " + " | ".join(names) + " |\n|---|" + "---|" * len(names) + "\n")
            for i, a in enumerate(names):
                md += f"| {a} | " + " | ".join("–" if np.isnan(v) else f"{v:.3g}" for v in p[i]) + " |\n"
    (out / "table.md").write_text(md)
    _plot_ttests(blocks, out / "ttest.png")
    _plot_efficiency(results, cfg, out / "efficiency.png")
    print(md, end="")
    print(f"wrote {out / 'runs.csv'}, {out / 'epochs.csv'}, {out / 'table.md'}, {out / 'ttest.png'}, "
          f"{out / 'efficiency.png'}", file=sys.stderr)


def _f(v) -> str:
    if v is None:
        return ""
    return f"{v:.6g}" if isinstance(v, float) else str(v)


def _plot_ttests(blocks, png: Path) -> None:
    from compiler.analysis import _plt, _save

    plt = _plt()
    n = max(len(blocks), 1)
    fig, axes = plt.subplots(1, n, figsize=(5.2 * n, 4.8), squeeze=False)
    for ax, (title, names, p) in zip(axes[0], blocks):
        cmap = plt.get_cmap("RdYlGn_r").with_extremes(bad="lightgrey")  # diagonal; pairs without 2 common seeds
        im = ax.imshow(np.ma.masked_invalid(p), vmin=0, vmax=1, cmap=cmap)
        ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
        ax.set_yticks(range(len(names)), names)
        for i in range(len(names)):
            for j in range(len(names)):
                ax.text(j, i, "" if np.isnan(p[i, j]) else f"{p[i, j]:.2f}", ha="center", va="center", fontsize=8)
        ax.set_title(f"{title}: p(row > column)")
        fig.colorbar(im, ax=ax, fraction=0.046)
    _save(fig, png)


def _plot_efficiency(results: Sequence[dict], cfg: Config, png: Path) -> None:
    from compiler.analysis import _plt, _save

    plt = _plt()
    metrics = [("weight_sparsity", "weight sparsity"), ("activation_sparsity", "activation sparsity"),
               ("dw_flops_saved", "weight-derivative FLOPs saved"), ("test_acc", "test accuracy")]
    budgets = sorted(cfg.budgets)
    fig, axes = plt.subplots(len(metrics), len(budgets), figsize=(5.5 * len(budgets), 3.0 * len(metrics)),
                             squeeze=False)
    for col, b in enumerate(budgets):
        curves: dict[tuple[str, str], list[list[dict]]] = {}
        for r in results:
            s = r["spec"]
            if s["budget"] in (b, None):
                curves.setdefault((s["model"], s["strategy"]), []).append(r["epochs"])
        legend = False
        for row, (key, label) in enumerate(metrics):
            ax = axes[row][col]
            for (m, s), runs in sorted(curves.items()):
                ep = min(len(x) for x in runs)
                vals = np.array([[np.nan if x[e].get(key) is None else x[e][key] for e in range(ep)] for x in runs],
                                dtype=np.float64)
                if np.all(np.isnan(vals)):
                    continue
                ax.plot(range(1, ep + 1), np.nanmean(vals, axis=0), marker="o", ms=3,
                        label=s if len({k[0] for k in curves}) == 1 else f"{m} {s}")
            ax.set(xlabel="epoch", ylabel=label)
            ax.xaxis.get_major_locator().set_params(integer=True)
            ax.grid(alpha=0.3)
            if row == 0:
                ax.set_title(f"{b:,} units (mean over seeds)")
            if ax.get_legend_handles_labels()[0] and not legend:  # the first panel with curves
                ax.legend(fontsize=7)
                legend = True
    _save(fig, png)


def _write_json(obj: dict, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj) + "\n")
    os.replace(tmp, path)


def cmd_experiment(a: argparse.Namespace) -> int:
    cfg = load_config(Path(a.config))
    if a.backend is not None:
        cfg = Config(**{**asdict(cfg), "backend": a.backend}).check(str(a.config))
    out = Path(a.out) if a.out is not None else Path("out") / "experiments" / Path(a.config).stem
    if out.exists() and not out.is_dir():
        raise TradyError(f"--out {out}: not a folder")
    run_grid(cfg, out, num_cpus=a.num_cpus, address=a.address)
    return 0


def register(sub) -> None:
    from compiler.cli import positive_int

    p = sub.add_parser("experiment", help="train a model x budget x strategy x seed grid on Ray; tables + t-tests")
    p.add_argument("config", type=Path, help="experiment config (.json or .toml)")
    p.add_argument("--out", type=Path, default=None, help="output folder (default out/experiments/<config name>)")
    p.add_argument("--backend", choices=("torch", "sim"), default=None, help="override the config's backend")
    p.add_argument("--num-cpus", type=positive_int, default=None, help="local Ray: CPUs = concurrent runs "
                                                                          "(default: all cores)")
    p.add_argument("--address", default=None, help="join a running Ray cluster (e.g. 'auto' or HOST:PORT)")
    p.set_defaults(func=cmd_experiment)
