"""Pairwise accuracy among rated alternatives to the same step, by hand, and in ``evaluate``'s report."""

from __future__ import annotations

import json

import pytest

from uhead_viz import llm as llm_module
from uhead_viz.cli import main
from uhead_viz.labels.ratings import add_ratings
from uhead_viz.pairwise import FROM_LABELS, FROM_RATINGS, pairwise_accuracy

P1, P2 = "Problem one?", "Problem two?"


def rows_and_scores():
    """P1: at the start A (wrong) vs B, C (fine); after B, D (wrong) vs E (fine). P2: F (wrong) vs G, H (neutral)."""
    rows = [
        {"problem": P1, "steps": ["A"], "labels": [1], "ratings": [-1]},
        {"problem": P1, "steps": ["B", "E"], "labels": [0, 0], "ratings": [1, 1]},  # trajectory: B, then E
        {"problem": P1, "steps": ["C"], "labels": [0], "ratings": [1]},
        {"problem": P1, "steps": ["B", "D"], "labels": [None, 1], "ratings": [None, -1]},
        {"problem": P1, "steps": ["B", "E"], "labels": [0, None], "ratings": [1, None]},  # B again: counted once
        {"problem": P2, "steps": ["F"], "labels": [1], "ratings": [-1]},
        {"problem": P2, "steps": ["G"], "labels": [0], "ratings": [1]},
        {"problem": P2, "steps": ["H"], "labels": [0], "ratings": [0]},
    ]
    scores = [[0.9], [0.2, 0.3], [0.9], [0.5, 0.1], [0.2, 0.3], [0.6], [0.4], [0.7]]
    return rows, scores


def test_accuracy_ties_and_bootstrap_by_hand():
    rows, scores = rows_and_scores()
    r = pairwise_accuracy(rows, [x["labels"] for x in rows], scores, rounds=2000, seed=0)
    # P1: A>B 1, A=C 0.5, D<E 0 -> 1.5 of 3; P2: F>G 1 of 1 (H is neutral) -> 2.5 of 4
    assert r["accuracy"] == pytest.approx(0.625)
    assert r["n_pairs"] == 4 and r["n_groups"] == 3 and r["n_problems"] == 2
    assert r["compares"] == FROM_RATINGS
    # resampling two problems: P1 twice 0.5, P2 twice 1.0, one of each 0.625
    assert r["ci95"] == [pytest.approx(0.5), pytest.approx(1.0)]


def test_labels_when_rows_have_no_ratings():
    rows, scores = rows_and_scores()
    bare = [{k: v for k, v in x.items() if k != "ratings"} for x in rows]
    r = pairwise_accuracy(bare, [x["labels"] for x in bare], scores)
    # H (label 0) now counts as fine: P2 is F>G 1, F<H 0 -> 2.5 of 5
    assert r["accuracy"] == pytest.approx(0.5) and r["n_pairs"] == 5 and r["compares"] == FROM_LABELS


def test_no_alternatives_no_result_and_tree_field_separates():
    rows = [{"problem": P1, "steps": ["a", "b"], "labels": [0, 1]}]  # one chain per problem: nothing to pair
    assert pairwise_accuracy(rows, [[0, 1]], [[0.1, 0.9]]) is None
    two = [
        {"problem": P1, "tree": "author-x", "steps": ["A"], "labels": [1]},
        {"problem": P1, "tree": "author-y", "steps": ["B"], "labels": [0]},
    ]
    assert pairwise_accuracy(two, [[1], [0]], [[0.9], [0.1]]) is None


def test_add_ratings_matches_text_and_skips_unlabelled_steps():
    table = {(P1, (), "A"): 1, (P1, ("A",), "B"): -1, (P1, ("A",), "C"): 0}
    row = {"problem": P1, "steps": ["A", "B"], "labels": [None, 1]}
    assert add_ratings(row, table)["ratings"] == [None, -1]
    assert add_ratings({**row, "labels": [0, 1]}, table)["ratings"] == [1, -1]
    assert add_ratings({"problem": P1, "steps": ["A", "Z"], "labels": [0, 0]}, table)["ratings"] == [1, None]


def test_evaluate_reports_it_for_rated_alternatives(tmp_path, monkeypatch):
    monkeypatch.setattr(llm_module, "load_llm", lambda *a, **k: pytest.fail("no model should load"))
    rows = [
        {"id": "w", "problem": P1, "steps": ["aa", "wrong-long"], "labels": [None, 1], "ratings": [None, -1]},
        {"id": "f", "problem": P1, "steps": ["aa", "ok"], "labels": [None, 0], "ratings": [None, 1]},
        {"id": "n", "problem": P1, "steps": ["aa", "neutral-x"], "labels": [None, 0], "ratings": [None, 0]},
        {"id": "t", "problem": P1, "steps": ["aa"], "labels": [0], "ratings": [1]},
        {"id": "g", "problem": P2, "steps": ["x", "y"], "labels": [0, 1]},
    ]
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "rep.json"
    args = ["evaluate", "--data", str(data), "--format", "jsonl", "--out", str(out), "--methods"]
    assert main([*args, "step_index,chars_so_far"]) == 0
    m = json.loads(out.read_text())["methods"]
    # one pair (wrong-long vs ok, after "aa"): same position -> a tie; 10 characters against 2 -> a win
    assert m["step_index"]["pairwise"]["accuracy"] == 0.5 and m["step_index"]["pairwise"]["n_pairs"] == 1
    assert m["chars_so_far"]["pairwise"]["accuracy"] == 1.0
    # an old file without ratings: the neutral step counts as fine (labels), two pairs
    data.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "ratings"}) + "\n" for r in rows))
    assert main([*args, "step_index,chars_so_far"]) == 0
    m = json.loads(out.read_text())["methods"]
    assert m["chars_so_far"]["pairwise"]["n_pairs"] == 2 and m["chars_so_far"]["pairwise"]["compares"] == FROM_LABELS
    assert m["chars_so_far"]["pairwise"]["accuracy"] == 1.0  # 10 > 2 and 10 > 9
