"""Stage 8, command line: `trady` (also `python -m compiler`).

Every command returns 0 on success; a `TradyError` becomes one line on stderr and exit code 2;
a verification that finds a difference exits 1. `-v/-vv/-vvv` print the IR / plan / emitted C.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from compiler.errors import TradyError

ROOT = Path(__file__).resolve().parent.parent


def shared_dir() -> Path:
    """Models and data: $TRADY_SHARED, else ../shared next to the repository."""
    return Path(os.environ.get("TRADY_SHARED", ROOT.parent / "shared"))


def default_model() -> Path:
    return shared_dir() / "models" / "mcunet-5fps.pkl"


def default_data() -> Path:
    return shared_dir() / "data" / "cifar10-subset.npz"


def positive_int(text: str) -> int:
    try:
        v = int(text.replace(",", "").replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return v


def cmd_compile(a: argparse.Namespace) -> int:
    from compiler import pipeline
    from compiler.report import print_summary

    if a.topk == "auto":
        from compiler import rank

        cache = Path(os.environ.get("TRADY_CACHE", Path.home() / ".cache" / "trady"))
        a.topk = str(rank.auto_topk(Path(a.model), cache))
        print(f"--topk auto: {a.topk}")
    opt = pipeline.Options(budget=a.budget, classes=a.classes, resolution=a.resolution, seed=a.seed,
                           target=a.target, strategy=a.strategy, keep_head=a.keep_head,
                           weight_home=a.weight_home, flash_page=a.flash_page, accumulate=a.accumulate,
                           topk=a.topk if a.topk == "all" else str(Path(a.topk).resolve()))
    project = pipeline.build(Path(a.model), opt)
    total = project.plan_json["total_units"]
    if a.budget > total:
        pipeline.warn(f"--budget {a.budget:,} exceeds the model's total of {total:,} units (everything fits)")
    _dump(a.verbose, project)
    out = pipeline.write(project, Path(a.out))
    print_summary(project.plan_json)
    print(f"wrote {out}")
    return 0


def _dump(level: int, project) -> None:
    if level >= 1:
        for i, op in enumerate(project.graph.ops):
            print(f"ir op {i}: {type(op).__name__} {op.name} -> {op.output} "
                  f"{project.graph.tensors[op.output].shape}", file=sys.stderr)
    if level >= 2:
        for p in project.plan.placements:
            print(f"plan {p.name}: offset {p.offset} size {p.size} steps {p.first}..{p.last}", file=sys.stderr)
    if level >= 3:
        from compiler import emit

        name = emit.model_c_name(project.graph)
        files = emit.render(project.graph, project.quant, project.plan, project.spec)
        print(files[f"{name}.c"], file=sys.stderr)


def cmd_verify(a: argparse.Namespace) -> int:
    from compiler import data, host, pipeline, verify

    project = pipeline.load_project(Path(a.dir), a.model)
    res = project.graph.tensors[project.graph.input].shape[0]
    if a.steps > 0:
        ds = data.load(a.data, res, limit_train=a.steps, limit_test=0)
        if len(ds.train.y) < a.steps:
            raise TradyError(f"{a.data}: {len(ds.train.y)} training images, --steps {a.steps} needs as many")
        if int(ds.train.y.max()) >= project.graph.head.classes:
            raise TradyError(f"{a.data}: label {int(ds.train.y.max())} out of range for "
                             f"{project.graph.head.classes} classes")
        exe = host.build(Path(a.dir), sanitize=a.sanitize)
        tr = verify.compare_training(project, exe, ds.train.x, ds.train.y, a.steps, seed=a.seed, lr=a.lr)
        print(f"verify: {'OK' if tr.ok else 'FAIL'} host C vs reference training: "
              f"{tr.message if tr.ok else 'first divergence at ' + tr.message}")
        return 0 if tr.ok else 1
    ds = data.load(a.data, res, limit_train=0, limit_test=a.images)
    images = ds.test.x[:a.images]
    if a.export_tflite is not None:
        from compiler import tflm

        print(f"wrote {tflm.export_file(project, a.export_tflite)}")
    if a.tflm:
        from compiler import tflm

        result = tflm.verify(project, images)
    else:
        exe = host.build(Path(a.dir), sanitize=a.sanitize)
        result = verify.compare_forward(project, exe, images)
    kind = "TFLite Micro" if a.tflm else "host C"
    if result.ok:
        print(f"verify: OK {kind} vs reference: {result.message}")
        return 0
    print(f"verify: FAIL {kind} vs reference: first difference at {result.message}")
    return 1


def cmd_sim(a: argparse.Namespace) -> int:
    from compiler import pipeline, simulate

    project = pipeline.load_project(Path(a.dir), a.model)
    opt = simulate.SimOptions(epochs=a.epochs, seed=a.seed, lr=a.lr, warmup_epochs=a.warmup_epochs,
                              limit_train=a.train, limit_test=a.test, save_state=a.save_state,
                              load_state=a.load_state, persist=a.persist)
    metrics = a.metrics or Path(a.dir) / "metrics.jsonl"
    rows = simulate.run(project, Path(a.dir), a.data, opt, metrics)
    last = rows[-1]
    print(f"wrote {metrics} and {metrics.with_suffix('.png')}")
    print(f"sim: {project.graph.name} strategy {project.spec.pool.strategy} budget {project.spec.budget_units:,} "
          f"units: {a.epochs} epochs, final train loss {last['train_loss']:.4f}, test accuracy "
          f"{100 * last['test_acc']:.2f}%")
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse with the project's error style: one line on stderr, exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"{self.prog}: {message}", file=sys.stderr)
        raise SystemExit(2)


def cmd_rank(a: argparse.Namespace) -> int:
    from compiler import rank

    return rank.cmd_rank(a)


def cmd_export(a: argparse.Namespace) -> int:
    from compiler import pipeline, state

    project = pipeline.load_project(Path(a.dir), a.model)
    st = state.read(a.state, project)
    model = Path(project.plan_json["model_path"]) if a.model is None else Path(a.model)
    out = state.export_model(project, st, model, a.out)
    changed = sum(int((w != project.graph.convs[i].weight).sum())
                  for i, w in state.folded_weights(project, st).items())
    print(f"export: wrote {out}: {len(st.weights)} trainable convs ({changed:,} weights changed after "
          f"{st.step} steps, {st.epoch} epochs), head {project.graph.head.classes} classes; "
          f"compile it with --keep-head to keep the trained head")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="trady", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    c = sub.add_parser("compile", help="import a model and emit a C project")
    c.add_argument("model", type=Path, help="tiny-training .pkl model")
    c.add_argument("--budget", type=positive_int, required=True, help="update budget B_mem in units (SPEC 6)")
    c.add_argument("--out", type=Path, required=True, help="output folder (replaced atomically)")
    c.add_argument("--classes", type=positive_int, default=10, help="classes of the new fp32 head (default 10)")
    c.add_argument("--resolution", type=positive_int, default=None, help="input resolution (default: the model's)")
    c.add_argument("--seed", type=int, default=0, help="seed for the head initialisation")
    c.add_argument("--target", default="host", help="host (Cortex-M images: trady firmware)")
    c.add_argument("--strategy", default="trady", help="trady (default), static-topk, dynamic-full, static-full, "
                   "su, head-only (SPEC 7)")
    c.add_argument("--topk", default="all", help="TopK file from `trady rank` (SPEC 6); 'auto' ranks on the shared "
                   "CIFAR-10 subset (cached in $TRADY_CACHE or ~/.cache/trady); 'all' layers (default)")
    c.add_argument("--keep-head", action="store_true",
                   help="keep the model file's classifier (dequantised) instead of a fresh head, e.g. after export")
    c.add_argument("--weight-home", default="auto", metavar="ram|flash|auto",
                   help="home of trainable weights (SPEC 8): RAM (updated in place), flash (working copies in the "
                   "update arena, written back at each resampling), or auto (default): RAM if the plan fits the "
                   "target's SRAM (host: the 320 KB of the reference board), else flash")
    c.add_argument("--flash-page", type=positive_int, default=2048,
                   help="flash erase unit in bytes for the write-back page buffer (default 2048)")
    c.add_argument("--accumulate", type=positive_int, default=1, metavar="N",
                   help="gradient accumulation: update every N samples with the mean gradient (default 1; the "
                   "accumulators' SRAM is reported as grad_accumulator)")
    c.add_argument("-v", "--verbose", action="count", default=0, help="-v IR, -vv plan, -vvv emitted C")
    c.set_defaults(func=cmd_compile)

    v = sub.add_parser("verify", help="compare the C build (or TFLite Micro) with the reference")
    v.add_argument("dir", type=Path, help="compiled project folder")
    v.add_argument("--data", type=Path, default=None, help="data set (.npz or image folder); default: shared CIFAR-10")
    v.add_argument("--images", type=positive_int, default=8, help="test images to run (default 8)")
    v.add_argument("--steps", type=int, default=0, help="training steps to compare (0: forward only)")
    v.add_argument("--seed", type=int, default=0, help="sampler / rounding seed for --steps")
    v.add_argument("--lr", type=float, default=0.01, help="learning rate for --steps")
    v.add_argument("--tflm", action="store_true", help="compare against the TFLite Micro interpreter instead")
    v.add_argument("--sanitize", action="store_true", help="build with -fsanitize=address,undefined")
    v.add_argument("--export-tflite", type=Path, default=None, metavar="PATH",
                   help="also write the int8 network as a .tflite file (what --tflm runs)")
    v.add_argument("--model", type=Path, default=None, help="model file, if moved since compile")
    v.set_defaults(func=cmd_verify)

    s = sub.add_parser("sim", help="train a compiled project on the host (gcc build) over a data set")
    s.add_argument("dir", type=Path, help="compiled project folder")
    s.add_argument("--data", type=Path, default=None, help="data set (.npz or image folder); default: shared CIFAR-10")
    s.add_argument("--epochs", type=positive_int, default=3)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--lr", type=float, default=0.003,
                   help="base learning rate (warm-up + cosine, batch 1; default 0.003, see docs/RESULTS.md)")
    s.add_argument("--warmup-epochs", type=int, default=1)
    s.add_argument("--train", type=positive_int, default=None, help="use the first N training images (class-balanced)")
    s.add_argument("--test", type=positive_int, default=None, help="use the first N test images (class-balanced)")
    s.add_argument("--metrics", type=Path, default=None, help="JSON-lines metrics file (default DIR/metrics.jsonl)")
    s.add_argument("--model", type=Path, default=None, help="model file, if moved since compile")
    s.set_defaults(func=cmd_sim)

    s.add_argument("--save-state", type=Path, default=None, help="write the trained state file at the end")
    s.add_argument("--load-state", type=Path, default=None, help="start from a trained state file")
    s.add_argument("--persist", type=Path, default=None, metavar="REGION",
                   help="persistent-state region file (docs/PERSIST.md): go on from its newest record, write one "
                        "per epoch boundary")

    rk = sub.add_parser("rank", help="offline layer ranking by reweighted gradient norm -> TopK file (SPEC 6)")
    rk.add_argument("model", type=Path, help="tiny-training .pkl model")
    rk.add_argument("--data", type=Path, default=None, help="proxy data set; default: shared CIFAR-10 subset")
    rk.add_argument("--out", type=Path, required=True, help="TopK file to write (topk.json; a PNG goes next to it)")
    rk.add_argument("--epochs", type=positive_int, default=None, help="fine-tuning epochs (default 2)")
    rk.add_argument("--seed", type=int, default=None)
    rk.add_argument("--lr", type=float, default=None, help="learning rate (default 0.01)")
    rk.add_argument("--train", type=positive_int, default=None, help="use N class-balanced training images")
    rk.set_defaults(func=cmd_rank)

    e = sub.add_parser("export", help="turn a trained state file into an updated model file")
    e.add_argument("dir", type=Path, help="compiled project folder the state belongs to")
    e.add_argument("state", type=Path, help="trained state file (trady sim --save-state)")
    e.add_argument("--out", type=Path, required=True, help="model file to write (.pkl)")
    e.add_argument("--model", type=Path, default=None, help="model file, if moved since compile")
    e.set_defaults(func=cmd_export)

    from compiler import commands, firmware  # report, bench, demo; firmware, qemu, bench-mcu

    commands.register(sub)
    firmware.register(sub)
    from compiler import analysis, experiment  # analyze, experiment

    analysis.register(sub)
    experiment.register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:
        return int(e.code or 0)
    if getattr(args, "data", "unset") is None:
        args.data = default_data()
    if getattr(args, "steps", 0) < 0:
        print(f"trady {args.command}: --steps {args.steps}: expected >= 0", file=sys.stderr)
        return 2
    try:
        return args.func(args)
    except TradyError as e:
        print(f"trady {args.command}: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
