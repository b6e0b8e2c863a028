"""Stage 8, command line (continued): `report`, `bench`, `probe` and `demo`, registered into the CLI parser.

Each command takes the argparse Namespace and returns an exit code: 0 success, 1 a check that ran
and failed (not bit-exact, probe below its bar), 2 bad input (a `TradyError`, turned into one line
on stderr by `cli.main`). Defaults come from `cli.default_model()` / `cli.default_data()`.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

DEMO_BUDGET = 15_936  # the paper's smallest MCUNet budget (SPEC 6), units


def _model(a: argparse.Namespace) -> Path:
    from compiler.cli import default_model

    return Path(a.model) if a.model is not None else default_model()


def _data(a: argparse.Namespace) -> Path:
    from compiler.cli import default_data

    return Path(a.data) if a.data is not None else default_data()


def _test_images(data_path: Path, resolution: int, n: int):
    """The first n (class-balanced) test images of a data set, int8 at the model resolution."""
    from compiler import data
    from compiler.errors import TradyError

    images = data.load(data_path, resolution, limit_train=0, limit_test=n).test.x[:n]
    if len(images) == 0:
        raise TradyError(f"{data_path}: no test images")
    return images


def cmd_report(a: argparse.Namespace) -> int:
    from compiler import report

    text, md, png = report.write(Path(a.dir))
    print(text, end="")
    print(f"wrote {md} and {png}", file=sys.stderr)
    return 0


def cmd_bench(a: argparse.Namespace) -> int:
    import torch
    from tqdm import tqdm

    from compiler import host, pipeline, reference

    model = _model(a)
    project = pipeline.build(model, pipeline.Options(budget=a.budget))
    g = project.graph
    images = _test_images(_data(a), g.tensors[g.input].shape[0], a.images)
    n = len(images)
    with tempfile.TemporaryDirectory(prefix="trady-bench-") as tmp:
        folder = pipeline.write(project, Path(tmp) / "project")
        print(f"bench {g.name} @ {g.tensors[g.input].shape[0]} px: {project.plan_json['macs'] / 1e6:.2f} M MACs "
              f"per image, {n} test images of {_data(a).name}, best of {a.repeats} passes", file=sys.stderr)
        exe = host.build(folder)
        c_s = host.run_bench(exe, images)
    ref_s = float("inf")
    with tqdm(total=a.repeats * n, desc="reference forward", unit="img", file=sys.stderr, leave=False) as bar:
        for _ in range(a.repeats):
            t0 = time.perf_counter()
            for i in range(n):
                reference.forward(g, images[i:i + 1], project.quant)
                bar.update(1)
            ref_s = min(ref_s, (time.perf_counter() - t0) / n)
    ratio = ref_s / c_s if c_s > 0 else float("inf")
    print(f"host C (gcc -O2, single thread): {c_s * 1e3:.3f} ms/image")
    print(f"Python reference (torch, {torch.get_num_threads()} threads, batch 1): {ref_s * 1e3:.3f} ms/image")
    print(f"ratio reference / C: {ratio:.2f}")
    print(f"bench {g.name}, {n} images: C {c_s * 1e3:.3f} ms/image, reference {ref_s * 1e3:.3f} ms/image, "
          f"reference/C {ratio:.2f}x")
    return 0


def _probe_line(result, bar: float) -> str:
    verdict = "PASS" if result.accuracy >= bar else "FAIL"
    return (f"probe accuracy: {100 * result.accuracy:.1f}% ({result.train} train / {result.test} test images, "
            f"bar {100 * bar:.0f}%: {verdict})")


def cmd_probe(a: argparse.Namespace) -> int:
    from compiler import probe

    result = probe.linear_probe(_model(a), _data(a), a.train, a.test, resolution=a.resolution)
    print(f"linear probe on {result.features} pooled features, {result.classes} classes: train accuracy "
          f"{100 * result.train_accuracy:.1f}%, {result.seconds:.0f} s")
    print(_probe_line(result, a.min_accuracy))
    return 0 if result.accuracy >= a.min_accuracy else 1


def _section(i: int, total: int, title: str) -> None:
    if i > 1:
        print()
    print(f"=== [{i}/{total}] {title} ===", flush=True)


def cmd_demo(a: argparse.Namespace) -> int:
    from compiler import host, pipeline, probe, report, simulate, verify
    from compiler.report import print_summary

    model, data_path = _model(a), _data(a)
    out = Path(a.out) / model.stem
    steps = 6

    topk = a.topk if a.topk is not None else DEMO_TOPK if model.name == "mcunet-5fps.pkl" else "all"
    _section(1, steps, f"compile {model.name} (budget {a.budget:,} units, TopK {topk}) -> {out}")
    project = pipeline.build(model, pipeline.Options(budget=a.budget, topk=str(topk)))
    pipeline.write(project, out)
    print_summary(project.plan_json)

    _section(2, steps, "build the host simulator (gcc)")
    exe = host.build(out)
    print(f"built {exe}")

    _section(3, steps, f"verify: host C vs Python reference on {a.images} test images")
    g = project.graph
    images = _test_images(data_path, g.tensors[g.input].shape[0], a.images)
    result = verify.compare_forward(project, exe, images)
    sram = project.plan_json["sram_bytes"]
    if not result.ok:
        print(f"verify: FAIL first difference at {result.message}")
        print(f"demo: FAIL, host C differs from the reference ({result.message})")
        return 1
    print(f"verify: OK {result.message}")

    _section(4, steps, "memory report")
    text, md, png = report.write(out)
    print(text, end="")
    print(f"wrote {md} and {png}")

    _section(5, steps, f"linear probe: pooled features, {a.train} train / {a.test} test images")
    pr = probe.linear_probe(model, data_path, a.train, a.test)
    print(f"linear probe on {pr.features} pooled features, {pr.classes} classes: train accuracy "
          f"{100 * pr.train_accuracy:.1f}%, {pr.seconds:.0f} s")
    print(_probe_line(pr, probe.MIN_ACCURACY))

    _section(6, steps, f"train on the host (generated C): {a.sim_epochs} epochs, {a.sim_train} train / "
                       f"{a.sim_test} test images, strategy {project.spec.pool.strategy}")
    opt = simulate.SimOptions(epochs=a.sim_epochs, limit_train=a.sim_train, limit_test=a.sim_test)
    rows = simulate.run(project, out, data_path, opt, out / "metrics.jsonl")
    trained = rows[-1]["test_acc"]
    print(f"wrote {out / 'metrics.jsonl'} and {out / 'metrics.png'}")

    passed = pr.accuracy >= probe.MIN_ACCURACY
    print(f"\ndemo: {'OK' if passed else 'FAIL'}: verify bit-exact on {result.images} images | "
          f"SRAM {sram['total']:,} bytes (activation arena {sram['activation_arena']:,}) | "
          f"probe {100 * pr.accuracy:.1f}% (bar {100 * probe.MIN_ACCURACY:.0f}%: {'PASS' if passed else 'FAIL'}) | "
          f"trained on device (host sim) {100 * trained:.1f}% test accuracy")
    return 0 if passed else 1


def cmd_bench_train(a: argparse.Namespace) -> int:
    from compiler import benchmarks

    benchmarks.train_throughput(_model(a), a.budget, a.strategy, a.topk, a.steps, _data(a), a.repeats)
    return 0


def cmd_bench_grid(a: argparse.Namespace) -> int:
    from compiler import benchmarks

    benchmarks.accuracy_grid(_model(a), a.budgets, a.strategies, a.seeds, a.epochs, a.train, a.test, a.lr, a.topk,
                             a.out, a.jobs, _data(a))
    return 0


def cmd_bench_sram(a: argparse.Namespace) -> int:
    from compiler import benchmarks

    benchmarks.sram_table(_model(a), a.budgets, a.strategy, a.topk)
    return 0


# The hand-written TopK the benchmarks use until `trady rank` lands (docs/RESULTS.md).
DEMO_TOPK = Path(__file__).resolve().parent.parent / "docs" / "topk-mcunet-last17.json"


def register(sub: argparse._SubParsersAction) -> None:
    from compiler import probe
    from compiler.cli import positive_int

    def fraction(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}") from None
        if not 0.0 <= v <= 1.0:
            raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}")
        return v

    model_help = "tiny-training .pkl model (default: shared mcunet-5fps)"
    data_help = "data set (.npz or image folder); default: shared CIFAR-10 subset"

    r = sub.add_parser("report", help="memory map, per-layer costs, flash/SRAM totals (Markdown + PNG)")
    r.add_argument("dir", type=Path, help="compiled project folder")
    r.set_defaults(func=cmd_report)

    b = sub.add_parser("bench", help="forward time per image: host C build vs Python reference")
    b.add_argument("--model", type=Path, default=None, help=model_help)
    b.add_argument("--data", type=Path, default=None, help=data_help)
    b.add_argument("--images", type=positive_int, default=8, help="test images to time (default 8)")
    b.add_argument("--repeats", type=positive_int, default=3, help="passes; the best one counts (default 3)")
    b.add_argument("--budget", type=positive_int, default=DEMO_BUDGET, help="B_mem for the compile (units)")
    b.set_defaults(func=cmd_bench)

    bt = sub.add_parser("bench-train", help="training steps/s: host C build vs Python reference, same run")
    bt.add_argument("--model", type=Path, default=None, help=model_help)
    bt.add_argument("--data", type=Path, default=None, help=data_help)
    bt.add_argument("--budget", type=positive_int, default=15936)
    bt.add_argument("--strategy", default="trady")
    bt.add_argument("--topk", default="all", help="TopK file or 'all'")
    bt.add_argument("--steps", type=positive_int, default=32)
    bt.add_argument("--repeats", type=positive_int, default=3)
    bt.set_defaults(func=cmd_bench_train)

    bg = sub.add_parser("bench-grid", help="test accuracy over strategies x budgets x seeds (trady sim per cell)")
    bg.add_argument("--model", type=Path, default=None, help=model_help)
    bg.add_argument("--data", type=Path, default=None, help=data_help)
    bg.add_argument("--budgets", type=positive_int, nargs="+", default=[15936, 64832])
    bg.add_argument("--strategies", nargs="+", default=["trady", "static-topk", "head-only"])
    bg.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    bg.add_argument("--epochs", type=positive_int, default=2)
    bg.add_argument("--train", type=positive_int, default=1000)
    bg.add_argument("--test", type=positive_int, default=500)
    bg.add_argument("--lr", type=float, nargs="+", default=[0.003])
    bg.add_argument("--topk", default="all", help="TopK file or 'all'")
    bg.add_argument("--out", type=Path, default=Path("out/grid"))
    bg.add_argument("--jobs", type=positive_int, default=2)
    bg.set_defaults(func=cmd_bench_grid)

    bs = sub.add_parser("bench-sram", help="SRAM parts of the plan per budget vs the 320 KB board")
    bs.add_argument("--model", type=Path, default=None, help=model_help)
    bs.add_argument("--budgets", type=positive_int, nargs="+", default=[15936, 64832, 112640])
    bs.add_argument("--strategy", default="trady")
    bs.add_argument("--topk", default="all", help="TopK file or 'all'")
    bs.set_defaults(func=cmd_bench_sram)

    p = sub.add_parser("probe", help="import sanity check: linear probe on the pooled int8 features")
    p.add_argument("--model", type=Path, default=None, help=model_help)
    p.add_argument("--data", type=Path, default=None, help=data_help)
    p.add_argument("--train", type=positive_int, default=probe.DEFAULT_TRAIN,
                   help=f"class-balanced train images (default {probe.DEFAULT_TRAIN})")
    p.add_argument("--test", type=positive_int, default=probe.DEFAULT_TEST,
                   help=f"class-balanced test images (default {probe.DEFAULT_TEST})")
    p.add_argument("--resolution", type=positive_int, default=None, help="input resolution (default: the model's)")
    p.add_argument("--min-accuracy", type=fraction, default=probe.MIN_ACCURACY,
                   help=f"exit 1 below this test accuracy (default {probe.MIN_ACCURACY})")
    p.set_defaults(func=cmd_probe)

    d = sub.add_parser("demo", help="compile, build, verify, report and probe mcunet-5fps end to end")
    d.add_argument("--model", type=Path, default=None, help=model_help)
    d.add_argument("--data", type=Path, default=None, help=data_help)
    d.add_argument("--out", type=Path, default=Path("out"), help="parent folder of the project (default ./out)")
    d.add_argument("--images", type=positive_int, default=16, help="test images to verify (default 16)")
    d.add_argument("--budget", type=positive_int, default=DEMO_BUDGET, help=f"B_mem in units (default {DEMO_BUDGET})")
    d.add_argument("--train", type=positive_int, default=probe.DEFAULT_TRAIN, help="probe train images")
    d.add_argument("--test", type=positive_int, default=probe.DEFAULT_TEST, help="probe test images")
    d.add_argument("--topk", default=None, help="TopK file (default: docs/topk-mcunet-last17.json for mcunet-5fps)")
    d.add_argument("--sim-epochs", type=positive_int, default=2, help="training epochs on the host (default 2)")
    d.add_argument("--sim-train", type=positive_int, default=1000, help="training images (default 1000)")
    d.add_argument("--sim-test", type=positive_int, default=500, help="test images for the trained model (default 500)")
    d.set_defaults(func=cmd_demo)
