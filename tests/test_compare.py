"""Paired bootstrap over problems: differences by hand, and the script on a score cache and trivial baselines."""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

import pytest

from uhead_viz.compare import paired_bootstrap

ROOT = Path(__file__).resolve().parents[1]


def test_paired_difference_by_hand():
    rows = [
        {"problem": "P1", "steps": ["a", "b"], "labels": [0, 1]},
        {"problem": "P2", "steps": ["a", "b"], "labels": [0, 1]},
    ]
    # A ranks both wrong steps first everywhere (PR-AUC 1). B does in P2 only: P1 alone 1/2, P2 alone 1,
    # both pooled: 0.9 (fine) > 0.7 (wrong) > 0.3 > 0.1 (wrong) -> 1/2 * 1/2 + 1/2 * 2/4 = 1/2
    res = paired_bootstrap(rows, {"A": [[0.1, 0.9], [0.2, 0.8]], "B": [[0.9, 0.1], [0.3, 0.7]]}, rounds=400)
    a, b = res["methods"]["A"], res["methods"]["B"]
    assert res["reference"] == "A" and res["n_problems"] == 2 and res["n_pairs"] == 0
    assert a["pr_auc"] == 1.0 and a["pr_auc_ci95"] == [1.0, 1.0] and "pairwise" not in a
    assert b["pr_auc"] == pytest.approx(0.5)
    # resamples: P1 twice (B 1/2), P2 twice (B 1), one of each (B 1/2): B - A lies in [-1/2, 0], never ahead
    d = b["pr_auc_minus_A"]
    assert d["point"] == pytest.approx(-0.5) and d["ci95"] == [pytest.approx(-0.5), pytest.approx(0.0)]
    assert d["share_ahead"] == 0.0


def test_paired_pairwise_on_alternatives():
    rows = [
        {"problem": "P", "steps": ["w"], "labels": [1], "ratings": [-1]},
        {"problem": "P", "steps": ["f"], "labels": [0], "ratings": [1]},
    ]
    res = paired_bootstrap(rows, {"A": [[0.9], [0.1]], "B": [[0.1], [0.9]]}, rounds=50)
    assert res["n_pairs"] == 1
    assert res["methods"]["A"]["pairwise"] == 1.0 and res["methods"]["B"]["pairwise"] == 0.0
    assert res["methods"]["B"]["pairwise_minus_A"]["ci95"] == [-1.0, -1.0]


def test_script_reads_caches_and_trivial_baselines(tmp_path, monkeypatch, capsys):
    rows = [
        {"id": "w", "problem": "P", "steps": ["x", "wrong and long"], "labels": [None, 1], "ratings": [None, -1],
         "answer": None},
        {"id": "f", "problem": "P", "steps": ["x", "fine"], "labels": [None, 0], "ratings": [None, 1], "answer": "1"},
        {"id": "q", "problem": "Q", "steps": ["a", "b", "c"], "labels": [0, 1, None], "answer": "2"},
    ]
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cache = tmp_path / "r.scores.jsonl"
    lines = [{"id": "w", "method": "m", "scores": [0.0, 0.2]}, {"id": "f", "method": "m", "scores": [0.0, 0.6]},
             {"id": "q", "method": "m", "scores": [0.1, 0.9]}]
    cache.write_text("".join(json.dumps(x) + "\n" for x in lines))
    out = tmp_path / "c.json"
    args = ["bootstrap_compare.py", "--data", str(data), f"m={cache}:m", "chars_so_far", "is_last_step",
            "--rounds", "100", "--out", str(out)]
    monkeypatch.setattr(sys, "argv", args)
    with pytest.raises(SystemExit) as e:
        runpy.run_path(str(ROOT / "benchmarks" / "bootstrap_compare.py"), run_name="__main__")
    assert e.value.code == 0
    res = json.loads(out.read_text())["methods"]
    assert res["m"]["pairwise"] == 0.0 and res["chars_so_far"]["pairwise"] == 1.0  # the longer step is the wrong one
    # q was cut after its last labelled step, so it has no last step; f ends with its answer: the fine one scores 1
    assert res["is_last_step"]["pairwise"] == 0.0
    assert "| chars_so_far |" in capsys.readouterr().out
