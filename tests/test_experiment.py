"""Experiment runner: config checks, the deterministic RGN selection, efficiency figures, the
paired t-test table on constructed data, the masked trainer (only selected slices move) and a tiny
grid end to end, in process and on Ray."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import ttest_rel

from compiler import experiment as ex
from compiler.cli import default_data, default_model, main
from compiler.costs import layer_costs
from compiler.errors import TradyError
from compiler.importers import tiny_training
from compiler.torch_model import TorchModel

needs_models = pytest.mark.skipif(not default_model().is_file() or not default_data().is_file(),
                                  reason="shared models/data absent")


def _write(tmp_path: Path, obj, name: str = "c.json") -> Path:
    p = tmp_path / name
    p.write_text(json.dumps(obj) if not isinstance(obj, str) else obj)
    return p


BASE = {"models": ["mcunet-5fps"], "budgets": [15936], "strategies": ["trady"], "seeds": [0]}


def test_load_config_json_toml_and_errors(tmp_path):
    cfg = ex.load_config(_write(tmp_path, BASE | {"epochs": 3, "lr": 0.02}))
    assert cfg.epochs == 3 and cfg.lr == 0.02 and cfg.backend == "torch" and cfg.strategies == ("trady",)
    toml = 'models = "mcunet-5fps"\nbudgets = [15936, 64832]\nstrategies = ["su", "full"]\nseeds = [0, 1]\n'
    cfg = ex.load_config(_write(tmp_path, toml, "c.toml"))
    assert cfg.models == ("mcunet-5fps",) and cfg.budgets == (15936, 64832)
    bad = [(BASE | {"epoch": 2}, "unknown field 'epoch'"), ({"models": ["x"]}, "missing field 'budgets'"),
           (BASE | {"strategies": ["random"]}, "field 'strategies': 'random'"),
           (BASE | {"backend": "sim", "strategies": ["full"], "train": 8, "test": 8}, "not compiled to C"),
           (BASE | {"backend": "sim"}, "needs 'train' and 'test'"), (BASE | {"lr": -1}, "field 'lr'"),
           ("{", "not valid JSON")]
    for obj, msg in bad:
        with pytest.raises(TradyError, match=msg):
            ex.load_config(_write(tmp_path, obj))


def test_greedy_by_score_hand_checked():
    norms = [np.array([4.0, 1.0, 9.0]), np.array([10.0, 3.0])]
    eligible = [[0, 1, 2], [0, 1]]
    cost = [2, 5]
    # RGN: (0,0) 2, (0,1) .5, (0,2) 4.5, (1,0) 2, (1,1) .6; order (0,2) (0,0) (1,0) (1,1) (0,1)
    assert ex.greedy_by_score(norms, eligible, cost, 9) == [(0, 0), (0, 2), (1, 0)]  # 2 + 2 + 5 = 9
    assert ex.greedy_by_score(norms, eligible, cost, 8) == [(0, 0), (0, 1), (0, 2)]  # (1,0) and (1,1) skipped
    assert ex.greedy_by_score(norms, eligible, cost, 1) == []


@needs_models
def test_efficiency_of_full_and_empty_selection():
    g = tiny_training.load(default_model())
    costs = layer_costs(g)
    every = [(c.index, ch) for c in costs for ch in range(c.in_channels)]
    e = ex.efficiency(costs, every)
    assert e["weight_sparsity"] == e["activation_sparsity"] == e["dw_flops_saved"] == 0
    assert e["units"] == 1_309_808 and e["layers"] == 42  # SPEC 6: MCUNet full fine-tuning
    assert ex.efficiency(costs, [])["dw_flops_saved"] == 1
    one = ex.efficiency(costs, [(41, 0)])
    c = costs[41]
    assert one["units"] == c.c_w + c.c_a
    assert one["dw_flops_saved"] == pytest.approx(1 - (c.macs / c.in_channels) / sum(x.macs for x in costs))


def test_ttest_matrix_on_constructed_data():
    rng = np.random.default_rng(0)
    base = {s: 0.6 + 0.02 * rng.normal() for s in range(5)}
    accs = {"good": {s: v + 0.05 + 0.01 * rng.normal() for s, v in base.items()}, "ref": dict(base),
            "same": dict(base), "shift": {s: v - 0.01 for s, v in base.items()}, "one": {0: 0.9}}
    names, p = ex.ttest_matrix(accs)
    i = {n: k for k, n in enumerate(names)}
    want = ttest_rel([accs["good"][s] for s in range(5)], [base[s] for s in range(5)], alternative="greater")
    assert p[i["good"], i["ref"]] == pytest.approx(want.pvalue) and want.pvalue < 0.01
    assert p[i["ref"], i["good"]] > 0.99
    assert np.isnan(p[i["ref"], i["same"]]) and np.isnan(p[i["good"], i["good"]])
    assert np.isnan(p[i["one"], i["ref"]])  # one common seed: no test
    assert p[i["ref"], i["shift"]] == 0.0 and p[i["shift"], i["ref"]] == 1.0  # constant difference


def _spec(**kw) -> ex.RunSpec:
    s = ex.RunSpec("mcunet-5fps", str(default_model()), "su", 15936, 0, 1, 0.05, 16, 0.0, 32, 16,
                   str(default_data()), "torch", None, "all", 2, False, 15936)
    return replace(s, **kw)


@needs_models
@pytest.mark.parametrize("strategy", ["su", "det-rgn-static", "head-only"])
def test_trainer_updates_only_the_selected_slices(strategy):
    spec = _spec(strategy=strategy, budget=None if strategy == "head-only" else 15936, epochs=1)
    res = ex.train_torch(spec, return_model=True)
    g = tiny_training.load(default_model())
    before = TorchModel(g, 10, seed=0)
    after = res["model"]
    sel = res["selections"][0]
    assert (len(sel) > 0) == (strategy != "head-only")
    costs = layer_costs(g)
    assert sum(costs[i].c_w + costs[i].c_a for i, _ in sel) <= 15936
    chosen = {}
    for i, c in sel:
        chosen.setdefault(i, set()).add(c)
    for i, conv in enumerate(g.convs):
        w0, w1 = before.weights[i].detach(), after.weights[i].detach()
        diff = (w0 != w1) if conv.depthwise else (w0 != w1).transpose(0, 1)  # [input channel, ...]
        moved = diff.flatten(1).any(dim=1)
        assert set(torch.nonzero(moved).flatten().tolist()) <= chosen.get(i, set()), f"conv {i}"
        assert torch.equal(before.biases[i].detach(), after.biases[i].detach())  # biases frozen
    if strategy != "head-only":
        assert any(not torch.equal(before.weights[i].detach(), after.weights[i].detach()) for i in chosen)
    assert not torch.equal(before.head.weight.detach(), after.head.weight.detach())
    row = res["epochs"][0]
    assert 0 <= row["test_acc"] <= 1 and row["channels"] == len(sel)


@needs_models
def test_dynamic_strategy_redraws_and_static_keeps_the_selection():
    dyn = ex.train_torch(_spec(strategy="trady", epochs=2, train=16, test=8), return_model=True)["selections"]
    sta = ex.train_torch(_spec(strategy="static-topk", epochs=2, train=16, test=8), return_model=True)["selections"]
    assert dyn[0] == sta[0] == sta[1] and dyn[1] != dyn[0]  # same seed: same first draw (as on the device)


@needs_models
def test_tiny_grid_in_process_and_reports(tmp_path):
    cfg = ex.load_config(_write(tmp_path, {"models": ["mcunet-5fps"], "budgets": [15936, 64832],
                                           "strategies": ["trady", "su", "head-only"], "seeds": [0, 1],
                                           "epochs": 1, "batch": 16, "train": 32, "test": 16, "topk": "all"}))
    results = ex.run_grid(cfg, tmp_path / "out", inline=True, progress=False)
    assert len(results) == 2 * 2 + 2 * 2 + 2  # head-only is budget-free
    out = tmp_path / "out"
    for f in ("runs.csv", "epochs.csv", "table.md", "ttest.png", "efficiency.png"):
        assert (out / f).stat().st_size > 0, f
    md = (out / "table.md").read_text()
    assert "| trady | " in md and "head-only (budget-free)" in md and "row > col" in md
    rows = (out / "runs.csv").read_text().splitlines()
    assert len(rows) == 1 + len(results)
    # a second call reuses the finished runs
    again = ex.run_grid(cfg, out, inline=True, progress=False)
    assert sorted(r["seconds"] for r in again) == sorted(r["seconds"] for r in results)


@needs_models
def test_experiment_cli_on_ray(tmp_path, capsys):
    conf = _write(tmp_path, {"models": ["mcunet-5fps"], "budgets": [15936], "strategies": ["su", "head-only"],
                             "seeds": [0, 1], "epochs": 1, "batch": 16, "train": 16, "test": 8, "topk": "all"})
    assert main(["experiment", str(conf), "--out", str(tmp_path / "o"), "--num-cpus", "2"]) == 0
    out = capsys.readouterr()
    assert "| su | " in out.out and "4 to run (on Ray" in out.err
    assert len(list((tmp_path / "o" / "runs").glob("*.json"))) == 4


def test_experiment_cli_bad_config(tmp_path, capsys):
    assert main(["experiment", str(_write(tmp_path, BASE | {"strategies": ["nope"]}))]) == 2
    err = capsys.readouterr().err
    assert "c.json" in err and "'strategies'" in err and len(err.strip().splitlines()) == 1


@needs_models
@pytest.mark.slow
def test_sim_backend_cell(tmp_path):
    """One cell through `trady compile` + `trady sim` (the generated C), next to the torch trainer."""
    base = {"models": ["mcunet-5fps"], "budgets": [15936], "strategies": ["su"], "seeds": [0], "epochs": 1,
            "lr": 0.01, "train": 8, "test": 8, "topk": "all"}
    sim = ex.run_grid(ex.load_config(_write(tmp_path, base | {"backend": "sim"}, "s.json")), tmp_path / "sim",
                      inline=True, progress=False)
    assert len(sim) == 1 and sim[0]["spec"]["backend"] == "sim"
    row = sim[0]["epochs"][0]
    assert 0 <= row["test_acc"] <= 1 and row["channels"] > 0
    assert (tmp_path / "sim" / "cells" / sim[0]["key"] / "project").is_dir()
    assert "| su | " in (tmp_path / "sim" / "table.md").read_text()
