"""Stage 7, compile: model file + options -> a self-contained C project in a folder.

Pure steps: import -> replace the head -> prepare quantisation -> plan memory -> emit. The folder
is written to a temporary sibling and renamed into place, so a failure leaves nothing behind.
`load_project` re-creates the same graph from a compiled folder's plan (for verify and report).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from compiler import __version__, emit, planner, quant, sampler, training
from compiler.costs import layer_costs
from compiler.errors import TradyError
from compiler.importers import tiny_training
from compiler.ir import AvgPool, Graph, Head

MAX_TAPS = 66_000  # 127 * 255 * taps < 2^31 keeps the int32 conv accumulator exact
# SRAM of each target, for --weight-home auto; the host build models the reference board (STM32F746G-DISCO).
TARGET_SRAM = {"host": 320 * 1024}
WEIGHT_HOMES = ("auto", "ram", "flash")
MCU_POINTER_BYTES = 4  # Cortex-M: pointers and int32 are 4 bytes (tt_weight_patch: 5 words)


@dataclass(frozen=True)
class Options:
    budget: int  # B_mem in units (SPEC 6); recorded, sizes nothing yet
    classes: int = 10
    resolution: int | None = None  # None: the model's native resolution
    seed: int = 0
    target: str = "host"
    strategy: str = "trady"
    topk: str = "all"  # "all" or a TopK file (SPEC 6)
    keep_head: bool = False  # keep the file's classifier (e.g. an exported trained model)
    weight_home: str = "auto"  # trainable weights in "ram", in "flash" (SPEC 8), or "auto": RAM if it fits
    flash_page: int = 2048  # flash erase unit in bytes (the write-back page buffer), flash home only
    accumulate: int = 1  # gradient accumulation over this many samples (SPEC 5); 1 = update every sample


@dataclass(frozen=True, eq=False)
class Project:
    graph: Graph
    quant: dict
    plan: planner.Plan
    options: Options
    plan_json: dict
    spec: training.TrainSpec


def init_head(graph: Graph, classes: int, seed: int) -> Head:
    """A fresh fp32 head: weights uniform in +-1/sqrt(features) from numpy's PCG64(seed), bias 0."""
    f = graph.tensors[graph.head.input].shape[2]
    rng = np.random.default_rng(seed)
    bound = 1.0 / np.sqrt(f)
    return Head(graph.head.input, rng.uniform(-bound, bound, (classes, f)).astype(np.float32),
                np.zeros(classes, np.float32))


def check_options(graph: Graph, opt: Options) -> None:
    if opt.classes < 2 or opt.classes > 100_000:
        raise TradyError(f"--classes {opt.classes}: expected an integer in 2..100000")
    if opt.budget < 1:
        raise TradyError(f"--budget {opt.budget}: expected a positive number of units")
    if opt.weight_home not in WEIGHT_HOMES:
        raise TradyError(f"--weight-home {opt.weight_home}: expected one of {', '.join(WEIGHT_HOMES)}")
    if opt.flash_page < 16 or opt.flash_page > 1 << 20 or opt.flash_page & (opt.flash_page - 1):
        raise TradyError(f"--flash-page {opt.flash_page}: expected a power of two in 16..1048576")
    if opt.accumulate < 1 or opt.accumulate > 1 << 16:
        raise TradyError(f"--accumulate {opt.accumulate}: expected an integer in 1..65536")
    if opt.target != "host":
        raise TradyError(f"--target {opt.target}: only 'host' is available (Cortex-M targets: trady firmware)")
    for conv in graph.convs:
        taps = conv.kernel * conv.kernel * (1 if conv.depthwise else conv.in_channels)
        if taps >= MAX_TAPS:
            raise TradyError(f"layer {conv.name}: {taps} taps per output would overflow the int32 accumulator")


def build(model: Path, opt: Options) -> Project:
    graph = tiny_training.load(model, opt.resolution)
    check_options(graph, opt)
    if opt.keep_head:
        if graph.head.classes != opt.classes:
            raise TradyError(f"{model}: --keep-head: the classifier has {graph.head.classes} classes, "
                             f"--classes is {opt.classes}")
    else:
        graph = dataclasses.replace(graph, head=init_head(graph, opt.classes, opt.seed))
    graph = graph.verify()
    q = quant.prepare(graph)
    topk = None if opt.topk == "all" else sampler.read_topk(Path(opt.topk), graph)
    pool = sampler.build_pool(graph, opt.strategy, topk, opt.budget)
    if pool.size and opt.budget < pool.min_cost():
        raise TradyError(f"--budget {opt.budget}: smaller than the cheapest channel of the pool "
                         f"({pool.min_cost()} units)")
    pool_units = sum(pool.cost(i) for i in range(pool.size))
    if pool.size and opt.strategy not in ("su",) and opt.budget >= pool_units:
        warn(f"--budget {opt.budget:,} covers the whole pool ({pool_units:,} units): every epoch selects everything")
    spec = training.train_spec(graph, pool, opt.budget, "ram", opt.flash_page, opt.accumulate)
    fwd = planner.plan(planner.forward_requests(graph))
    mem = planner.plan(planner.training_requests(graph, spec.first_op))
    pj = plan_json(graph, fwd, mem, opt, model, spec, topk)
    home = opt.weight_home
    if home == "auto":
        home = "flash" if pool.layers and pj["sram_bytes"]["total"] > TARGET_SRAM[opt.target] else "ram"
    if home == "flash" and pool.layers:  # (no pool, e.g. head-only: no conv weight is trainable, nothing to place)
        spec = dataclasses.replace(spec, weight_home="flash")
        pj = plan_json(graph, fwd, mem, opt, model, spec, topk)
    return Project(graph, q, mem, opt, pj, spec)


def plan_json(graph: Graph, fwd: planner.Plan, mem: planner.Plan, opt: Options, model: Path,
              spec: training.TrainSpec, topk: list[str] | None) -> dict:
    costs = layer_costs(graph)
    convs = graph.convs
    h = graph.head
    weights = sum(c.weight.size for c in convs)
    biases = 4 * sum(c.out_channels for c in convs)
    qparams = 8 * sum(c.out_channels for c in convs)
    head_init = 4 * (h.weight.size + h.bias.size)
    head_ram = head_init + 3 * 4 * h.features + 2 * 4 * h.classes  # weights, features, grads, logits
    pool = spec.pool
    trainable = sum(graph.convs[i].weight.size for i in pool.layers)
    first = spec.first_op
    mask_bytes = sum((graph.tensors[op.output].size + 7) // 8 for k, op in enumerate(graph.ops)
                     if k >= first and not isinstance(op, AvgPool))
    p8 = (pool.size + 7) // 8
    sampler_bytes = 2 * p8 + spec.sel_capacity * (2 + 4) + 4 * (len(convs) + 1) + 2 * 4
    flash_home = spec.weight_home == "flash"
    # flash home: per selection entry its channel (u16); per trainable conv one tt_weight_patch (5 words)
    patches = 2 * spec.sel_capacity + 5 * MCU_POINTER_BYTES * len(pool.layers) if flash_home else 0
    home_bytes = spec.flash_layout(graph)[1] if flash_home else trainable
    sram = {"activation_arena": fwd.arena_size, "backward_scratch": mem.arena_size - fwd.arena_size,
            "update_arena": spec.update_arena_bytes, "masks": mask_bytes, "head": head_ram,
            "sampler": sampler_bytes, "trainable_weights": 0 if flash_home else trainable,
            "weight_patches": patches, "flash_page_buffer": spec.flash_page if flash_home else 0,
            # --accumulate N > 1: an fp32 accumulator per update-arena byte (block offsets reused) and per head value
            "grad_accumulator": 4 * (spec.update_arena_bytes + h.weight.size + h.bias.size) if spec.accumulate > 1 else 0}
    return {
        "generator": f"trady {__version__}",
        "model": graph.name,
        "model_path": str(Path(model).resolve()),
        "source_sha256": graph.source_sha256,
        "options": dataclasses.asdict(opt),
        "resolution": graph.tensors[graph.input].shape[0],
        "classes": h.classes,
        "total_units": sum(c.units for c in costs),
        "budget_units": opt.budget,
        "macs": sum(c.macs for c in costs),
        "layers": [c.as_dict() | {"dead_out_channels": [int(i) for i in np.flatnonzero(conv.dead)]}
                   for c, conv in zip(costs, convs, strict=True)],
        "ops": [{"index": i, "name": op.name, "type": type(op).__name__, "output": op.output,
                 "size": graph.tensors[op.output].size} for i, op in enumerate(graph.ops)],
        "strategy": pool.strategy,
        "strategy_note": pool.note,
        "topk_layers": topk if topk is not None else "all",  # best first, as ranked
        "topk": {"k": len(topk), "ranking": topk} if topk is not None else None,
        "pool_layers": [graph.convs[i].name for i in pool.layers],
        "pool_channels": pool.size,
        "budget_bytes": spec.update_arena_bytes,
        "bytes_per_activation_slot": spec.bytes_per_activation_slot,
        "bytes_per_weight_slot": spec.bytes_per_weight_slot,
        "weight_home": spec.weight_home,
        "accumulate": spec.accumulate,
        "flash_page_bytes": spec.flash_page if flash_home else None,
        "selection_capacity": spec.sel_capacity,
        "backward_first_op": first,
        "arena_bytes": mem.arena_size,
        "buffers": [dataclasses.asdict(p) for p in mem.placements],
        "sram_bytes": sram | {"total": sum(sram.values())},
        "flash_bytes": {"weights": weights - trainable, "biases": biases, "quant_params": qparams,
                        "head_init": head_init, "trainable_weights_init": home_bytes,
                        "total": weights - trainable + home_bytes + biases + qparams + head_init},
    }


def write(project: Project, out: Path) -> Path:
    """Write the project into `out` atomically (temporary sibling, then rename)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    files = emit.render(project.graph, project.quant, project.plan, project.spec)
    name = emit.model_c_name(project.graph)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp makes it 0700; the result should look like any new folder
    try:
        for rel, text in files.items():
            (tmp / rel).write_text(text)
        (tmp / "runtime").mkdir()
        for rel, src in emit.support_files().items():
            shutil.copyfile(src, tmp / rel)
        (tmp / f"{name}_plan.json").write_text(json.dumps(project.plan_json, indent=1) + "\n")
        if out.exists():
            old = out.with_name(f".{out.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def plan_path(folder: Path) -> Path:
    folder = Path(folder)
    found = sorted(folder.glob("*_plan.json")) if folder.is_dir() else []
    if len(found) != 1:
        raise TradyError(f"{folder}: not a compiled project (expected one *_plan.json, found {len(found)})")
    return found[0]


def load_project(folder: Path, model: Path | None = None) -> Project:
    """Rebuild the compiled graph from a project folder's plan (same model file, same options)."""
    pj = plan_path(folder)
    try:
        meta = json.loads(pj.read_text())
        opt = Options(**meta["options"])
        model = Path(model or meta["model_path"])
    except (ValueError, KeyError, TypeError) as e:
        raise TradyError(f"{pj}: unreadable plan ({e})") from None
    if not model.is_file():
        raise TradyError(f"{pj}: model file {model} not found (pass --model)")
    if hashlib.sha256(model.read_bytes()).hexdigest() != meta.get("source_sha256"):
        raise TradyError(f"{model}: sha256 differs from the one recorded in {pj.name}")
    return build(model, opt)


def warn(msg: str) -> None:
    print(f"warning: {msg}", file=sys.stderr)
