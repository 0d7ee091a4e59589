"""Step labelers: the arithmetic parser and evaluator, the checks labeler, human-label importers."""

from __future__ import annotations

import builtins
import json
import logging
import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from uhead_viz.labels import LABELERS, Labeler, StepLabels, available, get_labeler
from uhead_viz.labels.checks import (
    CONF_ARITH_ERROR,
    CONF_CORRECT_ANSWER,
    CONF_LAST_STEP_GUESS,
    answer_correct,
    answer_value,
    arithmetic_errors,
    find_equations,
    reference_answer,
    safe_eval,
)
from uhead_viz.labels.human import PRM800K_SOURCE, prm800k_rows, processbench_rows, to_processbench
from uhead_viz.steps import Chain

PRM800K = Path(__file__).resolve().parents[2] / "shared" / "data" / "prm800k_phase1_test_stepwise.parquet"


def chain(steps: list[str], answer: str | None) -> Chain:
    return Chain("a problem", steps, answer, text="", prompt_ids=[1], ids=[2, 3], spans=[(0, 1)] * len(steps))


# ---------------------------------------------------------------- safe_eval


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("3 + 4", 7),
        ("2 * (3 + 4)", 14),
        ("10 - 2 - 3", 5),
        ("-3 + 5", 2),
        ("--5", 5),
        ("7 / 2", 3.5),
        ("1,000 + 2,500.5", 3500.5),
        ("$1,000 x 3", 3000),
        ("\\$12.50 * 2", 25),
        ("3 × 4", 12),
        ("3x4", 12),
        ("3 \\times 4 \\cdot 2", 24),
        ("10 ÷ 4", 2.5),
        ("10 \\div 4", 2.5),
        ("8 − 3", 5),
        ("\\frac{3}{4} + 1", 1.75),
        ("50%", 0.5),
        ("20 * 15%", 3),
        ("007 + 1", 8),
        (".5 * 4", 2),
    ],
)
def test_safe_eval_values(text, value):
    assert safe_eval(text) == pytest.approx(value)


def test_safe_eval_percent_as_plain_number():
    assert safe_eval("25%", percent=False) == 25
    assert safe_eval("25%") == 0.25


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "hello",
        "x + 1",
        "2 ** 10",
        "2^10",
        "7 // 2",
        "1 / 0",
        "(1 + 2",
        "1e5",
        "1_000",
        "1 2",
        "()",
        "(1)(2)",
        "9" * 400,
        "(" * 150 + "1" + ")" * 150,
        "__import__('os').system('echo pwned')",
        "open('/etc/passwd').read()",
        "[1, 2][0]",
        "(1).__class__",
        "lambda: 1",
    ],
)
def test_safe_eval_refuses(text):
    assert safe_eval(text) is None


def test_safe_eval_overflow_is_refused():
    assert safe_eval("9" * 200 + " * " + "9" * 200) is None  # 1e399: not finite
    assert safe_eval("9" * 140 + " * " + "9" * 140) == pytest.approx(1e280)


def test_nothing_is_eval_or_exec(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("eval/exec called")

    monkeypatch.setattr(builtins, "eval", boom)
    monkeypatch.setattr(builtins, "exec", boom)
    assert safe_eval("__import__('os').system('echo pwned')") is None
    assert find_equations("__import__('os').system('echo pwned') = 0 and 3 + 4 = 8")[0].ok is False


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_safe_eval_never_raises_on_any_text(text):
    v = safe_eval(text)
    assert v is None or (isinstance(v, float) and math.isfinite(v))


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="0123456789+-*/().,$%x×÷=e_ \\", max_size=60), st.booleans())
def test_safe_eval_and_finder_never_raise_on_arithmetic_like_text(text, percent):
    v = safe_eval(text, percent)
    assert v is None or (isinstance(v, float) and math.isfinite(v))
    for eq in find_equations(text):
        assert math.isfinite(eq.value) and math.isfinite(eq.written)


# ---------------------------------------------------------------- finding equations


@pytest.mark.parametrize(
    ("text", "verdicts"),
    [
        ("She has 3 + 4 = 7 apples.", [True]),
        ("She has 3 + 4 = 8 apples.", [False]),
        ("12 * 3 = 36 and 36 - 6 = 31", [True, False]),
        ("10/3 = 3.33", [True]),  # rounded to the places shown
        ("2/3 = 0.67", [True]),
        ("2/3 = 0.66", [True]),  # truncated
        ("10 / 3 = 3 full boxes", [True]),
        ("10/3 = 4 buses", [True]),
        ("10/3 = 3.34", [False]),
        ("10/3 = 5", [False]),
        ("5.5 + 2 = 7.4", [False]),  # exact with one place: no rounding excuse
        ("It costs $1,000 x 3 = $3,000.", [True]),
        ("It costs $1,000 x 3 = $3,300.", [False]),
        ("\\$2.50 \\times 4 = \\$10", [True]),
        ("50% * 20 = 10", [True]),
        ("5/20 * 100 = 25%", [True]),
        ("5/20 * 100 = 30%", [False]),
        ("2 × 3 × 4 = 24", [True]),
        ("2 × 3 × 4 = 20", [False]),
        ("20 ÷ 4 = 5", [True]),
        ("2 + 3 * 4 - 1 = 13", [True]),
        ("(2 + 3) * 4 = 20", [True]),
        ("(so 2 + 3 = 5)", [True]),
        ("x = 3 + 4 = 8", [False]),
        ("3 + 4 = 7 = 7", [True]),
        ("2 + 2 = 3 + 1 = 4", [True, True]),
        ("2 + 2 = 3 + 2 = 5", [False, True]),
        ("-3 + 5 = 2", [True]),
        ("3 - 5 = -2", [True]),
        ("1/2 + 1/3 = 5/6", [True]),
        ("$\\frac{1}{5} \\cdot \\frac{8}{7} \\div \\frac{12}{20} = \\frac{8}{21}$", [True]),
        ("<<12*3=35>>35", [False]),
        ("$2.50 - $2.24 = 26 cents", [True]),
        ("25 / 1/3 = 75 decorations", [True]),  # a / b/c read as a / (b/c)
    ],
)
def test_find_equations(text, verdicts):
    assert [e.ok for e in find_equations(text)] == verdicts


@pytest.mark.parametrize(
    "text",
    [
        "",
        "There are no numbers here.",
        "She has 12 apples and 3 pears.",
        "2x + 3 = 7",  # a variable, not arithmetic
        "y - 3 = 4",
        "x^2 + 2 + 3 = 10",
        "2^3 + 1 = 10",
        "3 * 4 = 12x",
        "2\\sqrt{2} + 1 = 3.83",
        "5! = 120",
        "10% of 150 = 75 + 15",  # a bare number left of an expression ends a phrase
        "P(X=4) = \\frac{8}{25}",
        "0900 - 0130 = 0730 hours",
        "3,5 + 1 = 4,5",
        "The ratio is 1:2 + 3 = 5",
        "12 = 12",
        "Let a = 5 and b = 6.",
    ],
)
def test_no_checkable_equation(text):
    assert find_equations(text) == []


def test_error_message_names_the_value():
    (e,) = arithmetic_errors("So 12 * 3 = 34 apples.")
    assert e.value == 36 and e.written == 34 and "36" in str(e)


# ---------------------------------------------------------------- answers


@pytest.mark.parametrize(
    ("answer", "reference", "expected"),
    [
        ("18", "She makes 9 * 2 = <<9*2=18>>18 dollars.\n#### 18", True),
        ("$18.00", "#### 18", True),
        ("18 dollars", "18", True),
        ("1,000", "#### 1,000", True),
        ("x = 1/2", "\\frac{1}{2}", True),
        ("\\boxed{10}", "10\\text{ inches}", True),
        ("\\sqrt{53}", "\\sqrt{53}", True),
        ("53", "\\sqrt{53}", False),
        ("17", "#### 18", False),
        ("eighteen", "18", False),
        (None, "#### 18", False),
        ("  ", "#### 18", False),
        ("18", None, None),
        ("18 dollars a day, 126 a week", "#### 126", True),  # any number it states
        ("x = 3 and x = 5", "3, 5", True),  # a two-part answer, in any order
        ("(5,3)", "(3,5)", True),
        ("x=-2 or x=1", "1, -2", True),
        ("3 and 5", "3, 5, 7", False),
        ("x = 3", "3, 5", False),
        ("2\\sqrt{3}", "#### 2", False),  # a number inside an expression states nothing
        ("\\frac{1}{2}", "#### 2", False),
    ],
)
def test_answer_correct(answer, reference, expected):
    assert answer_correct(answer, reference) is expected


def test_reference_and_answer_values():
    assert reference_answer("work\n#### 1,234") == "1,234"
    assert reference_answer("  ") is None
    assert answer_value("The answer is 3 apples and 42 pears") == 42
    assert answer_value("$1,250.50") == 1250.5
    assert answer_value("none") is None


# ---------------------------------------------------------------- the checks labeler


def test_registry():
    assert "checks" in available()
    lab = get_labeler("checks")
    assert isinstance(lab, Labeler) and lab.name == "checks" and LABELERS["checks"] is type(lab)
    with pytest.raises(KeyError, match="Unknown labeler"):
        get_labeler("nope")


def test_step_labels_validate():
    StepLabels([0, 1, None], [0.5, 1.0, 0.0], "x")
    with pytest.raises(ValueError):
        StepLabels([0], [0.5, 0.5], "x")
    with pytest.raises(ValueError):
        StepLabels([2], [0.5], "x")
    with pytest.raises(ValueError):
        StepLabels([True], [0.5], "x")
    with pytest.raises(ValueError):
        StepLabels([0], [1.5], "x")


def label(steps, answer, reference):
    got = get_labeler("checks").label(chain(steps, answer), reference)
    assert got.source == "checks" and len(got.labels) == len(got.confidence) == len(steps)
    return got.labels, got.confidence


def test_correct_answer_no_errors():
    steps = ["Step 1: 3 * 4 = 12 apples.", "Step 2: 12 + 5 = 17 apples."]
    assert label(steps, "17", "#### 17") == ([0, 0], [CONF_CORRECT_ANSWER] * 2)


def test_correct_answer_with_an_arithmetic_error():
    steps = ["Step 1: 3 * 4 = 13 apples.", "Step 2: then 13 + 4 = 17."]
    assert label(steps, "17", "#### 17") == ([1, 0], [CONF_ARITH_ERROR, CONF_CORRECT_ANSWER])


def test_wrong_answer_first_error_only():
    steps = ["Step 1: 2 + 2 = 4.", "Step 2: 4 * 3 = 13.", "Step 3: 13 + 1 = 15.", "Step 4: so 15."]
    labels, conf = label(steps, "15", "#### 13")
    assert labels == [None, 1, None, None]
    assert conf == [0.0, CONF_ARITH_ERROR, 0.0, 0.0]


def test_wrong_answer_no_error_last_step_made_it():
    steps = ["Step 1: 3 * 4 = 12 apples.", "Step 2: 12 + 6 = 18 apples."]
    assert label(steps, "18", "#### 17") == ([None, 1], [0.0, CONF_LAST_STEP_GUESS])


def test_wrong_answer_no_error_last_step_did_not():
    steps = ["Step 1: 3 * 4 = 12 apples.", "Step 2: she keeps 12 of them."]
    assert label(steps, "18", "#### 17") == ([None, None], [0.0, 0.0])


def test_missing_answer_is_wrong_but_no_guess():
    steps = ["Step 1: 3 * 4 = 12 apples.", "Step 2: 12 + 6 = 18 apples."]
    assert label(steps, None, "#### 17") == ([None, None], [0.0, 0.0])
    assert label(["Step 1: 3 * 4 = 11."], None, "#### 17") == ([1], [CONF_ARITH_ERROR])


def test_no_reference_only_arithmetic():
    steps = ["Step 1: 3 * 4 = 12.", "Step 2: 12 + 6 = 19.", "Step 3: 19 - 1 = 17."]
    assert label(steps, "17", None)[0] == [None, 1, None]
    assert label(steps[:1], "12", None)[0] == [None]


def test_plain_reference_and_empty_chain():
    assert label(["3 + 3 = 6"], "6", "6")[0] == [0]
    assert label([], "6", "6") == ([], [])


# ---------------------------------------------------------------- ProcessBench


PB = [
    {
        "id": "gsm8k-0",
        "generator": "Qwen2-7B",
        "problem": "P0",
        "steps": ["a", "b", "c"],
        "final_answer_correct": False,
        "label": 1,
    },
    {
        "id": "gsm8k-1",
        "generator": "Qwen2-7B",
        "problem": "P1",
        "steps": ["a", "b"],
        "final_answer_correct": True,
        "label": -1,
    },
    {"id": "gsm8k-2", "generator": "Llama", "problem": "P2", "steps": ["a"], "final_answer_correct": False, "label": 0},
]


def test_processbench_labels():
    rows = processbench_rows(PB)
    assert [r["labels"] for r in rows] == [[0, 1, None], [0, 0], [1]]
    assert rows[0]["generator"] == "Qwen2-7B" and rows[0]["final_answer_correct"] is False
    assert set(rows[0]) == {"id", "problem", "steps", "labels", "generator", "final_answer_correct"}


@pytest.mark.parametrize("fmt", ["json", "jsonl"])
def test_processbench_file_with_malformed_rows(tmp_path, caplog, fmt):
    bad = [
        {"id": "no-steps", "problem": "P", "label": 0},
        {"id": "out-of-range", "problem": "P", "steps": ["a", "b"], "label": 2},
        {"id": "below-range", "problem": "P", "steps": ["a"], "label": -2},
        {"id": "not-strings", "problem": "P", "steps": ["a", 3], "label": 0},
        {"id": "steps-is-text", "problem": "P", "steps": "a b", "label": 0},
        {"id": "bool-label", "problem": "P", "steps": ["a"], "label": True},
        {"id": "empty-step", "problem": "P", "steps": ["a", " "], "label": 0},
        {"problem": "P", "steps": ["a"], "label": 0},
        {"id": "gsm8k-0", "problem": "again", "steps": ["a"], "label": 0},
        [1, 2],
    ]
    path = tmp_path / f"pb.{fmt}"
    if fmt == "json":
        path.write_text(json.dumps(PB + bad))
    else:
        path.write_text("\n".join([json.dumps(r) for r in PB + bad] + ["{not json", ""]))
    with caplog.at_level(logging.WARNING, logger="uhead_viz.labels.human"):
        rows = processbench_rows(path)
    assert [r["id"] for r in rows] == ["gsm8k-0", "gsm8k-1", "gsm8k-2"]
    text = caplog.text
    for rid in ("no-steps", "out-of-range", "below-range", "not-strings", "steps-is-text", "bool-label", "empty-step"):
        assert rid in text
    assert "out of range" in text and "missing 'steps'" in text and "repeats an earlier id" in text
    assert "line 8" in text and "not a JSON object" in text
    if fmt == "jsonl":
        assert "not valid JSON" in text


def test_processbench_unparseable_file_does_not_crash(tmp_path, caplog):
    path = tmp_path / "pb.json"
    path.write_text("[{broken")
    with caplog.at_level(logging.ERROR):
        assert processbench_rows(path) == []
    assert "pb.json" in caplog.text


def test_to_processbench_round_trip():
    assert to_processbench(processbench_rows(PB)) == PB


def test_to_processbench_rules(caplog):
    rows = [
        {"id": "a", "problem": "P", "steps": ["s1", "s2", "s3"], "labels": [0, None, 1], "source": "x"},
        {"id": "b", "problem": "P", "steps": ["s1", "s2"], "labels": [0, None]},
        {"id": "c", "problem": "P", "steps": ["s1", "s2"], "labels": [1, 1]},
        {"id": "d", "problem": "P", "steps": ["s1"], "labels": [None]},
        {"id": "e", "problem": "P", "steps": ["s1"], "labels": [0, 0]},
    ]
    with caplog.at_level(logging.WARNING):
        out = to_processbench(rows)
    assert [(r["id"], r["label"], len(r["steps"])) for r in out] == [("a", 2, 3), ("b", -1, 2), ("c", 0, 2)]
    assert out[0]["source"] == "x" and "labels" not in out[0]
    assert "Skipping row d" in caplog.text and "Skipping row e" in caplog.text


# ---------------------------------------------------------------- PRM800K


def _tiny_prm(tmp_path: Path) -> Path:
    """Two depths: at depth 0 one preferred step and two alternatives (one repeated), at depth 1
    a human-written step (taken) and an alternative, at depth 2 the preferred final step."""
    import pandas as pd

    r = [
        ("Q", [], "good 1", None, False, False, True, 1.0),
        ("Q", [], "bad 1", None, False, False, False, -1.0),
        ("Q", [], "bad 1", None, False, False, False, -1.0),
        ("Q", [], "meh 1", None, False, False, False, 0.0),
        ("Q", ["good 1"], "human 2", None, True, False, True, None),
        ("Q", ["good 1"], "bad 2", None, False, False, False, -1.0),
        ("Q", ["good 1"], "unrated 2", None, False, False, False, None),
        ("Q", ["good 1", "human 2"], "final 3", "42", False, True, True, 1.0),
        ("Q", ["good 1", "human 2"], "wrong final 3", "41", False, False, False, -1.0),
    ]
    cols = ["instruction", "responses", "next_response", "answer", "is_human_response", "is_solution"]
    df = pd.DataFrame(r, columns=cols + ["is_preferred_response", "rating"])
    path = tmp_path / "tiny.parquet"
    df.to_parquet(path)
    return path


def test_prm800k_rebuilds_chains(tmp_path):
    rows = prm800k_rows(_tiny_prm(tmp_path))
    by_steps = {tuple(r["steps"]): r for r in rows}
    assert set(by_steps) == {
        ("good 1", "human 2", "final 3"),
        ("bad 1",),
        ("meh 1",),
        ("good 1", "bad 2"),
        ("good 1", "human 2", "wrong final 3"),
    }
    assert by_steps[("good 1", "human 2", "final 3")]["labels"] == [0, None, 0]
    assert by_steps[("good 1", "human 2", "final 3")]["answer"] == "42"
    assert by_steps[("bad 1",)]["labels"] == [1]
    assert by_steps[("meh 1",)]["labels"] == [0]
    assert by_steps[("good 1", "bad 2")]["labels"] == [0, 1]
    assert by_steps[("good 1", "human 2", "wrong final 3")]["labels"] == [0, None, 1]
    assert all(r["source"] == PRM800K_SOURCE for r in rows)
    assert [r["id"] for r in rows] == [r["id"] for r in prm800k_rows(_tiny_prm(tmp_path))]  # stable ids
    assert {tuple(r["steps"]): r["labels"] for r in prm800k_rows(_tiny_prm(tmp_path), neutral_as=1)}[("meh 1",)] == [1]
    assert {tuple(r["steps"]): r["labels"] for r in prm800k_rows(_tiny_prm(tmp_path), neutral_as=None)}[("meh 1",)] == [
        None
    ]
    with pytest.raises(ValueError, match="neutral_as"):
        prm800k_rows(_tiny_prm(tmp_path), neutral_as=2)


@pytest.fixture(scope="module")
def prm_rows():
    if not PRM800K.exists():
        pytest.skip(f"{PRM800K} is not here")
    return prm800k_rows(PRM800K)


def test_prm800k_real_counts(prm_rows):
    labels = [lab for r in prm_rows for lab in r["labels"]]
    assert len(prm_rows) == 3201
    assert sum(r["id"].endswith("-main") for r in prm_rows) == 98
    assert len({r["problem"] for r in prm_rows}) == 98
    assert len(labels) == 47122
    assert (labels.count(1), labels.count(0), labels.count(None)) == (1694, 38191, 7237)
    assert set(labels) <= {0, 1, None}
    assert len({r["id"] for r in prm_rows}) == len(prm_rows)
    assert sum(r["answer"] is not None for r in prm_rows) == 280
    for r in prm_rows:
        assert len(r["steps"]) == len(r["labels"]) > 0 and all(isinstance(s, str) and s for s in r["steps"])
        if 1 in r["labels"]:  # a wrong step only ever ends a branch
            assert r["labels"].index(1) == len(r["labels"]) - 1


def test_prm800k_to_processbench(prm_rows):
    pb = to_processbench(prm_rows)
    assert len(pb) == len(prm_rows)
    assert sum(r["label"] == -1 for r in pb) == 3201 - 1694
    assert all(r["label"] == len(r["steps"]) - 1 for r in pb if r["label"] != -1)
    assert processbench_rows(pb)[0]["steps"] == pb[0]["steps"]
