"""Stage 8, command line (benchmarks): training throughput, accuracy grid and SRAM table.

Figures are printed (and, for the grid, written as CSV + Markdown + PNG); nothing here is a test
and nothing asserts a time. The CLI registers the sub-commands and calls:

- `train_throughput`: training steps/s of the generated C (host build, `host_sim bench-train`)
  and of the Python reference (`training.Trainer.train_step`) on the same images with the same
  selection (sampler seed 1, lr 0.01, one warm-up step: what `bench-train` does), and their ratio;
- `accuracy_grid`: `trady compile` + `trady sim` per (strategy, budget, lr, seed) cell as
  subprocesses, at most `jobs` at once; final test accuracy per cell -> `results.csv`,
  `results.md` (strategy x budget, mean +- std over seeds and the per-seed values), `results.png`;
- `sram_table`: the plan's `sram_bytes` per budget as a Markdown table, against the 320 KB of the
  STM32F746G-DISCO and TinyEngine's ~173 KB for its sparse update.
"""

from __future__ import annotations

import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from compiler.errors import TradyError

BOARD_SRAM = 320 * 1024  # STM32F746G-DISCO (SPEC 1)
TINYENGINE_SRAM = 173 * 1024  # TinyEngine's sparse-update peak memory for MCUNet (tiny-training), ~173 KB
BUDGET_FREE = ("head-only",)  # strategies whose training does not depend on the budget
BENCH_SEED, BENCH_LR = 1, 0.01  # what `host_sim bench-train` uses (host_tools/host_main.c)


def _default_data(data: Path | None) -> Path:
    from compiler.cli import default_data

    return Path(data) if data is not None else default_data()


def _topk_option(topk: str | Path) -> str:
    return "all" if str(topk) == "all" else str(Path(topk).resolve())


# ---------------------------------------------------------------- training throughput

@dataclass(frozen=True)
class Throughput:
    steps: int
    channels: int  # selected input channels
    units: int  # their C_W + C_A
    c_step_s: float  # seconds per training step, host C
    ref_step_s: float  # seconds per training step, Python reference
    torch_threads: int

    @property
    def ratio(self) -> float:
        """How many times faster the C build is than the reference."""
        return self.ref_step_s / self.c_step_s if self.c_step_s > 0 else float("inf")


def train_throughput(model: Path, budget: int, strategy: str = "trady", topk: str | Path = "all", steps: int = 32,
                     data: Path | None = None, repeats: int = 3) -> Throughput:
    """Training steps/s of the host C build and of the Python reference, same images and selection.

    Each side runs the same `steps` steps from the same initial state `repeats` times; the best pass counts.
    """
    import torch
    from tqdm import tqdm

    from compiler import data as datasets
    from compiler import host, pipeline, training

    data = _default_data(data)
    project = pipeline.build(Path(model), pipeline.Options(budget=budget, strategy=strategy,
                                                           topk=_topk_option(topk)))
    g, spec = project.graph, project.spec
    ds = datasets.load(data, g.tensors[g.input].shape[0], limit_train=steps, limit_test=0)
    images, labels = ds.train.x[:steps], ds.train.y[:steps]
    if len(labels) < steps:
        raise TradyError(f"{data}: {len(labels)} training images, --steps {steps} needs as many")
    n = len(labels)

    def trainer() -> training.Trainer:
        t = training.Trainer.for_spec(g, spec, BENCH_SEED, training.Schedule(BENCH_LR, n, 1))
        t.epoch_begin()
        return t

    with tempfile.TemporaryDirectory(prefix="trady-bench-train-") as tmp:
        folder = pipeline.write(project, Path(tmp) / "project")
        exe = host.build(folder)
        src, lab = Path(tmp) / "images.bin", Path(tmp) / "labels.bin"
        np.ascontiguousarray(images, np.int8).tofile(src)
        np.ascontiguousarray(labels, np.int32).tofile(lab)
        c_s = float("inf")
        for _ in range(repeats):
            r = subprocess.run([str(exe), "bench-train", str(src), str(lab), str(n)], check=False,
                               capture_output=True, text=True)
            if r.returncode != 0:
                raise TradyError(f"{exe.name} bench-train failed (exit {r.returncode}): {r.stderr.strip()}")
            c_s = min(c_s, float(r.stdout.split()[-1]) * 1e-6)

    warm = trainer()  # first-call costs of torch/numpy stay out of the timing
    warm.train_step(images[0], int(labels[0]))
    ref_s = float("inf")
    with tqdm(total=repeats * n, desc="reference train_step", unit="step", file=sys.stderr, leave=False) as bar:
        for _ in range(repeats):
            t = trainer()
            t0 = time.perf_counter()
            for i in range(n):
                t.train_step(images[i], int(labels[i]))
                bar.update(1)
            ref_s = min(ref_s, (time.perf_counter() - t0) / n)
    units = sum(spec.pool.cost(i) for i in t.selection)

    res = Throughput(n, len(t.selection), units, c_s, ref_s, torch.get_num_threads())
    deepest = min((spec.pool.entry_layer[i] for i in t.selection), default=None)
    where = f", deepest selected conv {g.convs[int(deepest)].name}" if deepest is not None else ""
    print(f"train throughput {g.name}, strategy {spec.pool.strategy}, budget {budget:,} units, topk "
          f"{'all' if str(topk) == 'all' else Path(topk).name}: {n} steps (batch 1) on {data.name}, "
          f"{res.channels} channels selected ({res.units:,} units){where}")
    print(f"host C (gcc -O2, single thread, best of {repeats}): {1 / c_s:.2f} steps/s ({c_s * 1e3:.1f} ms/step)")
    print(f"Python reference (torch, {res.torch_threads} threads, best of {repeats}): {1 / ref_s:.2f} steps/s "
          f"({ref_s * 1e3:.1f} ms/step)")
    print(f"ratio C / reference: {res.ratio:.2f}x")
    return res


# ---------------------------------------------------------------- accuracy grid

@dataclass(frozen=True)
class Cell:
    strategy: str
    budget: int
    lr: float
    seed: int

    @property
    def key(self) -> str:
        return f"{self.strategy}_b{self.budget}_lr{self.lr:g}_s{self.seed}"


def _cells(budgets: Sequence[int], strategies: Sequence[str], seeds: Sequence[int],
           lrs: Sequence[float]) -> list[Cell]:
    """Every (strategy, budget, lr, seed); budget-free strategies run once, at the smallest budget."""
    out = []
    for s in strategies:
        for b in ([min(budgets)] if s in BUDGET_FREE else budgets):
            out += [Cell(s, b, lr, seed) for lr in lrs for seed in seeds]
    return out


def _run_cell(cell: Cell, cell_dir: Path, model: Path, data: Path, topk: str, epochs: int, train: int, test: int,
              on_epoch) -> dict:
    """compile + sim as subprocesses; returns the CSV row. `on_epoch()` is called per finished epoch."""
    cell_dir.mkdir(parents=True, exist_ok=True)
    metrics = cell_dir / "metrics.jsonl"
    log = cell_dir / "log.txt"
    trady = [sys.executable, "-m", "compiler"]
    t0 = time.perf_counter()
    with log.open("w") as f:
        r = subprocess.run([*trady, "compile", str(model), "--budget", str(cell.budget), "--strategy", cell.strategy,
                            "--topk", topk, "--seed", str(cell.seed), "--out", str(cell_dir / "project")],
                           stdout=f, stderr=subprocess.STDOUT, check=False)
        if r.returncode != 0:
            raise TradyError(f"{cell.key}: trady compile failed (exit {r.returncode}), see {log}")
        args = [*trady, "sim", str(cell_dir / "project"), "--data", str(data), "--epochs", str(epochs),
                "--train", str(train), "--test", str(test), "--lr", repr(cell.lr), "--seed", str(cell.seed),
                "--metrics", str(metrics)]
        f.write(" ".join(args) + "\n")
        f.flush()
        env = os.environ | {"PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
        with subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env) as proc:
            assert proc.stdout is not None
            for line in proc.stdout:  # "epoch N: ..." comes through tqdm.write (stdout when not a tty)
                f.write(line)
                if line.startswith("epoch "):
                    on_epoch()
        if proc.returncode != 0:
            raise TradyError(f"{cell.key}: trady sim failed (exit {proc.returncode}), see {log}")
    seconds = time.perf_counter() - t0
    (cell_dir / "cell.json").write_text(json.dumps(asdict(cell) | {"epochs": epochs, "train": train, "test": test,
                                                                   "seconds": round(seconds, 1)}) + "\n")
    return _row(cell_dir)


def _row(cell_dir: Path) -> dict:
    meta = json.loads((cell_dir / "cell.json").read_text())
    rows = [json.loads(x) for x in (cell_dir / "metrics.jsonl").read_text().splitlines() if x.strip()]
    return meta | {"epoch1_test_acc": rows[0]["test_acc"], "final_test_acc": rows[-1]["test_acc"],
                   "final_train_acc": rows[-1]["train_acc"], "final_train_loss": rows[-1]["train_loss"],
                   "channels": rows[-1]["channels"], "metrics": str(cell_dir / "metrics.jsonl")}


def _done(cell_dir: Path, epochs: int, train: int, test: int) -> bool:
    try:
        meta = json.loads((cell_dir / "cell.json").read_text())
        rows = (cell_dir / "metrics.jsonl").read_text().splitlines()
    except (OSError, ValueError):
        return False
    return (meta.get("epochs"), meta.get("train"), meta.get("test")) == (epochs, train, test) and len(rows) == epochs


def accuracy_grid(model: Path, budgets: Sequence[int], strategies: Sequence[str], seeds: Sequence[int], epochs: int,
                  train: int, test: int, lr: float | Sequence[float], topk: str | Path, out_dir: Path, jobs: int = 2,
                  data: Path | None = None) -> list[dict]:
    """Final test accuracy of every cell; writes results.csv/.md/.png in out_dir and prints the Markdown.

    Cells live in `out_dir/cells/<strategy>_b<budget>_lr<lr>_s<seed>/` (project, metrics, log);
    a cell already finished there with the same epochs/train/test is not run again, and the tables
    cover every finished cell of that setting (so a second call with another lr adds rows).
    `--seed` goes to both compile (head initialisation) and sim (sampler, rounding, shuffle).
    Budget-free strategies (head-only) run once per (lr, seed) and are shown under every budget.
    """
    from tqdm import tqdm

    data = _default_data(data)
    lrs = [float(lr)] if isinstance(lr, (int, float)) else [float(x) for x in lr]
    out_dir = Path(out_dir)
    cells_dir = out_dir / "cells"
    todo = [c for c in _cells(budgets, strategies, seeds, lrs)
            if not _done(cells_dir / c.key, epochs, train, test)]
    topk_opt = _topk_option(topk)
    print(f"grid {Path(model).name}: {len(todo)} cells to run ({jobs} at once), {epochs} epochs, {train} train / "
          f"{test} test images, topk {topk_opt}", file=sys.stderr)
    lock = threading.Lock()
    with tqdm(total=len(todo) * epochs, desc="grid epochs", unit="epoch", file=sys.stderr) as bar:
        def tick() -> None:
            with lock:
                bar.update(1)

        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            futures = {pool.submit(_run_cell, c, cells_dir / c.key, Path(model), data, topk_opt, epochs, train, test,
                                   tick): c for c in todo}
            for fut in as_completed(futures):
                row = fut.result()
                bar.write(f"{futures[fut].key}: test {100 * row['final_test_acc']:.1f}% "
                          f"({row['seconds']:.0f} s)")
    rows = sorted((_row(d) for d in cells_dir.glob("*") if _done(d, epochs, train, test)),
                  key=lambda r: (r["strategy"], r["lr"], r["budget"], r["seed"]))
    if not rows:
        raise TradyError(f"{out_dir}: no finished cells")
    all_budgets = sorted({*budgets, *(r["budget"] for r in rows if r["strategy"] not in BUDGET_FREE)})
    header = (f"{Path(model).stem}, {epochs} epochs (1 warm-up), {train} train / {test} test images, batch 1, "
              f"final test accuracy (%), mean ± std over seeds (per-seed values in brackets)")
    md = _markdown(rows, all_budgets, header)
    _write_csv(rows, out_dir / "results.csv")
    (out_dir / "results.md").write_text(md)
    _plot(rows, all_budgets, out_dir / "results.png",
          f"{Path(model).stem}: {epochs} epochs, {train} train / {test} test images, batch 1; "
          f"final test accuracy, mean ± std over seeds (dots: seeds)")
    print(md, end="")
    print(f"wrote {out_dir / 'results.csv'}, {out_dir / 'results.md'} and {out_dir / 'results.png'}", file=sys.stderr)
    return rows


def _groups(rows: list[dict], budgets: Sequence[int]) -> dict[tuple[str, float], dict[int, list[dict]]]:
    """(strategy, lr) -> budget -> cells (budget-free strategies copied under every budget)."""
    out: dict[tuple[str, float], dict[int, list[dict]]] = {}
    for r in rows:
        g = out.setdefault((r["strategy"], r["lr"]), {})
        for b in (budgets if r["strategy"] in BUDGET_FREE else [r["budget"]]):
            g.setdefault(b, []).append(r)
    return out


def _fmt(cells: list[dict]) -> str:
    acc = [100 * c["final_test_acc"] for c in sorted(cells, key=lambda c: c["seed"])]
    if not acc:
        return "-"
    sd = statistics.stdev(acc) if len(acc) > 1 else 0.0
    return f"{statistics.fmean(acc):.1f} ± {sd:.1f} [{' / '.join(f'{a:.1f}' for a in acc)}]"


def _markdown(rows: list[dict], budgets: Sequence[int], header: str) -> str:
    groups = _groups(rows, budgets)
    lines = [f"{header}.", "",
             "| strategy | lr | seeds | " + " | ".join(f"{b:,} units" for b in budgets) + " |",
             "|---|---|---|" + "---|" * len(budgets)]
    for (strategy, lr), by_b in groups.items():
        seeds = sorted({c["seed"] for cs in by_b.values() for c in cs})
        name = strategy + (" (budget-free)" if strategy in BUDGET_FREE else "")
        lines.append(f"| {name} | {lr:g} | {', '.join(map(str, seeds))} | "
                     + " | ".join(_fmt(by_b.get(b, [])) for b in budgets) + " |")
    lines += ["", "Accuracy after epoch 1 (mean over seeds, %): " + "; ".join(
        f"{s} lr {lr:g} @ {b:,}: {statistics.fmean(100 * c['epoch1_test_acc'] for c in cs):.1f}"
        for (s, lr), by_b in groups.items() for b, cs in sorted(by_b.items())
        if s not in BUDGET_FREE or b == budgets[0]), ""]
    return "\n".join(lines) + "\n"


def _write_csv(rows: list[dict], path: Path) -> None:
    fields = ["strategy", "budget", "lr", "seed", "epochs", "train", "test", "epoch1_test_acc", "final_test_acc",
              "final_train_acc", "final_train_loss", "channels", "seconds", "metrics"]
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, path)


def _plot(rows: list[dict], budgets: Sequence[int], png: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = _groups(rows, budgets)
    n = len(groups)
    width = 0.8 / max(n, 1)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.8 + 0.8 * len(budgets) * n), 4.2))
    for k, ((strategy, lr), by_b) in enumerate(groups.items()):
        xs, means, sds = [], [], []
        for j, b in enumerate(budgets):
            acc = [100 * c["final_test_acc"] for c in by_b.get(b, [])]
            if not acc:
                continue
            x = j + (k - (n - 1) / 2) * width
            xs.append(x)
            means.append(statistics.fmean(acc))
            sds.append(statistics.stdev(acc) if len(acc) > 1 else 0.0)
            ax.scatter([x] * len(acc), acc, color="black", s=8, zorder=3)
        ax.bar(xs, means, width * 0.95, yerr=sds, capsize=3, label=f"{strategy}, lr {lr:g}")
    ax.set_xticks(range(len(budgets)), [f"{b:,} units" for b in budgets])
    ax.set_ylabel("final test accuracy (%)")
    ax.set_title("\n".join(_wrap(title, 80)), fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    tmp = png.with_name(f".{png.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, png)


def _wrap(text: str, width: int) -> list[str]:
    lines, cur = [], ""
    for word in text.split():
        if cur and len(cur) + 1 + len(word) > width:
            lines.append(cur)
            cur = word
        else:
            cur = f"{cur} {word}".strip()
    return [*lines, cur]


# ---------------------------------------------------------------- SRAM table

def sram_table(model: Path, budgets: Sequence[int], strategy: str = "trady", topk: str | Path = "all") -> str:
    """The plan's `sram_bytes` per budget (Markdown), against the board and TinyEngine's sparse update.

    The plan is the one `trady compile` writes (`pipeline.build(...).plan_json`); nothing is written.
    """
    from compiler import pipeline

    def plan(budget: int, home: str) -> dict:
        return pipeline.build(Path(model), pipeline.Options(budget=budget, strategy=strategy, topk=_topk_option(topk),
                                                            weight_home=home)).plan_json

    plans = [plan(b, "auto") for b in budgets]
    ram_totals = [p["sram_bytes"]["total"] if p["weight_home"] == "ram" else plan(b, "ram")["sram_bytes"]["total"]
                  for b, p in zip(budgets, plans, strict=True)]
    parts = [k for k in plans[0]["sram_bytes"] if k != "total"]
    topk_name = "all" if str(topk) == "all" else Path(topk).name
    p0 = plans[0]
    title = (f"SRAM bytes of {p0['model']}, strategy {p0['strategy']}, topk {topk_name} "
             f"({len(p0['pool_layers'])} pool layers, {p0['pool_channels']:,} pool channels)")
    lines = [title, "",
             "| part | " + " | ".join(f"{b:,} units" for b in budgets) + " |",
             "|---|" + "---:|" * len(budgets)]
    lines.append("| weight home (auto) | " + " | ".join(p["weight_home"] for p in plans) + " |")
    for k in parts:
        lines.append(f"| {k} | " + " | ".join(f"{p['sram_bytes'][k]:,}" for p in plans) + " |")
    totals = [p["sram_bytes"]["total"] for p in plans]
    lines.append("| **total** | " + " | ".join(f"**{t:,}**" for t in totals) + " |")
    lines.append(f"| total / 320 KB board ({BOARD_SRAM:,} B) | "
                 + " | ".join(f"{t / BOARD_SRAM:.2f}x ({'fits' if t <= BOARD_SRAM else 'over'})" for t in totals)
                 + " |")
    lines.append(f"| total / TinyEngine ~173 KB ({TINYENGINE_SRAM:,} B) | "
                 + " | ".join(f"{t / TINYENGINE_SRAM:.2f}x" for t in totals) + " |")
    lines.append("| total with the trainable weights in RAM | " + " | ".join(
        f"{r:,} ({r / BOARD_SRAM:.2f}x board)" for r in ram_totals) + " |")
    lines.append("| selection capacity (channels) | " + " | ".join(f"{p['selection_capacity']:,}" for p in plans)
                 + " |")
    text = "\n".join(lines) + "\n"
    print(text, end="")
    return text
