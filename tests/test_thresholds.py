"""F1 over thresholds, bootstrap helpers, and each method's threshold chosen on validation data."""

from __future__ import annotations

import json

import numpy as np
import pytest

from uhead_viz import llm as llm_module
from uhead_viz.cli import main
from uhead_viz.metrics import (
    best_threshold,
    best_threshold_by_group,
    bootstrap_indices,
    f1_over_thresholds,
    percentile_ci,
)
from uhead_viz.thresholds import FIXED, STORED, ValThresholds, threshold_for

# first error at 1, none, first error at 0
GOLD = [1, -1, 0]
SCORES = [[0.2, 0.8], [0.3, 0.4], [0.6, 0.1]]


def test_f1_over_thresholds_by_hand():
    f1 = f1_over_thresholds(GOLD, SCORES, [0.25, 0.5, 0.7, 0.9])
    # 0.25: the clean chain is flagged (correct acc 0) -> 0; 0.5: all right -> 1;
    # 0.7: the third chain's 0.6 is missed (error acc 1/2, correct acc 1) -> 2/3; 0.9: nothing found -> 0
    assert f1.tolist() == [0.0, 1.0, pytest.approx(2 / 3), 0.0]
    assert np.isnan(f1_over_thresholds([1], [[0.1, 0.9]], [0.5])).all()  # no clean chain: undefined
    assert best_threshold(GOLD, SCORES) == (pytest.approx(0.5), 1.0)  # midpoint of 0.4 and 0.6


def test_threshold_by_group_serves_every_source_not_the_largest():
    # source "a" (8 chains) is best cut in [0.2, 0.5), and still fair at 0.75; source "b" (2 chains)
    # is right only in [0.7, 0.8). Pooled, "a" outvotes "b"; the mean over sources serves both.
    gold = [1] * 4 + [-1] * 4 + [1, -1]
    scores = [[0.1, 0.9]] * 2 + [[0.1, 0.5]] * 2 + [[0.2, 0.2]] * 4 + [[0.5, 0.8], [0.7, 0.7]]
    groups = ["a"] * 8 + ["b"] * 2
    t, f1 = best_threshold(gold, scores)
    assert 0.2 <= t < 0.5 and f1 == pytest.approx(0.8)
    t, mean_f1 = best_threshold_by_group(gold, scores, groups)
    assert 0.7 <= t < 0.8 and mean_f1 == pytest.approx((2 / 3 + 1) / 2)
    assert best_threshold_by_group(gold, scores, ["a"] * 10) == best_threshold(gold, scores)
    # a source with no correct chain has no F1 and is left out of the mean
    assert best_threshold_by_group(gold + [0], scores + [[0.9]], groups + ["c"]) == pytest.approx((t, mean_f1))


def test_bootstrap_helpers():
    a, b = bootstrap_indices(5, rounds=100, seed=3), bootstrap_indices(5, rounds=100, seed=3)
    assert a.shape == (100, 5) and (a == b).all() and a.min() >= 0 and a.max() <= 4
    lo, hi = percentile_ci([float("nan"), *range(101)])  # NaN draws dropped; numpy's linear percentile
    assert (lo, hi) == (pytest.approx(2.5), pytest.approx(97.5))


def test_policies():
    head = type("H", (), {"threshold": 0.42})()
    uhead = type("S", (), {"head": head})()
    assert threshold_for("uhead", uhead, "default", GOLD, SCORES) == (0.42, STORED)
    assert threshold_for("maxprob", object(), "default", GOLD, SCORES) == (0.5, FIXED)
    val = ValThresholds("val.json", {"maxprob": 0.3})
    t, how = threshold_for("maxprob", object(), val, GOLD, SCORES)
    assert t == 0.3 and "validation (val.json)" in how
    t, how = threshold_for("minprob", object(), val, GOLD, SCORES)
    assert t == 0.5 and "not in val.json" in how


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_evaluate_thresholds_from_validation(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(llm_module, "load_llm", lambda *a, **k: pytest.fail("no model should load"))
    q = "What is 1 + 1?"
    val, test = tmp_path / "val.jsonl", tmp_path / "test.jsonl"
    # step_index scores 0, 1/2, 2/3: on validation only a cut between 1/2 and 2/3 gets both chains right
    _write(val, [
        {"id": "v1", "problem": q, "steps": ["a", "b", "c"], "labels": [0, 0, 1]},
        {"id": "v2", "problem": q, "steps": ["a", "b"], "labels": [0, 0]},
    ])
    _write(test, [
        {"id": "t1", "problem": q, "steps": ["a", "b", "c"], "labels": [0, 0, 1]},
        {"id": "t2", "problem": q, "steps": ["a", "b"], "labels": [0, 1]},
        {"id": "t3", "problem": q, "steps": ["a", "b"], "labels": [0, 0]},
    ])
    out = tmp_path / "rep.json"
    args = ["evaluate", "--data", str(test), "--format", "jsonl", "--out", str(out), "--methods", "step_index"]
    assert main([*args, "--thresholds-from", str(val)]) == 0
    rep = json.loads(out.read_text())
    r = rep["methods"]["step_index"]
    assert rep["threshold_policy"] == "validation" and rep["thresholds_from"] == str(val)
    assert r["threshold"] == pytest.approx((0.5 + 0.666667) / 2) and "validation" in r["threshold_from"]
    # t1's error found at step 3, t2's (score 1/2) missed, t3 clean: error acc 1/2, correct acc 1
    assert r["f1"] == pytest.approx(2 / 3, abs=1e-6)
    # this data's own best cut is recorded for later runs (here the same: a cut at 1/4 finds t2 but flags t1 and t3)
    assert r["f1_best"]["f1"] == pytest.approx(2 / 3, abs=1e-6)
    val_rep = json.loads((tmp_path / "rep.val.json").read_text())
    assert val_rep["methods"]["step_index"]["f1_best"]["f1"] == 1.0
    assert "F1 thresholds, best F1 on validation" in capsys.readouterr().out

    # the validation report itself works as VAL, with the same cut
    assert main([*args, "--thresholds-from", str(tmp_path / "rep.val.json")]) == 0
    assert json.loads(out.read_text())["methods"]["step_index"]["threshold"] == pytest.approx(r["threshold"])
    # without it: a fixed 0.5, said so
    assert main(args) == 0
    assert json.loads(out.read_text())["methods"]["step_index"]["threshold_from"] == FIXED
    # both, or a report from before cuts were recorded: a user error
    assert main([*args, "--thresholds-from", str(val), "--threshold", "0.3"]) == 2
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"methods": {"step_index": {"pr_auc": 0.5}}}))
    assert main([*args, "--thresholds-from", str(old)]) == 2
    assert "f1_best" in capsys.readouterr().err
