"""Trained state: save/load round trip in C (resume gives the same run), Python parsing equals the
reference trainer, corrupted files are refused, and `trady export` writes a loadable model."""

from __future__ import annotations

import numpy as np
import pytest

from compiler import data, host, pipeline, state, training
from compiler.cli import main, shared_dir
from compiler.emit import c_weight
from compiler.errors import TradyError
from compiler.importers import tiny_training

MODELS = shared_dir() / "models"
DATA = shared_dir() / "data" / "cifar10-subset.npz"
pytestmark = pytest.mark.skipif(not (MODELS / "mcunet-5fps.pkl").is_file(), reason="shared models absent")
LR, SEED, STEPS, PER_EPOCH = 0.01, 5, 6, 3


@pytest.fixture(scope="module", params=["ram", "flash"], ids=["ram-home", "flash-home"])
def project(tmp_path_factory, request):
    """A small mcunet project with each weight home (flash: working slices + page-buffered write-back)."""
    out = tmp_path_factory.mktemp("state") / "proj"
    topk = out.parent / "topk.json"
    topk.write_text('{"k": 4, "ranking": [{"layer": "blocks.13.pointwise2"}, {"layer": "blocks.13.depthwise"},'
                    ' {"layer": "blocks.12.pointwise2"}, {"layer": "blocks.12.depthwise"}]}')
    assert main(["compile", str(MODELS / "mcunet-5fps.pkl"), "--budget", "3000", "--topk", str(topk),
                 "--weight-home", request.param, "--flash-page", "256", "--out", str(out)]) == 0
    proj = pipeline.load_project(out)
    assert proj.spec.weight_home == request.param
    return out, proj, host.build(out)


@pytest.fixture(scope="module")
def images():
    ds = data.load(DATA, 128, limit_train=STEPS, limit_test=0)
    return ds.train.x, ds.train.y


def trace(exe, x, y, *options):
    return host.run_trace(exe, x, y, PER_EPOCH, SEED, LR, 1, STEPS, tuple(options))


def test_resume_from_saved_state_equals_uninterrupted_run(project, images, tmp_path):
    _, _, exe = project
    x, y = images
    full = trace(exe, x, y)
    first = trace(exe, x[:3], y[:3], f"save={tmp_path / 's.bin'}")
    second = trace(exe, x[3:], y[3:], f"load={tmp_path / 's.bin'}", "start=3")
    assert first + second == full


def test_python_reads_state_equal_to_reference(project, images, tmp_path):
    _, proj, exe = project
    x, y = images
    trace(exe, x[:4], y[:4], f"save={tmp_path / 's.bin'}")
    st = state.read(tmp_path / "s.bin", proj)
    tr = training.Trainer.for_spec(proj.graph, proj.spec, SEED, training.Schedule(LR, STEPS, 1))
    for s in range(4):
        if s % PER_EPOCH == 0:
            tr.epoch_begin()
        tr.train_step(x[s], int(y[s]))
    assert st.step == 4 and st.epoch == 2 and st.selection == tr.selection
    assert np.array_equal(st.head_weight, tr.head_w) and np.array_equal(st.head_bias, tr.head_b)
    folded = state.folded_weights(proj, st)
    if proj.spec.weight_home == "flash":  # the home lags; home + working slices are the trained weights
        changed = 0
        for i, w in folded.items():
            conv = proj.graph.convs[i]
            assert np.array_equal(w, tr.weights[conv.name]), f"conv {i}"
            changed += int((c_weight(conv.__class__(**{**conv.__dict__, "weight": w})) != st.weights[i]).sum())
        assert changed > 0  # some trained values are only in the working copies
        return
    for i, w in st.weights.items():
        conv = proj.graph.convs[i]
        want = c_weight(conv.__class__(**{**conv.__dict__, "weight": tr.weights[conv.name]}))
        assert np.array_equal(w, want), f"conv {i}"
    pool = proj.spec.pool
    for e, r in zip(st.selection, st.residuals, strict=True):
        key = (int(pool.entry_layer[e]), int(pool.entry_channel[e]))
        assert np.array_equal(r.astype(np.int32), tr.residuals[key].ravel())


def test_corrupted_or_foreign_state_is_refused(project, images, tmp_path, capsys):
    folder, proj, exe = project
    x, y = images
    trace(exe, x[:2], y[:2], f"save={tmp_path / 's.bin'}")
    raw = bytearray((tmp_path / "s.bin").read_bytes())
    raw[len(raw) // 2] ^= 0x40
    (tmp_path / "bad.bin").write_bytes(bytes(raw))
    with pytest.raises(TradyError, match="CRC32"):
        state.read(tmp_path / "bad.bin", proj)
    with pytest.raises(TradyError, match="trained state of this compiled model"):
        trace(exe, x[:1], y[:1], f"load={tmp_path / 'bad.bin'}")
    raw = bytearray((tmp_path / "s.bin").read_bytes())
    raw[8] ^= 1  # model id
    (tmp_path / "other.bin").write_bytes(bytes(raw))
    with pytest.raises(TradyError, match="model id"):
        state.read(tmp_path / "other.bin", proj)
    assert main(["export", str(folder), str(tmp_path / "bad.bin"), "--out", str(tmp_path / "m.pkl")]) == 2
    assert "CRC32" in capsys.readouterr().err and not (tmp_path / "m.pkl").exists()


def test_export_writes_a_loadable_trained_model(project, images, tmp_path):
    folder, proj, exe = project
    x, y = images
    trace(exe, x, y, f"save={tmp_path / 's.bin'}")
    assert main(["export", str(folder), str(tmp_path / "s.bin"), "--out", str(tmp_path / "trained.pkl")]) == 0
    st = state.read(tmp_path / "s.bin", proj)
    g = tiny_training.load(tmp_path / "trained.pkl")
    folded = state.folded_weights(proj, st)
    assert any(not np.array_equal(w, proj.graph.convs[i].weight) for i, w in folded.items())
    for i, conv in enumerate(g.convs):
        want = folded.get(i, proj.graph.convs[i].weight)
        assert np.array_equal(conv.weight, want), f"conv {i}"
    err = np.abs(g.head.weight - st.head_weight).max() / np.abs(st.head_weight).max()
    assert err < 0.01 and g.head.classes == 10
    out = tmp_path / "redeploy"
    assert main(["compile", str(tmp_path / "trained.pkl"), "--budget", "3000", "--keep-head", "--out", str(out)]) == 0
