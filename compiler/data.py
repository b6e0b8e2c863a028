"""Data sets: `.npz` (x_train, y_train, x_test, y_test; uint8 NHWC) or an image folder
(one sub-folder per class, optionally with train/ and test/ splits) -> int8 images at the model
resolution and integer labels.

Images are resized once with bilinear interpolation (torch, align_corners=False, no antialias)
and quantised with the model's input quantisation, x_scale = 2/255, x_zero = 0:
q = clamp(round(v) - 128, -128, 127) for a pixel value v in [0, 255], i.e. the real input
v/127.5 - 1 (to within half a step).
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from compiler.errors import TradyError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".ppm"}


class DataError(TradyError):
    """The data set is malformed."""


@dataclass(frozen=True, eq=False)
class Split:
    x: np.ndarray  # int8 [N, R, R, 3]
    y: np.ndarray  # int64 [N]


@dataclass(frozen=True, eq=False)
class Dataset:
    name: str
    classes: tuple[str, ...]
    train: Split
    test: Split


def quantise_images(x: np.ndarray, resolution: int, batch: int = 512) -> np.ndarray:
    """uint8 [N, h, w, 3] -> int8 [N, R, R, 3] (bilinear resize, then q = round(v) - 128)."""
    out = np.empty((len(x), resolution, resolution, x.shape[3]), np.int8)
    for i in range(0, len(x), batch):
        t = torch.from_numpy(np.array(x[i:i + batch])).permute(0, 3, 1, 2).float()  # a writable copy
        if t.shape[2:] != (resolution, resolution):
            t = F.interpolate(t, size=(resolution, resolution), mode="bilinear", align_corners=False,
                              antialias=False)
        q = torch.round(t).clamp(0, 255) - 128
        out[i:i + batch] = q.permute(0, 2, 3, 1).to(torch.int8).numpy()
    return out


def _check_split(path: Path, x: np.ndarray, y: np.ndarray, which: str) -> None:
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[3] != 3:
        raise DataError(f"{path}: x_{which}: expected uint8 [N, H, W, 3], found {x.shape} {x.dtype}")
    if y.ndim != 1 or len(y) != len(x) or not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{path}: y_{which}: expected {len(x)} integer labels, found {y.shape} {y.dtype}")
    if len(y) and y.min() < 0:
        raise DataError(f"{path}: y_{which}: label {int(y.min())} is negative")


def _load_npz(path: Path) -> tuple[tuple[str, ...], dict[str, tuple[np.ndarray, np.ndarray]]]:
    try:
        z = np.load(path, allow_pickle=False)
        keys = set(z.files)
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise DataError(f"{path}: not a readable .npz file ({e})") from None
    for k in ("x_train", "y_train", "x_test", "y_test"):
        if k not in keys:
            raise DataError(f"{path}: missing array {k!r} (has {sorted(keys)})")
    splits = {}
    for which in ("train", "test"):
        x, y = z[f"x_{which}"], z[f"y_{which}"]
        _check_split(path, x, y, which)
        splits[which] = (x, y.astype(np.int64))
    n = int(max(splits["train"][1].max(initial=0), splits["test"][1].max(initial=0))) + 1
    classes = tuple(str(c) for c in z["classes"]) if "classes" in keys else tuple(str(i) for i in range(n))
    if n > len(classes):
        raise DataError(f"{path}: label {n - 1} out of range for {len(classes)} classes")
    return classes, splits


def _read_image(path: Path) -> np.ndarray:
    from PIL import Image  # pillow comes with matplotlib

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"), np.uint8)
    except OSError as e:
        raise DataError(f"{path}: unreadable image ({e})") from None


def _load_folder(path: Path, test_fraction: float = 0.2) -> tuple[tuple[str, ...], dict]:
    """class sub-folders, or train/ and test/ each holding the same class sub-folders."""
    roots = {"train": path / "train", "test": path / "test"}
    split_dirs = all(r.is_dir() for r in roots.values())
    base = roots["train"] if split_dirs else path
    classes = tuple(sorted(d.name for d in base.iterdir() if d.is_dir()))
    if len(classes) < 2:
        raise DataError(f"{path}: an image folder needs one sub-folder per class (found {len(classes)})")

    def read(root: Path) -> tuple[list[np.ndarray], list[int]]:
        xs, ys = [], []
        for label, c in enumerate(classes):
            for f in sorted((root / c).iterdir()) if (root / c).is_dir() else []:
                if f.suffix.lower() in IMAGE_SUFFIXES:
                    xs.append(_read_image(f))
                    ys.append(label)
        return xs, ys

    if split_dirs:
        (xtr, ytr), (xte, yte) = read(roots["train"]), read(roots["test"])
    else:
        xs, ys = read(path)
        rng = np.random.default_rng(0)
        idx = rng.permutation(len(xs))
        n_test = int(len(xs) * test_fraction)
        te, tr = set(idx[:n_test].tolist()), idx[n_test:]
        xtr, ytr = [xs[i] for i in tr], [ys[i] for i in tr]
        xte, yte = [xs[i] for i in sorted(te)], [ys[i] for i in sorted(te)]
    if not xtr or not xte:
        raise DataError(f"{path}: no images found (suffixes {sorted(IMAGE_SUFFIXES)})")
    return classes, {"train": (xtr, np.array(ytr, np.int64)), "test": (xte, np.array(yte, np.int64))}


def load(path: str | Path, resolution: int, limit_train: int | None = None,
         limit_test: int | None = None) -> Dataset:
    """Load and quantise a data set; `limit_*` keep the first N of each class-balanced split."""
    path = Path(path)
    if path.is_dir():
        classes, splits = _load_folder(path)
    elif path.is_file():
        classes, splits = _load_npz(path)
    else:
        raise DataError(f"{path}: data set not found (an .npz file or an image folder)")
    out = {}
    for which, limit in (("train", limit_train), ("test", limit_test)):
        x, y = splits[which]
        if limit is not None and limit < len(y):
            idx = _balanced(y, limit)
            x = [x[i] for i in idx] if isinstance(x, list) else x[idx]
            y = y[idx]
        if isinstance(x, list):  # image folder: sizes may differ, resize one by one
            q = np.concatenate([quantise_images(a[None], resolution) for a in x]) if x else \
                np.zeros((0, resolution, resolution, 3), np.int8)
        else:
            q = quantise_images(x, resolution)
        out[which] = Split(q, y)
    return Dataset(path.name, classes, out["train"], out["test"])


def _balanced(y: np.ndarray, n: int) -> np.ndarray:
    """Indices of the first n samples taken round-robin over classes (deterministic)."""
    per = [np.flatnonzero(y == c) for c in np.unique(y)]
    order = [i for group in zip(*[list(p) for p in per], strict=False) for i in group]
    rest = sorted(set(range(len(y))) - set(order))
    return np.array(sorted((order + rest)[:n]), dtype=np.int64)
