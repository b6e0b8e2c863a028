"""Training runtime: PRNG, float math, schedule and sampler (C vs Python), gradients vs autograd,
end-to-end C vs reference training steps, and bad inputs."""

from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from compiler import data, pipeline, quant, reference, sampler, training
from compiler.cli import main, shared_dir
from compiler.ir import Add, Conv
from compiler.prng import STREAM_SAMPLER, XorShift32

ROOT = Path(__file__).resolve().parent.parent
MODELS = shared_dir() / "models"
DATA = shared_dir() / "data" / "cifar10-subset.npz"
needs_models = pytest.mark.skipif(not (MODELS / "mcunet-5fps.pkl").is_file(), reason="shared models absent")


@pytest.fixture(scope="module")
def driver(tmp_path_factory) -> Path:
    exe = tmp_path_factory.mktemp("drv") / "train_driver"
    src = [str(ROOT / "tests/c/train_driver.c"), str(ROOT / "runtime_c/tt_sampler.c"), str(ROOT / "runtime_c/tt_train.c"),
           str(ROOT / "runtime_c/tt_conv_bwd_s8.c")]
    subprocess.run(["gcc", "-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", "-ffp-contract=off",
                    "-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-I", str(ROOT / "runtime_c"),
                    "-o", str(exe), *src, "-lm"], check=True)
    return exe


def run(exe: Path, *args) -> list[str]:
    return subprocess.run([str(exe), *map(str, args)], check=True, capture_output=True, text=True).stdout.split("\n")[:-1]


@pytest.mark.parametrize("seed,stream", [(0, 1), (1, 2), (12345, 3), (2**32 - 1, 1)])
def test_prng_c_equals_python(driver, seed, stream):
    n = 300
    out = run(driver, "prng", seed, stream, n)
    rng = XorShift32(seed, stream)
    raw = [rng.next() for _ in range(n)]
    bounded = [rng.bounded(1000003) for _ in range(n)]
    uni = [float.hex(float(rng.uniform())) for _ in range(n)]
    assert [int(v) for v in out[:n]] == raw
    assert [int(v) for v in out[n:2 * n]] == bounded
    assert [float.fromhex(v) for v in out[2 * n:]] == [float.fromhex(v) for v in uni]


def test_prng_bounded_is_unbiased_and_in_range():
    rng = XorShift32(7, STREAM_SAMPLER)
    draws = np.array([rng.bounded(6) for _ in range(60000)])
    assert draws.min() == 0 and draws.max() == 5
    counts = np.bincount(draws)
    assert np.all(np.abs(counts - 10000) < 400), counts  # ~4 sigma


def test_expf_cosf_bitwise_and_accurate(driver):
    xs = np.concatenate([np.linspace(-90, 0, 257), -np.logspace(-8, 1.5, 64)]).astype(np.float32)
    got = np.array([float.fromhex(v) for v in run(driver, "expf", *[float.hex(float(x)) for x in xs])], np.float32)
    want = training.expf(xs)
    diff = np.flatnonzero(got.view(np.int32) != want.view(np.int32))
    assert diff.size == 0, f"first mismatch x={xs[diff[0]]!r}: C {got[diff[0]]!r} != Python {want[diff[0]]!r}"
    ok = xs > -80
    assert np.max(np.abs(want[ok] / np.exp(xs[ok].astype(np.float64)) - 1)) < 1e-6
    cs = np.linspace(0, np.pi, 101).astype(np.float32)
    got = np.array([float.fromhex(v) for v in run(driver, "cosf", *[float.hex(float(x)) for x in cs])], np.float32)
    want = np.array([training.cosf(x) for x in cs], np.float32)
    assert np.array_equal(got.view(np.int32), want.view(np.int32))
    assert np.max(np.abs(want - np.cos(cs.astype(np.float64)))) < 3e-7


@pytest.mark.parametrize("base,warm,total", [(0.01, 5, 40), (0.05, 0, 17), (0.003, 100, 1000)])
def test_lr_schedule_c_equals_python(driver, base, warm, total):
    got = [float.fromhex(v) for v in run(driver, "lr", base, warm, total)]
    sched = training.Schedule(base, total, warm)
    want = [float(sched.at(s)) for s in range(total + 1)]
    assert got == want
    assert max(want) <= np.float32(base) * (1 + 1e-6) and want[-1] < 1e-6 * base


@pytest.fixture(scope="module")
def mcunet():
    from compiler.importers import tiny_training

    g = tiny_training.load(MODELS / "mcunet-5fps.pkl")
    return dataclasses.replace(g, head=pipeline.init_head(g, 10, 0)).verify()


def write_pool(pool: sampler.Pool, path: Path) -> None:
    with open(path, "wb") as f:
        np.array([pool.size, len(pool.layer_cost), pool.min_cost()], np.int32).tofile(f)
        pool.entry_layer.astype(np.uint16).tofile(f)
        pool.entry_channel.astype(np.uint16).tofile(f)
        np.array(pool.layer_cost, np.uint32).tofile(f)


@needs_models
@pytest.mark.parametrize("strategy", ["trady", "dynamic-full"])
def test_sampler_properties_and_c_equals_python(driver, mcunet, tmp_path, strategy):
    pool = sampler.build_pool(mcunet, strategy, None, 15936)
    write_pool(pool, tmp_path / "pool.bin")
    dead = set()
    for i, conv in enumerate(mcunet.convs):
        if conv.depthwise:
            dead |= {(i, int(c)) for c in np.flatnonzero(conv.dead)}
    for seed in range(12):
        for budget in (25, 300, 15936, 64832, 112640):
            lines = run(driver, "sample", tmp_path / "pool.bin", budget, seed, 3)
            py = XorShift32(seed, STREAM_SAMPLER)
            for line in lines:
                count, units, *entries = (int(v) for v in line.split())
                want = sampler.select(pool, budget, py)
                assert entries == want, f"seed {seed} budget {budget}: C {entries[:6]} != Python {want[:6]}"
                assert count == len(entries) and len(set(entries)) == count
                assert units == sum(pool.cost(i) for i in entries) <= budget
                assert budget - units < pool.min_cost() or count == pool.size or \
                    all(pool.cost(i) > budget - units for i in set(range(pool.size)) - set(entries))
                pairs = {(int(pool.entry_layer[i]), int(pool.entry_channel[i])) for i in entries}
                assert not pairs & dead


@needs_models
def test_pool_excludes_dead_and_su_matches_paper_units(mcunet):
    pool = sampler.build_pool(mcunet, "trady", None, 15936)
    for i, conv in enumerate(mcunet.convs):
        chans = set(pool.entry_channel[pool.entry_layer == i].tolist())
        if conv.depthwise:
            assert not chans & set(np.flatnonzero(conv.dead).tolist())
    for budget, scheme in ((15936, "49kb"), (64832, "99kb"), (112640, "148kb"), (80000, "99kb")):
        p = sampler.build_pool(mcunet, "su", None, budget)
        assert scheme in p.note
        if budget != 80000:
            assert sum(p.cost(i) for i in p.fixed) == budget


@needs_models
def test_reference_gradients_match_autograd(mcunet):
    """The reference's weight gradients (before QAS) equal autograd's on the fake-quantised forward
    (straight-through estimator, zero gradient where the int8 output is at its range ends); the only
    difference is the int16 quantisation of g' (relative error well below 1e-3)."""
    ds = data.load(DATA, 128, limit_train=2, limit_test=0)
    pool = sampler.build_pool(mcunet, "trady", None, 30000)
    tr = training.Trainer(mcunet, pool, 30000, 3, training.Schedule(0.01, 10, 1))
    tr.epoch_begin()
    seen: dict[int, list] = {}
    apply = tr._apply

    def spy(w, index, dW, inv, lr, residual):
        seen.setdefault(id(w), []).append(dW.copy())
        return apply(w, index, dW, inv, lr, residual)

    tr._apply = spy
    img, label = ds.train.x[0], int(ds.train.y[0])
    g, T = mcunet, mcunet.tensors
    vals, _ = reference.forward(g, img[None], quant.prepare(g))

    def real(name):
        t = T[name]
        return torch.tensor((vals[name][0].astype(np.float64) - t.zero) * quant.f32(t.scale)).permute(2, 0, 1)[None]

    def ste(name, value):
        q = torch.tensor(vals[name][0]).permute(2, 0, 1)[None]
        return real(name) + (value - value.detach()) * ((q > -128) & (q < 127)).double()

    W = {c.name: torch.tensor(c.weight.astype(np.float64), requires_grad=True) for c in g.convs}
    x = {g.input: real(g.input)}
    for op in g.ops:
        if isinstance(op, Conv):
            sw = torch.tensor(op.w_scales.astype(np.float64)).view(-1, 1, 1, 1)
            pre = torch.nn.functional.conv2d(x[op.input], W[op.name] * sw, stride=op.stride, padding=op.padding,
                                             groups=op.out_channels if op.depthwise else 1)
            x[op.output] = ste(op.output, pre)
        elif isinstance(op, Add):
            x[op.output] = ste(op.output, x[op.inputs[0]] + x[op.inputs[1]])
        else:
            m = x[op.input].mean(dim=(2, 3), keepdim=True)
            x[op.output] = real(op.output) + (m - m.detach())
    logits = torch.tensor(g.head.weight.astype(np.float64)) @ x["pool"].reshape(-1) + \
        torch.tensor(g.head.bias.astype(np.float64))
    loss = torch.nn.functional.cross_entropy(logits[None], torch.tensor([label]))
    loss.backward()
    res = tr.train_step(img, label)
    assert abs(res.loss - loss.item()) < 1e-4
    checked = 0
    for ci, chans in tr.selected_by_layer().items():
        conv = g.convs[ci]
        for dW, c in zip(seen[id(tr.weights[conv.name])], chans, strict=True):
            ag = W[conv.name].grad.numpy()
            want = (ag[c, 0][None] if conv.depthwise else ag[:, c]).reshape(dW.shape)
            scale = np.abs(want).max()
            if scale == 0:
                assert np.abs(dW).max() == 0
                continue
            err = np.abs(dW - want).max() / scale
            assert err < 2e-3, f"layer {ci} ({conv.name}) channel {c}: max relative error {err:.2e}"
            checked += 1
    assert checked >= 20


def compile_model(tmp_path: Path, model: str, budget: int, strategy: str = "trady", extra=()) -> Path:
    out = tmp_path / f"{model}-{strategy}"
    assert main(["compile", str(MODELS / f"{model}.pkl"), "--budget", str(budget), "--strategy", strategy,
                 "--out", str(out), *extra]) == 0
    return out


@needs_models
@pytest.mark.parametrize("strategy,home", [("trady", "flash"), ("trady", "ram"), ("head-only", "auto"),
                                           ("su", "auto"), ("static-topk", "auto")])
def test_training_steps_c_equals_reference_mcunet(tmp_path, capsys, strategy, home):
    """`--topk all` puts every conv in the pool: too big for a RAM home on the board, so auto picks flash."""
    out = compile_model(tmp_path, "mcunet-5fps", 15936, strategy, extra=("--weight-home", home))
    assert main(["verify", str(out), "--data", str(DATA), "--steps", "4"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("verify: OK") and "identical selections" in last
    if home != "auto":
        assert f"{home} weight home" in last


@needs_models
def test_training_sanitizer_build(tmp_path, capsys):
    out = compile_model(tmp_path, "mcunet-5fps", 64832)
    assert main(["verify", str(out), "--data", str(DATA), "--steps", "3", "--sanitize"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("verify: OK")


@needs_models
@pytest.mark.slow
@pytest.mark.parametrize("model,budget", [("mbv2-w0.35", 27946), ("proxyless-w0.3", 25984)])
def test_training_steps_other_models(tmp_path, capsys, model, budget):
    out = compile_model(tmp_path, model, budget)
    assert main(["verify", str(out), "--data", str(DATA), "--steps", "4"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("verify: OK")


@needs_models
def test_bad_training_inputs(tmp_path, capsys):
    m = str(MODELS / "mcunet-5fps.pkl")
    cases = [
        (["compile", m, "--budget", "10", "--out", str(tmp_path / "a")], "cheapest channel"),
        (["compile", m, "--budget", "15936", "--strategy", "nope", "--out", str(tmp_path / "b")], "--strategy"),
        (["compile", m, "--budget", "100", "--strategy", "su", "--out", str(tmp_path / "c")], "smallest"),
    ]
    topk = tmp_path / "topk.json"
    topk.write_text('{"k": 2, "ranking": [{"layer": "blocks.13.pointwise2"}, {"layer": "blocks.99.depthwise"}]}')
    cases.append((["compile", m, "--budget", "15936", "--topk", str(topk), "--out", str(tmp_path / "d")],
                  "blocks.99.depthwise"))
    for argv, needle in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and needle in err[0], err
        assert not Path(argv[argv.index("--out") + 1]).exists()
    out = compile_model(tmp_path, "mcunet-5fps", 15936, extra=("--classes", "3"))
    assert main(["sim", str(out), "--data", str(DATA), "--epochs", "1", "--train", "20", "--test", "10"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "out of range" in err[-1] and "--classes" in err[-1]
    bad = tmp_path / "gray.npz"
    np.savez(bad, x_train=np.zeros((4, 32, 32, 1), np.uint8), y_train=np.zeros(4, np.uint8),
             x_test=np.zeros((2, 32, 32, 1), np.uint8), y_test=np.zeros(2, np.uint8))
    assert main(["sim", str(out), "--data", str(bad), "--epochs", "1"]) == 2
    assert "x_train" in capsys.readouterr().err
