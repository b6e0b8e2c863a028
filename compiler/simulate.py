"""`trady sim`: train a compiled project on the host (gcc build of the generated C) over a data set.

Data set -> int8 images at the model resolution -> `host_sim train` -> per-epoch metrics
(JSON lines), a progress bar, and a PNG of the curves next to the metrics file.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from compiler import data, host
from compiler.errors import TradyError
from compiler.pipeline import Project


@dataclass(frozen=True)
class SimOptions:
    epochs: int = 3
    seed: int = 0
    lr: float = 0.003
    warmup_epochs: int = 1
    limit_train: int | None = None
    limit_test: int | None = None
    save_state: Path | None = None
    load_state: Path | None = None
    persist: Path | None = None  # persistent-state region file: resume from its newest record, one per epoch


def run(project: Project, folder: Path, data_path: Path, opt: SimOptions, metrics: Path | None,
        progress: bool = True) -> list[dict]:
    g = project.graph
    res = g.tensors[g.input].shape[0]
    ds = data.load(data_path, res, opt.limit_train, opt.limit_test)
    classes = g.head.classes
    for split, y in (("train", ds.train.y), ("test", ds.test.y)):
        if len(y) and int(y.max()) >= classes:
            raise TradyError(f"{data_path}: {split} label {int(y.max())} out of range for a head of {classes} classes "
                             f"(compile with --classes {int(y.max()) + 1})")
    if len(ds.train.y) == 0:
        raise TradyError(f"{data_path}: no training images")
    exe = host.build(folder)
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        ds.train.x.tofile(t / "train.bin")
        ds.train.y.astype(np.int32).tofile(t / "train_labels.bin")
        ds.test.x.tofile(t / "test.bin")
        ds.test.y.astype(np.int32).tofile(t / "test_labels.bin")
        args = [str(exe), "train", str(t / "train.bin"), str(t / "train_labels.bin"), str(len(ds.train.y)),
                str(t / "test.bin"), str(t / "test_labels.bin"), str(len(ds.test.y)), str(opt.epochs),
                str(opt.seed), repr(float(opt.lr)), str(opt.warmup_epochs)]
        if opt.load_state is not None:
            if not Path(opt.load_state).is_file():
                raise TradyError(f"{opt.load_state}: state file not found")
            args.append(f"load={Path(opt.load_state).resolve()}")
        if opt.save_state is not None:
            Path(opt.save_state).parent.mkdir(parents=True, exist_ok=True)
            args.append(f"save={Path(opt.save_state).resolve()}")
        if opt.persist is not None:
            Path(opt.persist).parent.mkdir(parents=True, exist_ok=True)
            args.append(f"persist={Path(opt.persist).resolve()}")
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=opt.epochs * len(ds.train.y), unit="step", desc=f"train {project.spec.pool.strategy}",
                       file=sys.stderr, disable=None)
        with subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
            assert proc.stdout is not None
            for line in proc.stdout:
                if line.startswith("step ") and bar is not None:
                    done = int(line.split()[1])
                    bar.update(done - bar.n)
                elif line.startswith("persist "):
                    (bar.write(line.rstrip()) if bar is not None else print(line.rstrip(), file=sys.stderr))
                elif line.startswith("epoch "):
                    row = json.loads(line[6:]) | {"strategy": project.spec.pool.strategy, "seed": opt.seed,
                                                  "budget_units": project.spec.budget_units}
                    rows.append(row)
                    msg = (f"epoch {row['epoch']}: train loss {row['train_loss']:.4f}, test acc "
                           f"{100 * row['test_acc']:.2f}%, {row['channels']} channels")
                    (bar.write(msg) if bar is not None else print(msg, file=sys.stderr))
            err = proc.stderr.read() if proc.stderr else ""
        if bar is not None:
            bar.close()
        if proc.returncode != 0:
            raise TradyError(f"{exe.name} train failed (exit {proc.returncode}): {err.strip()}")
    if not rows and opt.persist is not None:
        raise TradyError(f"{opt.persist}: its newest record is at the end of the {opt.epochs}-epoch run: nothing "
                         "left to train")
    if metrics is not None:
        write_metrics(rows, metrics)
    return rows


def write_metrics(rows: list[dict], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    os.replace(tmp, path)
    plot(rows, path.with_suffix(".png"))


def plot(rows: list[dict], png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = [r["epoch"] for r in rows]
    fig, ax = plt.subplots(1, 2, figsize=(9, 3.4))
    ax[0].plot(ep, [r["train_loss"] for r in rows], marker="o")
    ax[0].set(xlabel="epoch", ylabel="train loss", title="training loss")
    ax[1].plot(ep, [100 * r["test_acc"] for r in rows], marker="o", label="test")
    ax[1].plot(ep, [100 * r["train_acc"] for r in rows], marker=".", ls="--", label="train (during epoch)")
    ax[1].set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    ax[1].legend()
    for a in ax:
        a.grid(alpha=0.3)
    fig.tight_layout()
    tmp = png.with_name(f".{png.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, png)
