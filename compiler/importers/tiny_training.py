"""Stage 1, importer: a tiny-training int8 model file (`*.pkl`) -> `ir.Graph`.

The file is a torch zip archive holding one pickle of plain dicts, lists, numbers, strings and
numpy arrays (SPEC 3). It is read with `zipfile` and a restricted unpickler that resolves only the
four globals numpy needs to rebuild an array; anything else (os.system, torch storages, object
arrays) is refused before it can run. Every field is then checked for type, dtype and shape, and
each failure names the file, the key path and what was expected versus found.
"""

from __future__ import annotations

import codecs
import hashlib
import io
import pickle
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from compiler.errors import TradyError
from compiler.ir import Add, AvgPool, Conv, Graph, Head, Tensor

_NUMERIC_DTYPES = {"i1", "u1", "i2", "i4", "i8", "f4", "f8", "b1"}
_MAX_PICKLE_BYTES = 256 << 20


class ImportError_(TradyError):
    """The model file is malformed or unsafe."""


def _checked_dtype(spec: Any, align: bool = False, copy: bool = False) -> np.dtype:
    if spec not in _NUMERIC_DTYPES:
        raise pickle.UnpicklingError(f"array dtype {spec!r} (only numeric dtypes are accepted)")
    return np.dtype(spec, align=align, copy=copy)


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    if encoding != "latin1" or not isinstance(text, str):
        raise pickle.UnpicklingError(f"_codecs.encode({type(text).__name__}, {encoding!r})")
    return codecs.encode(text, "latin1")


_SAFE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): np._core.multiarray._reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): np._core.multiarray._reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): _checked_dtype,
    ("_codecs", "encode"): _latin1_encode,
}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        try:
            return _SAFE_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed") from None

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("persistent ids (torch tensor storages) are not allowed")


def load_dict(path: Path) -> dict:
    """Read the pickled dict from a tiny-training model file, safely."""
    try:
        with zipfile.ZipFile(path) as z:
            pkls = [i for i in z.infolist() if i.filename.endswith("data.pkl")]
            if len(pkls) != 1:
                raise ImportError_(f"{path}: expected one */data.pkl in the zip archive, found {len(pkls)}")
            if pkls[0].file_size > _MAX_PICKLE_BYTES:
                raise ImportError_(f"{path}: data.pkl is {pkls[0].file_size} bytes, limit {_MAX_PICKLE_BYTES}")
            payload = z.read(pkls[0])
    except (zipfile.BadZipFile, OSError) as e:
        raise ImportError_(f"{path}: not a readable torch zip archive ({e})") from None
    try:
        obj = _RestrictedUnpickler(io.BytesIO(payload)).load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError,
            KeyError, MemoryError) as e:
        raise ImportError_(f"{path}: refused to unpickle: {e}") from None
    if not isinstance(obj, dict):
        raise ImportError_(f"{path}: top level: expected dict, found {type(obj).__name__}")
    return obj


class _Reader:
    """Typed access to the nested dict; errors name file and key path."""

    def __init__(self, path: Path):
        self.path = path

    def fail(self, where: str, expected: str, found: Any) -> None:
        if isinstance(found, np.ndarray):
            desc = f"array {found.shape} {found.dtype}"
        else:
            desc = f"{type(found).__name__} {found!r}"[:80]
        raise ImportError_(f"{self.path.name}: {where}: expected {expected}, found {desc}")

    def get(self, d: dict, key: str, where: str) -> Any:
        if not isinstance(d, dict):
            self.fail(where, "dict", d)
        if key not in d:
            raise ImportError_(f"{self.path.name}: {where}.{key}: missing key")
        return d[key]

    def int_(self, d: dict, key: str, where: str) -> int:
        v = self.get(d, key, where)
        if isinstance(v, tuple) and len(v) == 2 and v[0] == v[1]:
            v = v[0]
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            self.fail(f"{where}.{key}", "int", v)
        return int(v)

    def float_(self, d: dict, key: str, where: str) -> float:
        v = self.get(d, key, where)
        if isinstance(v, bool) or not isinstance(v, (int, float, np.floating, np.integer)):
            self.fail(f"{where}.{key}", "number", v)
        v = float(v)
        if not np.isfinite(v):
            self.fail(f"{where}.{key}", "finite number", v)
        return v

    def scale(self, d: dict, key: str, where: str) -> float:
        v = self.float_(d, key, where)
        if not v > 0:
            self.fail(f"{where}.{key}", "a positive scale", v)
        return v

    def zero(self, d: dict, key: str, where: str) -> int:
        v = self.int_(d, key, where)
        if not -128 <= v <= 127:
            self.fail(f"{where}.{key}", "an int8 zero point in [-128, 127]", v)
        return v

    def array(self, d: dict, key: str, where: str, dtype: type, shape: tuple) -> np.ndarray:
        v = self.get(d, key, where)
        if not isinstance(v, np.ndarray) or v.dtype != dtype or v.shape != shape:
            self.fail(f"{where}.{key}", f"array {shape} {np.dtype(dtype)}", v)
        return np.ascontiguousarray(v)


def load(path: str | Path, resolution: int | None = None) -> Graph:
    """Import a tiny-training model as a verified IR graph at the given input resolution."""
    path = Path(path)
    if not path.is_file():
        raise ImportError_(f"{path}: model file not found")
    raw = path.read_bytes()
    d = load_dict(path)
    r = _Reader(path)
    first = r.get(d, "first_conv", "model")
    native = r.int_(first, "in_shape", "first_conv")
    res = native if resolution is None else resolution
    if res < 8 or res > 1024:
        raise ImportError_(f"{path.name}: resolution {res}: expected 8..1024")

    fp = r.get(first, "params", "first_conv")
    in_ch = r.int_(first, "in_channel", "first_conv")
    tensors: dict[str, Tensor] = {}
    ops: list = []
    tensors["input"] = Tensor("input", (res, res, in_ch), r.scale(fp, "x_scale", "first_conv.params"),
                              r.zero(fp, "x_zero", "first_conv.params"))

    def conv(spec: dict, name: str, x: str, where: str) -> str:
        """Import one conv; `name` is the IR op name, `where` its key path in the file for messages."""
        p = r.get(spec, "params", where)
        cin, cout = r.int_(spec, "in_channel", where), r.int_(spec, "out_channel", where)
        k, stride, groups = (r.int_(spec, key, where) for key in ("kernel_size", "stride", "groups"))
        if k < 1 or k % 2 != 1:
            r.fail(f"{where}.kernel_size", "an odd integer >= 1", spec["kernel_size"])
        if stride < 1:
            r.fail(f"{where}.stride", "an integer >= 1", spec["stride"])
        if groups not in (1, cin) or (groups == cin != 1 and cin != cout):
            r.fail(f"{where}.groups", f"1 or {cin} (depthwise)", groups)
        dw = groups == cin and groups > 1
        w = r.array(p, "weight", f"{where}.params", np.int8, (cout, 1 if dw else cin, k, k))
        b = r.array(p, "bias", f"{where}.params", np.int32, (cout,))
        ws = r.array(p, "w_scales", f"{where}.params", np.float32, (cout,))
        if not np.all(np.isfinite(ws)) or np.any(ws <= 0):
            r.fail(f"{where}.params.w_scales", "finite positive scales", ws)
        xin = tensors[x]
        for key, want in (("x_scale", xin.scale), ("x_zero", xin.zero)):
            got = r.float_(p, key, f"{where}.params")
            if abs(got - want) > 1e-6 * abs(want):
                r.fail(f"{where}.params.{key}", f"{want} (the producer's output quantisation)", got)
        in_shape = spec.get("in_shape")
        if in_shape is not None and res == native and r.int_(spec, "in_shape", where) != xin.shape[0]:
            r.fail(f"{where}.in_shape", str(xin.shape[0]), spec["in_shape"])
        kind = "depthwise" if dw else ("pointwise" if k == 1 else "conv")
        pad = (k - 1) // 2
        ho = (xin.shape[0] + 2 * pad - k) // stride + 1
        wo = (xin.shape[1] + 2 * pad - k) // stride + 1
        tensors[name] = Tensor(name, (ho, wo, cout), r.scale(p, "y_scale", f"{where}.params"),
                               r.zero(p, "y_zero", f"{where}.params"))
        ops.append(Conv(name, kind, x, name, w, b, ws, stride))
        return name

    x = conv(first, "first_conv", "input", "first_conv")
    blocks = r.get(d, "blocks", "model")
    if not isinstance(blocks, list) or not blocks:
        r.fail("blocks", "non-empty list", blocks)
    for i, blk in enumerate(blocks):
        where = f"blocks[{i}]"
        if not isinstance(blk, dict):
            r.fail(where, "dict", blk)
        if blk.get("se") is not None:
            raise ImportError_(f"{path.name}: {where}.se: squeeze-excite blocks are not supported")
        block_in = x
        for part in ("pointwise1", "depthwise", "pointwise2"):
            if blk.get(part) is not None:
                x = conv(blk[part], f"blocks.{i}.{part}", x, f"{where}.{part}")
        res_spec = blk.get("residual")
        if res_spec is not None:
            p = r.get(res_spec, "params", f"{where}.residual")
            sc = tensors[block_in]
            got = r.float_(p, "x_scale", f"{where}.residual.params")
            if abs(got - sc.scale) > 1e-6 * sc.scale or r.int_(p, "x_zero", f"{where}.residual.params") != sc.zero:
                r.fail(f"{where}.residual.params.x_scale", f"{sc.scale} (the block input's)", got)
            if tensors[block_in].shape != tensors[x].shape:
                r.fail(f"{where}.residual", f"the block output shape {tensors[x].shape} on the block input",
                       tensors[block_in].shape)
            name = f"blocks.{i}.residual"
            tensors[name] = Tensor(name, tensors[x].shape, r.scale(p, "y_scale", f"{where}.residual.params"),
                                   r.zero(p, "y_zero", f"{where}.residual.params"))
            ops.append(Add(name, (block_in, x), name))
            x = name
    if d.get("feature_mix") is not None:
        x = conv(d["feature_mix"], "feature_mix", x, "feature_mix")
    feat = tensors[x]
    tensors["pool"] = Tensor("pool", (1, 1, feat.shape[2]), feat.scale, feat.zero)
    ops.append(AvgPool("pool", x, "pool"))

    cls = r.get(d, "classifier", "model")
    cp = r.get(cls, "params", "classifier")
    n_cls = r.int_(cls, "out_channel", "classifier")
    cw = r.array(cp, "weight", "classifier.params", np.int8, (n_cls, feat.shape[2], 1, 1))
    cb = r.array(cp, "bias", "classifier.params", np.int32, (n_cls,))
    cs = r.array(cp, "w_scales", "classifier.params", np.float32, (n_cls,))
    xs = r.scale(cp, "x_scale", "classifier.params")
    # The int8 classifier, dequantised: logits (in real units) = (w * s_w) . f + bias * x_scale * s_w.
    head = Head("pool", (cw[:, :, 0, 0] * cs[:, None]).astype(np.float32),
                (cb.astype(np.float64) * xs * cs).astype(np.float32))
    g = Graph(name=path.stem, source=path.name, source_sha256=hashlib.sha256(raw).hexdigest(),
              input="input", tensors=tensors, ops=tuple(ops), head=head,
              meta={"native_resolution": native, "resolution": res})
    return g.verify()
