"""Stage 9, reports: a compiled project's `*_plan.json` -> text summary, Markdown and PNG (SPEC 10).

Everything here reads the plan dictionary that `pipeline.plan_json` wrote, never the graph, so a
report can be made from a project folder alone. Parts of the SRAM and flash totals are rendered
from whatever keys the plan holds (the training runtime adds update arena, backward scratch,
masks, sampler and stack later), so this module does not change when the planner grows.

`write(folder)` produces `report.md` and `memory_map.png` in the folder, each written to a
temporary file and renamed into place.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path

from compiler import emit, planner
from compiler.errors import TradyError

REPORT_MD = "report.md"
MEMORY_PNG = "memory_map.png"

# Human names for the parts the planner writes today and the ones SPEC 10 lists for later.
SRAM_PARTS = {
    "activation_arena": "activation arena (forward pass)",
    "update_arena": "update arena (budget B_mem)",
    "backward_scratch": "backward scratch",
    "masks": "clamp masks (1 bit per output)",
    "head": "head (fp32 weights, bias, features)",
    "trainable_weights": "trainable weights (RAM home, SPEC 8)",
    "weight_patches": "weight patches (flash home: channel + slice pointer per entry)",
    "flash_page_buffer": "flash page buffer (flash home write-back)",
    "sampler": "sampler (pool bitset, selection)",
    "stack": "stack",
}
FLASH_PARTS = {
    "weights": "frozen weights (int8)",
    "biases": "biases (int32)",
    "quant_params": "quantisation params (multiplier, shift)",
    "head_init": "head initial values (fp32)",
    "trainable_weights_init": "trainable weights: initial values (RAM home) or the home itself (flash, page padded)",
    "code": "code",
}
KIND_COLOURS = {
    "input": "#9e9e9e",
    "conv": "#1f77b4",
    "pointwise": "#2ca02c",
    "depthwise": "#ff7f0e",
    "add": "#9467bd",
    "pool": "#d62728",
    "gradient": "#17becf",
    "gradient (int)": "#bcbd22",
    "other": "#8c564b",
}


def print_summary(plan: dict) -> None:
    sram, flash = plan["sram_bytes"], plan["flash_bytes"]
    print(f"model {plan['model']} @ {plan['resolution']}px, {len(plan['layers'])} convs, "
          f"{plan['macs'] / 1e6:.1f} M MACs, {plan['classes']} classes")
    print(f"units: total {plan['total_units']:,}, budget {plan['budget_units']:,}")
    if plan.get("weight_home") == "flash":
        print(f"trainable weights: flash home, written back through a {plan['flash_page_bytes']:,}-byte page buffer "
              f"at each resampling (SPEC 8)")
    print("SRAM bytes: " + ", ".join(f"{k} {v:,}" for k, v in sram.items()))
    print("flash bytes: " + ", ".join(f"{k} {v:,}" for k, v in flash.items()))


def load_plan(folder: Path) -> dict:
    """The plan dictionary of a compiled project folder; TradyError names the file if unreadable."""
    from compiler.pipeline import plan_path

    pj = plan_path(Path(folder))
    try:
        plan = json.loads(pj.read_text())
    except (OSError, ValueError) as e:
        raise TradyError(f"{pj}: unreadable plan ({e})") from None
    need = ("model", "layers", "ops", "buffers", "sram_bytes", "flash_bytes", "total_units", "macs")
    missing = [k for k in need if k not in plan] if isinstance(plan, dict) else list(need)
    if missing:
        raise TradyError(f"{pj}: not a trady plan (missing {', '.join(missing)})")
    return plan


def memory_plan(plan: dict) -> planner.Plan:
    """The planner's `Plan` rebuilt from the plan's "buffers" list."""
    placements = tuple(planner.Placement(b["name"], int(b["offset"]), int(b["size"]), int(b["first"]),
                                         int(b["last"])) for b in plan["buffers"])
    extent = max((p.offset + p.size for p in placements), default=0)
    arena = int(plan.get("arena_bytes", plan["sram_bytes"].get("activation_arena", extent)))
    return planner.Plan(placements, max(arena, extent))


def steps(plan: dict) -> int:
    """Columns of the memory map: one per forward op, the head, then any backward steps."""
    return max(len(plan["ops"]) + 1, max((b["last"] + 1 for b in plan["buffers"]), default=0))


def schedule_note(plan: dict) -> str:
    """What a step of the memory map is (the planner's schedule: forward, head, backward)."""
    n = len(plan["ops"])
    note = f"step i < {n} runs forward op i, step {n} the head"
    if steps(plan) > n + 1:
        note += f", step {2 * n} − k the backward of op k"
    return note


def parts_with_total(parts: dict[str, int]) -> tuple[list[tuple[str, int]], int]:
    """(key, bytes) for every part except "total", and the total (recorded, else the sum)."""
    items = [(k, int(v)) for k, v in parts.items() if k != "total"]
    return items, int(parts.get("total", sum(v for _, v in items)))


def topk_meta(plan: dict) -> dict | None:
    """The TopK metadata compile recorded (`{"k": K, "ranking": [...]}`, SPEC 6), or None."""
    meta = plan.get("topk")
    return meta if isinstance(meta, dict) and isinstance(meta.get("ranking"), list) else None


def topk_ranks(plan: dict) -> tuple[dict[str, int], int]:
    """(layer name -> 1-based rank, K); no ranks without TopK metadata (the table shows "-")."""
    meta = topk_meta(plan)
    if meta is None:
        return {}, 0
    names = [layer["name"] for layer in plan["layers"]]
    ranks: dict[str, int] = {}
    for r, entry in enumerate(meta["ranking"], start=1):
        if isinstance(entry, dict):
            entry = entry.get("layer", entry.get("name", entry.get("index")))
        if isinstance(entry, int) and 0 <= entry < len(names):
            entry = names[entry]
        if isinstance(entry, str):
            ranks.setdefault(entry, r)
    k = meta.get("k", len(ranks))
    return ranks, k if isinstance(k, int) else len(ranks)


def in_place(plan: dict) -> dict[str, str]:
    """Residual-add outputs computed in place: buffer -> the input buffer whose bytes it reuses.

    The planner gives such a pair one offset and lifetimes that meet at the add's step.
    """
    kinds = _kinds(plan)
    bufs = plan["buffers"]
    return {b["name"]: a["name"] for b in bufs if kinds.get(b["name"]) == "add" for a in bufs
            if a is not b and a["offset"] == b["offset"] and a["last"] == b["first"] and a["first"] < b["first"]}


def _shape(s: list[int]) -> str:
    return "×".join(str(v) for v in s)


def _table(header: list[str], rows: list[list[str]], right: set[int] = frozenset()) -> list[str]:
    align = ["---:" if i in right else "---" for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return lines


def markdown(plan: dict) -> str:
    """The report as Markdown: totals, flash and SRAM parts, per-layer table, memory map."""
    layers = plan["layers"]
    flash, flash_total = parts_with_total(plan["flash_bytes"])
    sram, sram_total = parts_with_total(plan["sram_bytes"])
    units = sum(layer["units"] for layer in layers)
    macs = sum(layer["macs"] for layer in layers)
    budget = int(plan.get("budget_units", 0))
    sha = str(plan.get("source_sha256", ""))[:16]
    out = [f"# Memory report: {plan['model']}", "",
           (f"{plan.get('generator', 'trady')}, model {plan['model']} (sha256 {sha}), "
            f"{plan.get('resolution', '?')} px input, {plan.get('classes', '?')} classes."), ""]

    budget_text = f"{budget:,} units" + (f" ({100 * budget / units:.2f} % of all)" if units else "")
    if "budget_bytes" in plan:
        budget_text += f", {plan['budget_bytes']:,} bytes"
    rows = [["convs (classifier excluded)", f"{len(layers)}"],
            ["forward MACs (convs)", f"{macs:,}"],
            ["update cost, all channels (Σ C_W + C_A)", f"{units:,} units"],
            ["budget B_mem", budget_text]]
    if "strategy" in plan:
        pool = f", pool {plan['pool_channels']:,} channels" if "pool_channels" in plan else ""
        if isinstance(plan.get("pool_layers"), list):
            pool += f" in {len(plan['pool_layers'])} layers"
        rows.append(["strategy", f"{plan['strategy']}{pool}"])
    rows += [["SRAM", f"{sram_total:,} bytes"], ["flash (data; code not included)", f"{flash_total:,} bytes"]]
    out += ["## Totals", ""]
    out += _table(["quantity", "value"], rows, right={1})

    out += ["", "## Flash (bytes)", ""]
    rows = [[FLASH_PARTS.get(k, k.replace("_", " ")), f"{v:,}"] for k, v in flash]
    if "code" not in plan["flash_bytes"]:
        rows.append(["code", "measured by the firmware build (`trady firmware`)"])
    rows.append(["**total**", f"**{flash_total:,}**"])
    out += _table(["part", "bytes"], rows, right={1})

    out += ["", "## SRAM (bytes)", ""]
    rows = [[SRAM_PARTS.get(k, k.replace("_", " ")), f"{v:,}"] for k, v in sram]
    rows.append(["**total**", f"**{sram_total:,}**"])
    out += _table(["part", "bytes"], rows, right={1})
    later = [SRAM_PARTS[k] for k in SRAM_PARTS if k not in plan["sram_bytes"]]
    if later:
        out += ["", "Not in this plan yet: " + ", ".join(later) + "."]
    if "head" in plan["sram_bytes"]:
        out += ["The head is always trained and is not part of B_mem (SPEC 5)."]

    out += ["", "## Layers", "",
            ("C_W, C_A: weight and activation slots per input channel; units = (C_W + C_A) × input "
             "channels; dead: dead input / output channels (never updated, SPEC 3)."), ""]
    ranks, k = topk_ranks(plan)
    if ranks:
        out += [f"TopK rank: layer rank by RGN (SPEC 6); K = {k}; ranks in parentheses are outside the top K.", ""]
    rows = []
    for layer in layers:
        rank = ranks.get(layer["name"])
        rank = None if rank is None else (str(rank) if rank <= k else f"({rank})")
        rows.append([str(layer["index"]), f"`{layer['name']}`", layer["kind"], _shape(layer["in_shape"]),
                     _shape(layer["out_shape"]), f"{layer['kernel']}/{layer['stride']}", f"{layer['macs']:,}",
                     f"{layer['C_W']:,}", f"{layer['C_A']:,}", f"{layer['units']:,}",
                     f"{len(layer.get('dead_in_channels', []))}/{len(layer.get('dead_out_channels', []))}",
                     "-" if rank is None else rank])
    rows.append(["", "**total**", "", "", "", "", f"**{macs:,}**", "", "", f"**{units:,}**", "", ""])
    out += _table(["#", "name", "kind", "in (H×W×C)", "out (H×W×C)", "k/s", "MACs", "C_W", "C_A", "units",
                   "dead in/out", "TopK rank"], rows, right={0, 6, 7, 8, 9})

    mem = memory_plan(plan)
    n_steps = steps(plan)
    out += ["", "## Memory map", "",
            (f"One static arena of {mem.arena_size:,} bytes, {len(mem.placements)} buffers over {n_steps} steps "
             f"({schedule_note(plan)}). Buffers share bytes only when their live steps do not intersect."),
            ""]
    alias = in_place(plan)
    out += _table(["buffer", "offset", "bytes", "live steps"],
                  [[f"`{p.name}`", f"{p.offset:,}", f"{p.size:,}", f"{p.first}..{p.last}"
                    + (f" (in place over `{alias[p.name]}`)" if p.name in alias else "")] for p in mem.placements],
                  right={1, 2})
    out += ["", "Timeline (one column per step; each row is a slice of the arena, '#' = in use):", "", "```"]
    out += emit.timeline(mem, n_steps)
    out += ["```", ""]
    return "\n".join(out)


def _kinds(plan: dict) -> dict[str, str]:
    """Buffer name -> kind for colouring (conv kinds, add, pool, input)."""
    kinds = {op["output"]: {"Add": "add", "AvgPool": "pool"}.get(op["type"], "conv") for op in plan["ops"]}
    kinds.update({layer["name"]: layer["kind"] for layer in plan["layers"]})
    for b in plan["buffers"]:
        prefix = b["name"].split(":", 1)[0] if ":" in b["name"] else None
        if prefix is not None:
            kinds[b["name"]] = "gradient" if prefix == "grad" else "gradient (int)" if prefix == "gradq" else "other"
    return kinds


def short_name(name: str) -> str:
    """A compact label: blocks.3.pointwise1 -> b3.pw1."""
    for long, short in (("blocks.", "b"), ("pointwise", "pw"), ("depthwise", "dw"), ("residual", "res"),
                        ("first_conv", "conv0"), ("feature_mix", "mix"), ("gradq:", "gq:"), ("grad:", "g:")):
        name = name.replace(long, short)
    return name


def figure(plan: dict):
    """The two-panel figure: arena occupancy over steps, and per-layer MACs / update units."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch, Rectangle

    mem = memory_plan(plan)
    n_steps = steps(plan)
    kinds = _kinds(plan)
    fig = Figure(figsize=(16, 11), dpi=110, layout="constrained")
    canvas = FigureCanvasAgg(fig)
    ax, bx = fig.subplots(2, 1, height_ratios=[3, 2])
    kib = 1024.0

    ax.set_xlim(-0.5, n_steps - 0.5)
    ax.set_ylim(0, max(mem.arena_size, 1) / kib * 1.12)
    rects = []
    alias = in_place(plan)
    for p in mem.placements:
        colour = KIND_COLOURS.get(kinds.get(p.name, "input"), KIND_COLOURS["input"])
        r = Rectangle((p.first - 0.45, p.offset / kib), p.last - p.first + 0.9, p.size / kib,
                      facecolor=colour, edgecolor="black", linewidth=0.6, alpha=0.75,
                      hatch="///" if p.name in alias else None)
        ax.add_patch(r)
        rects.append((p, r))
    ax.axhline(mem.arena_size / kib, color="black", linestyle="--", linewidth=0.8)
    ax.text(-0.4, mem.arena_size / kib, f" arena size {mem.arena_size:,} bytes", ha="left", va="bottom",
            fontsize=9)
    n_ops = len(plan["ops"])
    if n_steps > n_ops + 1:
        ax.axvline(n_ops, color="black", linewidth=0.8, linestyle=":")
        ax.text(n_ops, mem.arena_size / kib * 1.06, "head  ", ha="right", va="center", fontsize=9)
        ax.text(n_ops, mem.arena_size / kib * 1.06, "  backward →", ha="left", va="center", fontsize=9)
    ax.set_xlabel(f"step ({schedule_note(plan)}; hatched: residual add computed in place over its input)")
    ax.set_ylabel("arena offset (KiB)")
    ax.set_title(f"{plan['model']}: arena {mem.arena_size:,} bytes ({len(mem.placements)} buffers), "
                 f"SRAM total {parts_with_total(plan['sram_bytes'])[1]:,} bytes", loc="left")
    ax.set_xticks(range(0, n_steps, 2 if n_steps <= 80 else 5))
    ax.tick_params(axis="x", labelsize=8)
    ax.grid(axis="x", linewidth=0.3, alpha=0.5)
    used = sorted({kinds.get(p.name, "input") for p in mem.placements}, key=list(KIND_COLOURS).index)
    ax.legend(handles=[Patch(facecolor=KIND_COLOURS[k], edgecolor="black", alpha=0.75, label=k) for k in used],
              loc="lower right", bbox_to_anchor=(1.0, 1.0), fontsize=8, ncols=len(used), frameon=False)

    # Label a buffer only where its text fits inside the rectangle (horizontal, else rotated).
    fig.draw_without_rendering()
    renderer = canvas.get_renderer()
    for p, r in rects:
        (x0, y0), (x1, y1) = ax.transData.transform([(r.get_x(), r.get_y()),
                                                      (r.get_x() + r.get_width(), r.get_y() + r.get_height())])
        cx, cy = r.get_x() + r.get_width() / 2, r.get_y() + r.get_height() / 2
        backdrop = {"facecolor": "white", "alpha": 0.8, "edgecolor": "none", "pad": 0.5}
        t = ax.text(cx, cy, short_name(p.name), ha="center", va="center", fontsize=7, clip_on=True,
                    bbox=backdrop if p.name in alias else None)
        box = t.get_window_extent(renderer)
        if box.width + 2 <= x1 - x0 and box.height + 2 <= y1 - y0:
            continue
        if box.height + 2 <= x1 - x0 and box.width + 2 <= y1 - y0:
            t.set_rotation(90)
            continue
        t.remove()

    layers = plan["layers"]
    idx = [layer["index"] for layer in layers]
    width = 0.4
    bx.bar([i - width / 2 for i in idx], [layer["macs"] / 1e6 for layer in layers], width,
           color="#1f77b4", label="MACs (M, left axis)")
    bx.set_ylabel("forward MACs (millions)")
    bx.set_ylim(0, max((layer["macs"] for layer in layers), default=1) / 1e6 * 1.18)
    ux = bx.twinx()
    ux.bar([i + width / 2 for i in idx], [layer["units"] / 1e3 for layer in layers], width,
           color="#ff7f0e", label="C_W + C_A units (k, right axis)")
    ux.set_ylabel("update cost, all input channels (thousand units)")
    ux.set_ylim(0, max((layer["units"] for layer in layers), default=1) / 1e3 * 1.18)
    bx.set_xticks(idx, [f"{i} {short_name(layer['name'])}" for i, layer in zip(idx, layers, strict=True)],
                  rotation=90, fontsize=7)
    bx.set_xlim(min(idx, default=0) - 0.7, max(idx, default=0) + 0.7)
    bx.set_xlabel("conv layer (index, name)")
    bx.set_title(f"per-layer cost: {plan['macs']:,} MACs, {plan['total_units']:,} units in all, "
                 f"budget {plan.get('budget_units', 0):,} units")
    handles = bx.get_legend_handles_labels()[0] + ux.get_legend_handles_labels()[0]
    bx.legend(handles=handles, loc="upper center", fontsize=8, ncols=2)
    bx.grid(axis="y", linewidth=0.3, alpha=0.5)
    return fig


def png_bytes(plan: dict) -> bytes:
    buf = io.BytesIO()
    figure(plan).savefig(buf, format="png")
    return buf.getvalue()


def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to a temporary file next to `path`, then rename it into place."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    except OSError as e:
        raise TradyError(f"{path}: cannot write ({e.strerror})") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise TradyError(f"{path}: cannot write ({e.strerror})") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write(folder: Path) -> tuple[str, Path, Path]:
    """Write `report.md` and `memory_map.png` into a compiled project folder; return (Markdown, paths)."""
    folder = Path(folder)
    plan = load_plan(folder)
    text = markdown(plan)
    png = png_bytes(plan)  # render both before writing either
    md_path, png_path = folder / REPORT_MD, folder / MEMORY_PNG
    write_atomic(md_path, text.encode())
    write_atomic(png_path, png)
    return text, md_path, png_path
