"""Position and length baselines: their scores by hand, and ``evaluate`` running them with no model."""

from __future__ import annotations

import json

import pytest

from uhead_viz import llm as llm_module
from uhead_viz.cli import main
from uhead_viz.scorers import get_scorer
from uhead_viz.scorers.trivial import row_finished, text_chain

Q = "What is 1 + 2 + 3?"


def test_scores_by_hand():
    done = text_chain({"problem": Q, "steps": ["ab", "Step 2: cde", " f "], "answer": "6"})
    open_ = text_chain({"problem": Q, "steps": ["ab", "cde"], "answer": None})
    pb = text_chain({"problem": Q, "steps": ["ab"]})  # ProcessBench rows have no answer key: complete
    scorers = {m: get_scorer(m, None) for m in ("step_index", "chars_so_far", "is_last_step")}
    out = {m: s.score([done, open_, pb]) for m, s in scorers.items()}
    assert out["step_index"] == [[0.0, 0.5, pytest.approx(2 / 3)], [0.0, 0.5], [0.0]]
    # bodies without the "Step k:" marker and outer spaces: 2, 3, 1 characters
    assert out["chars_so_far"][0] == [pytest.approx(2 / 502), pytest.approx(5 / 505), pytest.approx(6 / 506)]
    assert out["is_last_step"] == [[0.0, 0.0, 1.0], [0.0, 0.0], [1.0]]
    assert not row_finished({"answer": "  "}) and row_finished({"answer": 0})


def test_evaluate_runs_them_without_a_model(tmp_path, monkeypatch):
    def no_model(*a, **k):
        raise AssertionError("no model should load")

    monkeypatch.setattr(llm_module, "load_llm", no_model)
    rows = [
        {"id": "r1", "problem": Q, "steps": ["a", "b", "c"], "labels": [0, 0, 1], "answer": "6"},
        {"id": "r2", "problem": Q, "steps": ["a", "x"], "labels": [0, 1], "answer": None},
        # cut after its last labelled step: what is kept does not end the chain
        {"id": "r3", "problem": "What is 2 + 2?", "steps": ["a", "b", "c"], "labels": [0, 0, None], "answer": "4"},
    ]
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "rep.json"
    args = ["evaluate", "--data", str(data), "--format", "jsonl", "--out", str(out)]
    assert main([*args, "--methods", "step_index,is_last_step"]) == 0
    rep = json.loads(out.read_text())
    assert rep["model"] is None and rep["n_chains"] == 3
    # step_index: wrong steps at 2/3 and 1/2; fine ones at 0, 0, 0, 1/2, 1/2 -> AP = .5 * 1 + .5 * 2/4
    assert rep["methods"]["step_index"]["pr_auc"] == pytest.approx(0.75)
    # is_last_step: only r1's last step is 1 (r2 has no answer, r3 was cut) -> AP = .5 * 1 + .5 * 2/7
    assert rep["methods"]["is_last_step"]["pr_auc"] == pytest.approx(0.5 + 1 / 7, abs=1e-6)
    cache = [json.loads(x) for x in (tmp_path / "rep.scores.jsonl").read_text().splitlines()]
    assert {e["by"] for e in cache} == {"no model"}
    assert main([*args, "--methods", "step_index,is_last_step"]) == 0  # resumes from the cache
    assert json.loads(out.read_text())["methods"] == rep["methods"]
