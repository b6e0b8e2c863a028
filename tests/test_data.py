"""Data loading: .npz and image folders (one sub-folder per class, optional train/ and test/)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from compiler import data
from compiler.cli import main, shared_dir
from compiler.errors import TradyError


def make_folder(root, classes=("cat", "dog", "frog"), per_class=5, size=(20, 24), split=False):
    rng = np.random.default_rng(0)
    for c in classes:
        for split_name in (("train", "test") if split else ("",)):
            d = root / split_name / c if split else root / c
            d.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(d / f"{i}.png")
    return root


def test_quantise_images_resizes_and_maps_pixels():
    x = np.zeros((2, 4, 4, 3), np.uint8)
    x[1] = 255
    q = data.quantise_images(x, 8)
    assert q.shape == (2, 8, 8, 3) and q.dtype == np.int8
    assert (q[0] == -128).all() and (q[1] == 127).all()


def test_image_folder_with_and_without_splits(tmp_path):
    ds = data.load(make_folder(tmp_path / "a"), 16)
    assert ds.classes == ("cat", "dog", "frog")
    assert len(ds.train.y) + len(ds.test.y) == 15 and len(ds.test.y) == 3
    assert ds.train.x.shape[1:] == (16, 16, 3)
    ds = data.load(make_folder(tmp_path / "b", per_class=2, split=True), 16)
    assert len(ds.train.y) == 6 and len(ds.test.y) == 6 and set(ds.test.y.tolist()) == {0, 1, 2}


def test_mixed_image_sizes_are_resized_one_by_one(tmp_path):
    root = make_folder(tmp_path / "c", per_class=3)
    Image.fromarray(np.zeros((50, 10, 3), np.uint8)).save(root / "cat" / "tall.png")
    ds = data.load(root, 12)
    assert ds.train.x.shape[1:] == (12, 12, 3)


@pytest.mark.parametrize("content,needle", [(None, "not found"), (b"not an npz", "readable")])
def test_bad_data_sets_name_the_file(tmp_path, content, needle):
    path = tmp_path / "d.npz"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(TradyError, match=needle):
        data.load(path, 16)


def test_npz_missing_array_and_bad_labels(tmp_path):
    p = tmp_path / "m.npz"
    np.savez(p, x_train=np.zeros((2, 8, 8, 3), np.uint8), y_train=np.zeros(2, np.int64),
             x_test=np.zeros((1, 8, 8, 3), np.uint8))
    with pytest.raises(TradyError, match="y_test"):
        data.load(p, 8)
    np.savez(p, x_train=np.zeros((2, 8, 8, 3), np.uint8), y_train=np.array([0, -1]),
             x_test=np.zeros((1, 8, 8, 3), np.uint8), y_test=np.zeros(1, np.int64))
    with pytest.raises(TradyError, match="negative"):
        data.load(p, 8)


@pytest.mark.skipif(not (shared_dir() / "models" / "mcunet-5fps.pkl").is_file(), reason="shared models absent")
def test_sim_trains_on_an_image_folder(tmp_path, capsys):
    root = make_folder(tmp_path / "imgs", per_class=4, size=(32, 32))
    out = tmp_path / "proj"
    assert main(["compile", str(shared_dir() / "models" / "mcunet-5fps.pkl"), "--budget", "2000", "--classes", "3",
                 "--strategy", "head-only", "--out", str(out)]) == 0
    assert main(["sim", str(out), "--data", str(root), "--epochs", "1", "--metrics", str(tmp_path / "m.jsonl")]) == 0
    assert "test accuracy" in capsys.readouterr().out.splitlines()[-1]
    assert (tmp_path / "m.jsonl").read_text().count("\n") == 1 and (tmp_path / "m.png").is_file()
