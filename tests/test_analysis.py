"""Analyses: the tail-index estimator on alpha-stable samples, Spearman matrices, the channel-level
task test on constructed rankings, and short end-to-end runs on the toy graph of test_rank."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.stats import levy_stable

from compiler import analysis, data, rank
from compiler.cli import main
from tests.test_rank import toy_graph


@pytest.mark.parametrize("alpha", [1.1, 1.4, 1.7, 1.9, 2.0])
def test_tail_index_recovers_alpha_of_stable_samples(alpha):
    x = levy_stable.rvs(alpha, 0.0, size=60_000, random_state=np.random.default_rng(int(alpha * 10)))
    est = analysis.tail_index(x)
    assert abs(est - alpha) < 0.08, (alpha, est)


def test_tail_index_scale_free_and_gaussian_is_two():
    rng = np.random.default_rng(0)
    x = rng.normal(size=40_000)
    assert abs(analysis.tail_index(x) - 2.0) < 0.08
    assert analysis.tail_index(1e-6 * x) == pytest.approx(analysis.tail_index(x), rel=1e-9)
    cauchy = rng.standard_cauchy(40_000)
    assert abs(analysis.tail_index(cauchy) - 1.0) < 0.08
    # another block length K1 (the log is of K1, the number of summands per block)
    assert analysis.tail_index(cauchy, k1=100) == pytest.approx(1.0, abs=0.1)
    with pytest.raises(ValueError):
        analysis.tail_index([0.0, 1.0, 0.0])


def test_sign_flip_p_exact():
    assert analysis.sign_flip_p(np.array([1.0, 1.0, 1.0])) == pytest.approx(1 / 8)
    assert analysis.sign_flip_p(np.array([1.0, -1.0])) == pytest.approx(3 / 4)


def test_spearman_matrix_matches_rank_spearman():
    rng = np.random.default_rng(1)
    v = [rng.normal(size=12) for _ in range(3)]
    m = analysis.spearman_matrix(v)
    assert np.allclose(m, m.T) and np.allclose(np.diag(m), 1)
    assert m[0, 2] == pytest.approx(rank.spearman(v[0], v[2]))


def _runs(task_effect: float, seed: int = 0) -> list[analysis.Run]:
    """Two tasks x 3 seeds; 10 layers of 20 channels; a shared per-layer pattern, a task-specific
    one scaled by task_effect, and seed noise."""
    rng = np.random.default_rng(seed)
    base = [rng.normal(size=20) for _ in range(10)]
    task = {t: [rng.normal(size=20) for _ in range(10)] for t in ("a", "b")}
    runs = []
    for t in ("a", "b"):
        for s in range(3):
            ch = tuple(np.exp(base[i] + task_effect * task[t][i] + 0.3 * rng.normal(size=20)) for i in range(10))
            runs.append(analysis.Run(t, s, np.array([c.sum() for c in ch]), ch, 3))
    return runs


def test_channel_test_detects_task_dependence_and_not_noise():
    dep = analysis.channel_test(_runs(1.0))
    assert dep["mean_within"] > dep["mean_across"] + 0.2
    assert dep["layers_within_greater"] == dep["n_layers"] == 10
    assert dep["wilcoxon_p"] < 0.01 and dep["sign_flip_p"] < 0.01
    assert dep["pairs_within"] == 6 and dep["pairs_across"] == 6  # cross-task pairs of different seeds
    null = analysis.channel_test(_runs(0.0))
    assert abs(null["mean_within"] - null["mean_across"]) < 0.1
    assert null["wilcoxon_p"] > 0.05 and null["sign_flip_p"] > 0.05
    with pytest.raises(Exception, match="two tasks"):
        analysis.channel_test([r for r in _runs(1.0) if r.task == "a"])


def _toy_dataset(n: int = 40) -> data.Dataset:
    rng = np.random.default_rng(7)
    x = rng.integers(-128, 128, (n, 4, 4, 2)).astype(np.int8)
    y = np.arange(n, dtype=np.int64) % 10
    return data.Dataset("toy.npz", tuple("abcdefghij"), data.Split(x, y), data.Split(x[:10], y[:10]))


def test_ranking_study_and_tail_on_toy_graph(tmp_path):
    g = toy_graph()
    runs, summary = analysis.ranking_study(g, _toy_dataset(), ["cifar10", "first5"], [0, 1], epochs=1, lr=0.01,
                                           progress=False)
    assert [f"{r.task}/s{r.seed}" for r in runs] == summary["runs"] == ["cifar10/s0", "cifar10/s1", "first5/s0",
                                                                        "first5/s1"]
    m = np.array(summary["layer_spearman"])
    assert m.shape == (4, 4) and np.allclose(m, m.T)
    # the toy depthwise channel 1 is dead: one eligible channel in both layers, nothing to correlate
    assert [len(c) for c in runs[0].channel_rgn] == [1, 1]
    assert summary["channel_test"] is None and "no layer" in summary["channel_test_skipped"]
    analysis.plot_rankings(summary, tmp_path / "r.png")
    assert (tmp_path / "r.png").stat().st_size > 0
    res = analysis.gradient_tail_indices(g, _toy_dataset(), epochs=2, lr=0.01, batch=4, probe=4, progress=False)
    assert len(res.alpha) == 2 and len(res.alpha[0]) == 2 and len(res.alpha_all) == 2
    assert all(np.isfinite(a) and a > 0 for a in res.alpha_all)
    analysis.plot_tail(res, tmp_path / "t.png")
    json.dumps(res.as_json())


def test_analyze_cli_bad_input(tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    assert main(["analyze", "tail", str(tmp_path / "missing.pkl"), "--out", str(f)]) == 2
    err = capsys.readouterr().err
    assert "--out" in err and len(err.strip().splitlines()) == 1
