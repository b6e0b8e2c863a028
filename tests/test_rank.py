"""Offline layer ranking (`trady rank`): RGN on a hand-checkable toy graph, the 97% rule, the
topk.json round trip through the sampler's reader, the float model against the int8 reference,
and a short end-to-end ranking of mcunet-5fps."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from compiler import data, pipeline, quant, rank, reference, sampler
from compiler.cli import shared_dir
from compiler.errors import TradyError
from compiler.importers import tiny_training
from compiler.ir import AvgPool, Conv, Graph, Head, Tensor
from compiler.torch_model import TorchModel

MODELS = shared_dir() / "models"
DATA = shared_dir() / "data" / "cifar10-subset.npz"
needs_models = pytest.mark.skipif(not (MODELS / "mcunet-5fps.pkl").is_file() or not DATA.is_file(),
                                  reason="shared models/data absent")


@pytest.fixture(scope="module")
def mcunet() -> Graph:
    return tiny_training.load(MODELS / "mcunet-5fps.pkl")


# ---------------------------------------------------------------------------------------------
# A toy graph: input 4x4x2 -> depthwise 3x3 (channel 1 dead) -> pointwise 2->3 -> pool -> head.
# Wide output ranges (scale 1, zero 0: [-128, 127]) so no clamp is active and the gradients have
# closed forms.

S_IN, S_W = 0.05, 0.01


def toy_graph() -> Graph:
    rng = np.random.default_rng(3)
    dw_w = rng.integers(-50, 50, (2, 1, 3, 3)).astype(np.int8)
    dw_w[1] = 0
    dw_b = np.array([100, np.iinfo(np.int32).min], np.int32)
    dw_s = np.array([S_W, 1e-9], np.float32)  # channel 1 is dead (SPEC 3)
    pw_w = rng.integers(-60, 60, (3, 2, 1, 1)).astype(np.int8)
    pw_b = np.array([10, -20, 30], np.int32)
    pw_s = np.full(3, S_W, np.float32)
    tensors = {"input": Tensor("input", (4, 4, 2), S_IN, 0), "dw": Tensor("dw", (4, 4, 2), 1.0, 0),
               "pw": Tensor("pw", (4, 4, 3), 1.0, 0), "pool": Tensor("pool", (1, 1, 3), 1.0, 0)}
    ops = (Conv("dw", "depthwise", "input", "dw", dw_w, dw_b, dw_s, 1),
           Conv("pw", "pointwise", "dw", "pw", pw_w, pw_b, pw_s, 1), AvgPool("pool", "pw", "pool"))
    head = Head("pool", np.zeros((2, 3), np.float32), np.zeros(2, np.float32))
    return Graph("toy", "toy.pkl", "0" * 64, "input", tensors, ops, head).verify()


def toy_dataset(n: int = 3) -> data.Dataset:
    rng = np.random.default_rng(5)
    x = rng.integers(-128, 128, (n, 4, 4, 2)).astype(np.int8)
    y = np.arange(n, dtype=np.int64) % 2
    return data.Dataset("toy.npz", ("a", "b"), data.Split(x, y), data.Split(x[:0], y[:0]))


def toy_expected_norms(graph: Graph, ds: data.Dataset, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """||dW[:, c]|| of both layers at the initial weights, from closed forms (float64 numpy).

    No clamp is active, so with g2[o] = dL/dpool[o] / (H W) the gradient at every pixel of the
    pointwise output, dW_pw[o, c] = mean_n g2[n, o] * sum_hw y1[n, c]; the depthwise output gets
    g1[n, c] = sum_o W_pw[o, c] g2[n, o] at every pixel, so dW_dw[c, ky, kx] =
    mean_n g1[n, c] * sum_hw xpad[n, c, h + ky, w + kx].
    """
    dw, pw = graph.convs
    head = pipeline.init_head(graph, 2, seed)
    x = ds.train.x.astype(np.float64) * S_IN  # [N, H, W, C], zero point 0
    n, h, w, _ = x.shape
    xpad = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    wd = dw.weight.astype(np.float64) * dw.w_scales.astype(np.float64)[:, None, None, None]
    bd = dw.bias.astype(np.float64) * S_IN * dw.w_scales.astype(np.float64)
    y1 = np.zeros((n, h, w, 2))
    for c in range(2):
        for ky in range(3):
            for kx in range(3):
                y1[..., c] += wd[c, 0, ky, kx] * xpad[:, ky:ky + h, kx:kx + w, c]
        y1[..., c] += bd[c]
    wp = pw.weight[:, :, 0, 0].astype(np.float64) * S_W
    bp = pw.bias.astype(np.float64) * 1.0 * S_W
    y2 = np.einsum("nhwc,oc->nhwo", y1, wp) + bp
    assert np.abs(y1).max() < 100 and np.abs(y2).max() < 100  # no clamp active
    f = y2.mean(axis=(1, 2))
    logits = f @ head.weight.astype(np.float64).T + head.bias
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    delta = (p - np.eye(2)[ds.train.y]) / n  # d(mean CE)/dlogits
    g2 = delta @ head.weight.astype(np.float64) / (h * w)  # [N, O] per pixel
    dwp = np.einsum("no,nc->oc", g2, y1.sum(axis=(1, 2)))
    g1 = g2 @ wp  # [N, C]
    dwd = np.zeros((2, 3, 3))
    for ky in range(3):
        for kx in range(3):
            dwd[:, ky, kx] = np.einsum("nc,nc->c", g1, xpad[:, ky:ky + h, kx:kx + w, :].sum(axis=(1, 2)))
    dwd[1] = 0  # dead channel: frozen
    return np.sqrt((dwd ** 2).sum(axis=(1, 2))), np.sqrt((dwp ** 2).sum(axis=0))


def test_rgn_toy_graph_matches_closed_form():
    g, ds = toy_graph(), toy_dataset()
    res = rank.rank(g, ds, epochs=1, lr=0.01, seed=4, batch=len(ds.train.y), progress=False)
    assert res.steps == 1  # one step: the cumulative norm is the norm at the initial weights
    want_dw, want_pw = toy_expected_norms(g, ds, 4)
    np.testing.assert_allclose(res.channel_norms[0], want_dw, rtol=1e-4, atol=1e-9)
    np.testing.assert_allclose(res.channel_norms[1], want_pw, rtol=1e-4, atol=1e-9)
    assert want_dw[0] > 0 and want_pw.min() > 0
    dw, pw = res.layers
    # dead depthwise channel 1 and the pointwise input it feeds are left out of the layer sums
    assert (dw.eligible, pw.eligible) == (1, 1)
    assert (dw.c_w, dw.c_a, pw.c_w, pw.c_a) == (9, 16, 3, 16)
    assert dw.rgn == pytest.approx(want_dw[0] / (9 + 16), rel=1e-4)
    assert pw.rgn == pytest.approx(want_pw[0] / (3 + 16), rel=1e-4)
    assert pw.raw_norm == pytest.approx(want_pw[0], rel=1e-4)
    assert res.order == ((0, 1) if dw.rgn >= pw.rgn else (1, 0))


def test_rgn_accumulates_over_steps_and_dead_rows_stay_frozen():
    g, ds = toy_graph(), toy_dataset(4)
    one = rank.rank(g, ds, epochs=1, lr=0.01, seed=0, batch=2, progress=False)
    two = rank.rank(g, ds, epochs=2, lr=0.01, seed=0, batch=2, progress=False)
    assert (one.steps, two.steps) == (2, 4)
    for a, b in zip(one.channel_norms, two.channel_norms, strict=True):
        assert np.all(b >= a - 1e-12) and b.sum() > a.sum()
    assert two.channel_norms[0][1] == 0.0  # the dead depthwise channel never has a gradient
    model = TorchModel(g, 2)
    w0 = model.weights[0].detach().clone()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loss = torch.nn.functional.cross_entropy(model(model.input_real(ds.train.x)), torch.from_numpy(ds.train.y))
    loss.backward()
    opt.step()
    assert torch.equal(model.weights[0][1], w0[1])  # dead row unchanged


@pytest.mark.parametrize("values,k", [
    ([50.0, 48.0, 1.0, 1.0], 2),  # 98% after two
    ([97.0, 3.0], 1),  # exactly 97% counts
    ([96.0, 4.0], 2),
    ([1.0, 1.0, 1.0, 1.0], 4),  # ties: all needed
    ([1.0] * 100, 97),
    ([5.0, 0.0, 0.0], 1),
    ([0.0, 0.0, 0.0], 3),  # nothing learned: every layer
    ([0.1, 0.2, 0.3, 0.4], 4),  # 0.97 of 1.0 needs all four
    ([1e-30, 1.0], 1),
])
def test_choose_k_97_percent_rule(values, k):
    assert rank.choose_k(values) == k


def test_ranking_order_ties_and_threshold_errors():
    assert rank.ranking_order([1.0, 3.0, 3.0, 2.0]) == [1, 2, 3, 0]
    assert rank.cumulative_shares([3.0, 1.0]) == [0.75, 1.0]
    assert rank.choose_k([1.0, 1.0], threshold=0.5) == 1
    for bad in (0.0, 1.5):
        with pytest.raises(TradyError):
            rank.choose_k([1.0], threshold=bad)
    with pytest.raises(TradyError):
        rank.choose_k([1.0, -1.0])


def test_cosine_lr_schedule():
    assert rank.cosine_lr(0.01, 0, 10) == 0.01
    assert rank.cosine_lr(0.01, 5, 10) == pytest.approx(0.005)
    assert 0 < rank.cosine_lr(0.01, 9, 10) < 0.001
    assert [rank.cosine_lr(1.0, s, 10, warmup=4) for s in range(5)] == [0.25, 0.5, 0.75, 1.0, 1.0]


def test_diverged_flag():
    res = rank.rank(toy_graph(), toy_dataset(), epochs=1, batch=3, progress=False)
    ok = dataclasses.replace(res, step_loss=(2.3, 1.5, 1.2) * 4, history=({"train_loss": 1.4, "train_acc": 0.9},))
    assert not ok.diverged and ok.loss_peak == 1.0
    blown = dataclasses.replace(ok, step_loss=(2.3, 60.0, 1.2) * 4)
    assert blown.diverged and blown.loss_peak == pytest.approx(60 / 2.3)
    assert dataclasses.replace(ok, history=({"train_loss": 2.4, "train_acc": 0.9},)).diverged
    assert dataclasses.replace(ok, history=({"train_loss": 1.4, "train_acc": 0.7},)).diverged  # 2 classes
    assert dataclasses.replace(ok, history=({"train_loss": 1.4, "train_acc": 0.7},),
                               classes=tuple(range(10))).diverged is False
    assert dataclasses.replace(ok, history=({"train_loss": 1.4, "train_acc": 0.12},),
                               classes=tuple(range(10))).diverged  # chance level: learned nothing
    assert "warning" in rank.summary(blown) and "warning" not in rank.summary(ok)
    assert not dataclasses.replace(blown, step_loss=(2.3, 60.0, 1.2)).diverged  # too short to judge


def test_spearman():
    assert rank.spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert rank.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert rank.spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(0.9486832980505138)


def test_select_classes_remaps_labels():
    x = np.zeros((6, 2, 2, 3), np.int8)
    split = data.Split(x, np.array([0, 2, 3, 2, 1, 3], np.int64))
    sub, labels = rank.select_classes(split, [3, 2])
    assert labels == (3, 2) and sub.y.tolist() == [1, 0, 1, 0]
    with pytest.raises(TradyError, match="no training images"):
        rank.select_classes(split, [2, 7])
    with pytest.raises(TradyError):
        rank.select_classes(split, [2, 2])


def test_topk_json_round_trip_through_sampler(tmp_path):
    g, ds = toy_graph(), toy_dataset()
    res = rank.rank(g, ds, epochs=1, seed=1, batch=3, progress=False)
    path = rank.write_topk(res, tmp_path / "sub" / "topk.json")
    assert path.with_suffix(".png").is_file() and path.with_suffix(".png").stat().st_size > 1000
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no temporary left
    meta = json.loads(path.read_text())
    for key in ("k", "ranking", "model", "model_sha256", "data", "epochs", "seed", "lr", "threshold", "layers"):
        assert key in meta, key
    assert meta["threshold"] == 0.97 and meta["data"] == "toy.npz" and meta["epochs"] == 1
    assert [r["layer"] for r in meta["ranking"]] == [g.convs[i].name for i in res.order]
    assert [r["index"] for r in meta["ranking"]] == list(res.order)
    assert meta["ranking"][-1]["cumulative_share"] == pytest.approx(1.0)
    assert {r["layer"]: r["raw_norm"] for r in meta["ranking"]} == {la.name: la.raw_norm for la in res.layers}
    assert sampler.read_topk(path, g) == res.top() == [g.convs[i].name for i in res.order[:meta["k"]]]
    # the pool built from it holds the eligible channels of exactly the top-K layers
    pool = sampler.build_pool(g, "trady", sampler.read_topk(path, g), 100)
    assert set(pool.layers) == set(res.order[:res.k])


@needs_models
def test_read_topk_of_full_ranking_builds_a_pool(mcunet, tmp_path):
    """A crafted result in the shape rank() writes, for all 42 convs of mcunet-5fps."""
    norms = tuple(np.linspace(1.0, 2.0, c.in_channels) * (i + 1) for i, c in enumerate(mcunet.convs))
    layers = rank.layer_rgn(mcunet, norms)
    values = [la.rgn for la in layers]
    order = tuple(rank.ranking_order(values))
    res = rank.RankResult("mcunet-5fps", "mcunet-5fps.pkl", "ab" * 32, "crafted", tuple(range(10)), 2, 0, 0.01, 64,
                          0, 0, rank.THRESHOLD, layers, order, rank.choose_k(values), norms)
    path = rank.write_topk(res, tmp_path / "topk.json", plot=False)
    names = sampler.read_topk(path, mcunet)
    assert len(names) == res.k and 1 <= res.k <= 42
    pool = sampler.build_pool(mcunet, "trady", names, 15936)
    assert set(pool.layers) == set(order[:res.k])


@needs_models
def test_torch_model_fake_quant_matches_reference(mcunet):
    """Fake-quantised float forward vs the int8 reference, pooled features in int8 steps.

    Measured on 64 test images: float32 max 3 steps, 96.7% within one step, mean 0.42; float64 max
    3, 99.1% within one step, mean 0.13; without fake quantisation (plain float) max 8, mean 1.46.
    Per layer, fed the reference's own input, the fake-quantised float64 output equals the
    reference except at about 1e-5 of the elements (exact ties); the end-to-end differences are
    those rare flips spreading through 42 layers.
    """
    ds = data.load(DATA, 128, limit_train=0, limit_test=16)
    vals, _ = reference.forward(mcunet, ds.test.x, quant.prepare(mcunet))
    ref = vals[mcunet.head.input].reshape(16, -1).astype(np.int64)
    feat = mcunet.tensors[mcunet.head.input]
    stats = {}
    for dtype, fq in ((torch.float32, True), (torch.float64, True), (torch.float32, False)):
        m = TorchModel(mcunet, fake_quant=fq).to(dtype)
        with torch.no_grad():
            f = m.features(m.input_real(ds.test.x))
        q = torch.clamp(torch.round(f / quant.f32(feat.scale)) + feat.zero, -128, 127).numpy().astype(np.int64)
        d = np.abs(q - ref)
        stats[dtype, fq] = (int(d.max()), float((d <= 1).mean()), float(d.mean()))
    for dtype in (torch.float32, torch.float64):
        worst, within1, mean = stats[dtype, True]
        assert worst <= 3 and within1 >= 0.94 and mean <= 0.6, (dtype, stats[dtype, True])
    assert stats[torch.float64, True][1] >= 0.97
    # fake quantisation matters: the plain float forward is clearly further away
    assert stats[torch.float32, False][2] > 2 * stats[torch.float32, True][2]


@needs_models
def test_torch_model_clamp_gradient(mcunet):
    """Clamp gradients: zero where the output sits at its real range end."""
    m = TorchModel(mcunet, 10)
    y = torch.tensor([-1.0, 0.0, 0.5, 1e6], requires_grad=True)
    name = mcunet.convs[0].output
    out = m._out(y, name)
    out.sum().backward()
    lo, hi = m.ranges[name]
    assert lo <= 0 < hi and y.grad.tolist() == [0.0, 1.0, 1.0, 0.0]
    assert out[3].item() == pytest.approx(hi)


@needs_models
def test_rank_end_to_end_mcunet(mcunet, tmp_path, capsys):
    ns = argparse.Namespace(model=str(MODELS / "mcunet-5fps.pkl"), data=str(DATA), out=str(tmp_path / "topk.json"),
                            epochs=1, seed=0, lr=0.01, train=64)
    assert rank.cmd_rank(ns) == 0
    out = capsys.readouterr().out
    assert "K = " in out and "wrote" in out
    meta = json.loads((tmp_path / "topk.json").read_text())
    assert len(meta["ranking"]) == 42 and meta["train_images"] == 64 and meta["steps"] == 1
    assert meta["model"] == "mcunet-5fps" and meta["model_sha256"] == mcunet.source_sha256
    assert all(r["rgn"] > 0 and math.isfinite(r["rgn"]) for r in meta["ranking"])
    shares = [r["cumulative_share"] for r in meta["ranking"]]
    assert shares == sorted(shares) and shares[meta["k"] - 1] >= 0.97 > (shares[meta["k"] - 2] if meta["k"] > 1 else 0)
    names = sampler.read_topk(tmp_path / "topk.json", mcunet)
    assert len(names) == meta["k"]
    assert (tmp_path / "topk.png").is_file()


def test_cmd_rank_bad_input(tmp_path):
    base = dict(model=str(tmp_path / "missing.pkl"), data=str(DATA), out=str(tmp_path / "t.json"), epochs=1,
                seed=0, lr=0.01, train=64)
    with pytest.raises(TradyError, match="missing.pkl"):
        rank.cmd_rank(argparse.Namespace(**base))
    (tmp_path / "afile").write_text("")
    for field, value, msg in (("epochs", 0, "--epochs"), ("lr", -1.0, "--lr"), ("lr", float("nan"), "--lr"),
                              ("out", str(tmp_path), "--out"), ("out", str(tmp_path / "afile" / "t.json"), "--out"),
                              ("train", 1, "--train")):
        with pytest.raises(TradyError, match=msg):
            rank.cmd_rank(argparse.Namespace(**(base | {field: value})))
    assert not (tmp_path / "t.json").exists()


@needs_models
def test_cmd_rank_bad_data(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    ns = argparse.Namespace(model=str(MODELS / "mcunet-5fps.pkl"), data=str(bad), out=str(tmp_path / "t.json"),
                            epochs=1, seed=0, lr=0.01, train=64)
    with pytest.raises(TradyError, match="bad.npz"):
        rank.cmd_rank(ns)


def test_auto_topk_caches_by_model_hash(tmp_path, monkeypatch):
    g, ds = toy_graph(), toy_dataset()
    model = tmp_path / "toy.pkl"
    model.write_bytes(b"toy model bytes")
    datafile = tmp_path / "toy.npz"
    datafile.write_bytes(b"x")
    calls = []
    real_rank = rank.rank

    def fake_load(model_path: Path, data_path: Path, train: int | None):
        calls.append((Path(model_path).name, Path(data_path).name, train))
        return dataclasses.replace(g, source_sha256=rank.sha256_file(model_path)), ds

    monkeypatch.setattr(rank, "_load", fake_load)
    monkeypatch.setattr(rank, "rank", lambda graph, dataset, **kw: real_rank(graph, dataset, **kw, batch=3))
    p1 = rank.auto_topk(model, tmp_path / "cache", data_path=datafile, progress=False)
    p2 = rank.auto_topk(model, tmp_path / "cache", data_path=datafile, progress=False)
    assert p1 == p2 and p1.is_file() and calls == [("toy.pkl", "toy.npz", None)]
    meta = json.loads(p1.read_text())
    assert meta["model_sha256"] == rank.sha256_file(model) and meta["epochs"] == 2 and meta["lr"] == 0.01
    assert sampler.read_topk(p1, g) == [r["layer"] for r in meta["ranking"][:meta["k"]]]
    p3 = rank.auto_topk(model, tmp_path / "cache", data_path=datafile, seed=1, progress=False)
    assert p3 != p1 and len(calls) == 2  # other ranking parameters: another entry
    model.write_bytes(b"another model")
    p4 = rank.auto_topk(model, tmp_path / "cache", data_path=datafile, progress=False)
    assert p4 not in (p1, p3) and len(calls) == 3
    p1.write_text("{broken")  # a damaged entry is recomputed
    model.write_bytes(b"toy model bytes")
    assert rank.auto_topk(model, tmp_path / "cache", data_path=datafile, progress=False) == p1
    assert len(calls) == 4 and json.loads(p1.read_text())["k"] >= 1
    with pytest.raises(TradyError, match="not found"):
        rank.auto_topk(tmp_path / "nope.pkl", tmp_path / "cache", data_path=datafile)
