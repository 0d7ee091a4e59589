"""Head selection on named validation sets: per-set measures, the ranking rule, and the script end to end."""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

import pytest
import torch

from uhead_viz.capture import CaptureSpec
from uhead_viz.featstore import FeatureStore
from uhead_viz.selection import _ranks, parse_set, rank, set_metrics, trivial_scores
from uhead_viz.train import extract_features
from uhead_viz.uhead import UHead, base_info, save_head

ROOT = Path(__file__).resolve().parents[1]
SPEC = CaptureSpec(window=3, top_k=2)


def test_set_metrics_by_hand():
    rows = [
        {"problem": "p", "steps": ["A"], "labels": [1], "ratings": [-1]},
        {"problem": "p", "steps": ["B"], "labels": [0], "ratings": [1]},
        {"problem": "q", "steps": ["C", "D"], "labels": [0, 0]},
    ]
    m = set_metrics(rows, [[0.9], [0.2], [0.4, 0.1]])
    # the wrong step is above all three fine ones; one pair (A against B), won
    assert m["pr_auc"] == 1.0 and m["roc_auc"] == 1.0 and m["pairwise"] == 1.0 and m["n_pairs"] == 1
    assert m["wrong_steps"] == 1 and m["mean_score_of_fine_steps"] == pytest.approx((0.2 + 0.4 + 0.1) / 3)
    assert trivial_scores(rows, "step_index") == [[0.0], [0.0], [0.0, 0.5]]


def test_ranking_rule_by_hand():
    assert _ranks([0.8, 0.6, 0.6, None]) == [1.0, 2.5, 2.5, 4.0]
    results = {
        "h1": {"A": {"pairwise": 0.8, "pr_auc": 0.5}, "B": {"pairwise": None, "pr_auc": 0.9}},
        "h2": {"A": {"pairwise": 0.6, "pr_auc": 0.7}, "B": {"pairwise": None, "pr_auc": 0.9}},
        "h3": {"A": {"pairwise": 0.6, "pr_auc": None}, "B": {"pairwise": None, "pr_auc": 0.1}},
    }
    reference = {"step_index": {"A": {"pairwise": 0.5, "pr_auc": 0.6}, "B": {"pairwise": None, "pr_auc": 0.2}}}
    got = rank(results, reference)
    # criteria (A, pairwise), (A, PR-AUC), (B, PR-AUC): h1 ranks 1, 2, 1.5; h2 2.5, 1, 1.5; h3 2.5, 3, 3
    assert [e["name"] for e in got] == ["h1", "h2", "h3"]
    assert [e["mean_rank"] for e in got] == [pytest.approx(1.5), pytest.approx(5 / 3), pytest.approx(8.5 / 3)]
    # only h2 is above the trivial baseline on every measure (h1's A PR-AUC 0.5 < 0.6)
    assert [e["beats_trivial"] for e in got] == [False, True, False]


def test_parse_set(tmp_path):
    (tmp_path / "a.jsonl").write_text("")
    (tmp_path / "b.jsonl").write_text("")
    name, files = parse_set(f"v={tmp_path}/*.jsonl")
    assert name == "v" and [f.name for f in files] == ["a.jsonl", "b.jsonl"]
    for bad in ("novalue", f"={tmp_path}/a.jsonl", f"v={tmp_path}/none.jsonl"):
        with pytest.raises(ValueError):
            parse_set(bad)


def _script(monkeypatch, args: list[str]) -> int:
    monkeypatch.setattr(sys, "argv", ["val_compare.py", *args])
    try:
        runpy.run_path(str(ROOT / "benchmarks" / "val_compare.py"), run_name="__main__")
    except SystemExit as e:
        return int(e.code or 0)
    return 0


def test_script_ranks_heads_on_named_sets(tmp_path, llama_llm, monkeypatch, capsys):
    alts = [  # alternatives to the second step of one problem: two wrong, one fine
        {"id": f"a{i}", "problem": "Alternatives?", "steps": ["Step 1: start", f"Step 2: {t}"],
         "labels": [None, y], "ratings": [None, -1 if y else 1]}
        for i, (t, y) in enumerate([("7 wrong", 1), ("is right", 0), ("8 wrong", 1)])
    ]
    chains = [
        {"id": f"c{i}", "problem": f"question {i}", "steps": ["Step 1: is right", "Step 2: 9 wrong"], "labels": [0, 1]}
        for i in range(3)
    ]
    for name, rows in (("alts", alts), ("chains", chains)):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    store = FeatureStore(tmp_path / "store", SPEC, base_info(llama_llm))
    assert extract_features(alts + chains, llama_llm, store, SPEC) == 6
    store.close()
    for seed in (0, 1):
        torch.manual_seed(seed)
        head = UHead.for_llm(llama_llm, SPEC, d_model=16, n_layers=1, n_heads=2, d_ff=32).eval()
        save_head(head, tmp_path / f"h{seed}")
    out = tmp_path / "r.json"
    cmd = ["--set", f"alts={tmp_path / 'alts.jsonl'}", "--set", f"chains={tmp_path / 'chains.jsonl'}",
           "--heads", str(tmp_path / "h0"), str(tmp_path / "h1"), str(tmp_path / "missing"),
           "--store", str(tmp_path / "store"), "--rounds", "50", "--out", str(out)]
    assert _script(monkeypatch, cmd) == 0
    res = json.loads(out.read_text())
    assert res["selected"] in (str(tmp_path / "h0"), str(tmp_path / "h1"))
    assert set(res["heads"]) == {str(tmp_path / "h0"), str(tmp_path / "h1")}
    for per in res["heads"].values():
        assert per["alts"]["n_pairs"] == 2 and per["chains"]["n_pairs"] == 0 and per["chains"]["pairwise"] is None
    # position alone cannot order alternatives to the same step
    assert res["trivial"]["step_index"]["alts"]["pairwise"] == 0.5
    assert res["trivial"]["step_index"]["chains"]["pr_auc"] == 1.0  # but it wins where errors come last
    assert "| (step_index) |" in capsys.readouterr().out
    # --held-out keeps only train's validation-split problems: here none of the alternatives' one problem
    cmd_h = [*cmd, "--held-out", "alts", "--val-fraction", "0.0"]
    assert _script(monkeypatch, cmd_h) == 0
    assert set(json.loads(out.read_text())["sets"]) == {"chains"}
