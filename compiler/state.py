"""Trained state files (SPEC 8): parse and check them, and turn them into an updated model file.

The file is written by the generated `<model>_state_save` (format in runtime_c/tt_state.h); this
module reads it back for a compiled project, checking magic, version, model id, length and CRC32,
and `export_model` folds the weight residuals (round to nearest) into the int8 weights and writes
a tiny-training model file with the trained convs and the head (quantised to int8 per class).
"""

from __future__ import annotations

import io
import os
import pickle
import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from compiler.emit import c_weight, model_id
from compiler.errors import TradyError
from compiler.importers import tiny_training
from compiler.pipeline import Project

MAGIC, VERSION = 0x54535454, 1


@dataclass(frozen=True, eq=False)
class TrainedState:
    step: int
    epoch: int
    lr: float
    weights: dict[int, np.ndarray]  # conv index -> int8 weights in the emitted C layout
    head_weight: np.ndarray
    head_bias: np.ndarray
    selection: list[int]  # pool indices
    residuals: list[np.ndarray]  # per selection entry, slice order: RAM home: int8 residual in 1/256 LSB;
    #                              flash home: the int8 working copy of the slice (the home lags it)


def read(path: Path, project: Project) -> TrainedState:
    raw = Path(path).read_bytes() if Path(path).is_file() else None
    if raw is None:
        raise TradyError(f"{path}: state file not found")
    if len(raw) < 20:
        raise TradyError(f"{path}: {len(raw)} bytes is too short for a trained state")
    magic, version, file_id, length = struct.unpack_from("<4I", raw)
    want_id = model_id(project.graph, project.spec)
    for field, got, want in (("magic", magic, MAGIC), ("version", version, VERSION), ("model id", file_id, want_id),
                             ("length", length, len(raw))):
        if got != want:
            raise TradyError(f"{path}: header field {field} is {got:#x}, expected {want:#x} for this compiled project")
    (crc,) = struct.unpack_from("<I", raw, len(raw) - 4)
    if crc != zlib.crc32(raw[:-4]):
        raise TradyError(f"{path}: CRC32 mismatch ({crc:#010x} stored, {zlib.crc32(raw[:-4]):#010x} computed): corrupted")
    pos = 16
    step, epoch, _, _, _, _, lr_bits = struct.unpack_from("<7I", raw, pos)
    pos += 28
    g, pool = project.graph, project.spec.pool
    weights = {}
    for i in pool.layers:
        conv, size = struct.unpack_from("<2I", raw, pos)
        want = c_weight(g.convs[i])
        if (conv, size) != (i, want.size):
            raise TradyError(f"{path}: weights section names conv {conv} of {size} bytes, expected {i} of {want.size}")
        weights[i] = np.frombuffer(raw, np.int8, size, pos + 8).reshape(want.shape).copy()
        pos += 8 + size
    classes, feats = struct.unpack_from("<2I", raw, pos)
    if (classes, feats) != (g.head.classes, g.head.features):
        raise TradyError(f"{path}: head is {classes}x{feats}, expected {g.head.classes}x{g.head.features}")
    pos += 8
    hw = np.frombuffer(raw, np.float32, classes * feats, pos).reshape(classes, feats).copy()
    pos += 4 * classes * feats
    hb = np.frombuffer(raw, np.float32, classes, pos).copy()
    pos += 4 * classes
    (count,) = struct.unpack_from("<I", raw, pos)
    sel = list(struct.unpack_from(f"<{count}I", raw, pos + 4))
    pos += 4 + 4 * count
    residuals, sizes = [], []
    for e in sel:
        conv = g.convs[int(pool.entry_layer[e])]
        n = conv.kernel * conv.kernel * (1 if conv.depthwise else conv.out_channels)
        residuals.append(np.frombuffer(raw, np.int8, n, pos).copy())
        sizes.append(n)
        pos += n
    if project.spec.accumulate > 1:  # pending gradient sums (not part of an exported model): skipped
        pos += 8 + 4 * (classes * feats + classes) + 4 * sum(sizes)
    if pos != len(raw) - 4:
        raise TradyError(f"{path}: {len(raw) - 4 - pos} unexpected bytes before the CRC")
    return TrainedState(step, epoch, float(np.array(lr_bits, np.uint32).view(np.float32)), weights, hw, hb, sel,
                        residuals)


def folded_weights(project: Project, state: TrainedState) -> dict[int, np.ndarray]:
    """Trainable conv weights (OIHW, int8) as trained: with a RAM home each residual rounded to the nearest LSB,
    with a flash home the working copies of the selected slices in place of the home."""
    g, pool = project.graph, project.spec.pool
    flash = project.spec.weight_home == "flash"
    out = {}
    for i, w in state.weights.items():
        conv = g.convs[i]
        if conv.depthwise:
            oihw = w.transpose(2, 0, 1)[:, None].astype(np.int32)
        elif conv.kernel == 1:
            oihw = w[:, :, None, None].astype(np.int32)
        else:
            oihw = w.transpose(0, 3, 1, 2).astype(np.int32)
        out[i] = oihw
    for e, r in zip(state.selection, state.residuals, strict=True):
        i, c = int(pool.entry_layer[e]), int(pool.entry_channel[e])
        conv = g.convs[i]
        view = out[i][c, 0] if conv.depthwise else out[i][:, c]
        if flash:
            view[...] = r.reshape(view.shape)
        else:
            view += np.floor(r.astype(np.float64) / 256 + 0.5).astype(np.int32).reshape(view.shape)
    return {i: np.clip(w, -127, 127).astype(np.int8) for i, w in out.items()}


def export_model(project: Project, state: TrainedState, model_path: Path, out: Path) -> Path:
    """Write a tiny-training model file with the trained weights and head (int8 per-class symmetric)."""
    d = tiny_training.load_dict(model_path)
    g = project.graph
    folded = folded_weights(project, state)
    specs = [d["first_conv"]] + [blk[p] for blk in d["blocks"] for p in ("pointwise1", "depthwise", "pointwise2")
                                 if blk.get(p) is not None]
    if d.get("feature_mix") is not None:
        specs.append(d["feature_mix"])
    if len(specs) != len(g.convs):
        raise TradyError(f"{model_path}: {len(specs)} convs in the file, {len(g.convs)} in the compiled graph")
    for i, w in folded.items():
        specs[i]["params"]["weight"] = w
    feat = g.tensors[g.head.input]
    x_scale = float(np.float32(feat.scale))
    w_s = np.maximum(np.abs(state.head_weight).max(axis=1), 1e-12) / 127.0
    cls = d["classifier"]
    cls["out_channel"] = g.head.classes
    cls["params"] = {
        "weight": np.clip(np.round(state.head_weight / w_s[:, None]), -127, 127).astype(np.int8)[:, :, None, None],
        "bias": np.round(state.head_bias / (x_scale * w_s)).astype(np.int32),
        "x_scale": feat.scale, "x_zero": feat.zero,
        "y_scale": 1.0, "y_zero": 0,  # unused: trady's head is fp32 on the dequantised features
        "w_scales": w_s.astype(np.float32),
    }
    buf = io.BytesIO()
    pickle.dump(d, buf, protocol=2)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", buf.getvalue())
        z.writestr("archive/version", "3\n")
    os.replace(tmp, out)
    return out
