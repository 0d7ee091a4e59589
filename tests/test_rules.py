"""The small rules that are written once and called from everywhere: exact values."""

from __future__ import annotations

import pytest

from uhead_viz import engine, evaluate
from uhead_viz.jsonl import NO_PROBLEM, PROBLEM_KEYS, problem_of
from uhead_viz.labels.api_judge import verdicts_to_labels
from uhead_viz.labels.base import first_error_labels
from uhead_viz.labels.checks import answer_value
from uhead_viz.labels.human import processbench_rows
from uhead_viz.llm import last_number
from uhead_viz.scorers import sanitize_score
from uhead_viz.scorers.combined import combine
from uhead_viz.scoring import attach, row_problem, scored_row


# ----- 1 - (1 - a)(1 - b) -------------------------------------------------------------------------
@pytest.mark.parametrize(
    "a, b, want",
    [(0.0, 0.0, 0.0), (1.0, 0.0, 1.0), (0.0, 1.0, 1.0), (0.5, 0.5, 0.75), (0.25, 0.5, 0.625), (0.2, 0.1, 0.28)],
)
def test_combine(a, b, want):
    assert combine(a, b) == pytest.approx(want, abs=1e-15)
    assert combine(b, a) == combine(a, b)


def test_engine_uses_the_one_combine():
    assert engine.combine is combine


# ----- scores kept in [0, 1] ------------------------------------------------------------------------
@pytest.mark.parametrize(
    "p, want",
    [(0.0, 0.0), (1.0, 1.0), (0.375, 0.375), (-0.25, 0.0), (1.5, 1.0), (float("nan"), 1.0), (float("inf"), 1.0),
     (float("-inf"), 1.0), (-1e-12, 0.0)],
)
def test_sanitize_score(p, want):
    assert sanitize_score(p) == want


def test_sanitize_score_takes_numbers_of_any_kind():
    import numpy as np
    import torch

    assert sanitize_score(np.float32(0.5)) == 0.5
    assert sanitize_score(torch.tensor(2.0)) == 1.0
    assert sanitize_score(1) == 1.0 and isinstance(sanitize_score(1), float)


# ----- ProcessBench's first-error index -------------------------------------------------------------
@pytest.mark.parametrize(
    "k, n, want",
    [(-1, 3, [0, 0, 0]), (0, 3, [1, None, None]), (1, 3, [0, 1, None]), (2, 3, [0, 0, 1]), (-1, 0, []), (0, 1, [1])],
)
def test_first_error_labels(k, n, want):
    assert first_error_labels(k, n) == want


@pytest.mark.parametrize("k, n", [(3, 3), (-2, 3), (0, 0)])
def test_first_error_labels_refuses_an_index_out_of_range(k, n):
    with pytest.raises(ValueError, match="out of range"):
        first_error_labels(k, n)


def test_every_reader_of_processbench_labels_agrees():
    row = {"id": "a", "problem": "p", "steps": ["s1", "s2", "s3", "s4"], "label": 1}
    want = [0, 1, None, None]
    assert processbench_rows([row])[0]["labels"] == want
    assert engine.row_labels(row, 4) == want
    assert engine.row_labels({**row, "label": 4}, 4) is None  # out of range: no labels rather than an error
    assert verdicts_to_labels([True, False, True, False], 0.8, "t").labels == want


def test_evaluate_reads_processbench_labels_the_same_way(tmp_path):
    import json

    p = tmp_path / "pb.json"
    p.write_text(json.dumps([{"id": "a", "problem": "p", "steps": ["s1", "s2", "s3"], "label": 0}]))
    items, skipped = evaluate.load_items(p, "processbench")
    assert skipped == []
    assert items[0].labels == [1]  # steps after the last labelled one are dropped
    assert items[0].gold == 0


# ----- which key holds the problem ------------------------------------------------------------------
def test_problem_of():
    assert PROBLEM_KEYS == ("problem", "question", "instruction")
    assert problem_of({"problem": " P ", "question": "Q"}) == " P "  # as written, first key first
    assert problem_of({"problem": "  ", "question": "Q"}) == "Q"  # blank text does not count
    assert problem_of({"problem": 3, "instruction": "I"}) == "I"  # nor does a non-string
    assert problem_of({"steps": []}) is None
    assert NO_PROBLEM == "no problem text (under 'problem', 'question', 'instruction')"


def test_row_problem_and_the_jsonl_check_use_it():
    from uhead_viz.errors import RowError

    assert row_problem({"question": "Q"}) == "Q"
    with pytest.raises(RowError, match=r"no problem text \(under 'problem', 'question', 'instruction'\)"):
        row_problem({"problem": ""})
    assert evaluate._check_jsonl({"instruction": "I", "steps": ["a"], "labels": [0]}) is None
    assert evaluate._check_jsonl({"steps": ["a"], "labels": [0]}) == NO_PROBLEM


# ----- the two answer readers -------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text, value, last",
    [
        ("72", 72.0, 72.0),
        ("\\frac{1}{2}", 0.5, 2.0),  # evaluated vs the last literal
        ("x = 3 + 4", 7.0, 4.0),
        ("3 apples and 42 pears", 42.0, 42.0),
        ("$1,250.50", 1250.5, 1250.5),
        ("none", None, None),
    ],
)
def test_answer_value_evaluates_and_last_number_reads(text, value, last):
    assert answer_value(text) == value
    assert last_number(text) == last


# ----- the scored row ----------------------------------------------------------------------------------
def test_scored_row(llama_llm):
    row = {"id": "r", "problem": "p", "steps": ["a", "b"], "scores": {"old": [0.5, 0.5], "maxprob": [0.0, 0.0]}}
    out = scored_row(row, {"maxprob": [0.1, 0.2]}, llama_llm, {"head": None}, id="r2", primary="maxprob")
    assert out == {
        "id": "r2",
        "problem": "p",
        "steps": ["a", "b"],
        "scores": {"old": [0.5, 0.5], "maxprob": [0.1, 0.2]},
        "primary": "maxprob",
        "scored_by": {"model": llama_llm.name, "fingerprint": llama_llm.fingerprint, "head": None},
    }
    assert row["scores"]["maxprob"] == [0.0, 0.0]  # the input row is left as it was


def test_attach_is_scored_row_without_a_head(llama_llm):
    row = {"id": "r", "problem": "p", "steps": ["a"], "scores": "not a dict"}
    out = attach(row, {"minprob": [0.25]}, llama_llm, {})
    assert out == scored_row(row, {"minprob": [0.25]}, llama_llm)
    assert out["scores"] == {"minprob": [0.25]}  # a "scores" that is not a dict is replaced
