"""Exact synthetic errors on GSM8K reference solutions: each kind of change, what is refused, the CLI."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from uhead_viz.cli import main as cli_main
from uhead_viz.labels.checks import arithmetic_errors
from uhead_viz.synthetic import Change, Reject, apply_change, build, parse_solution, synthetic_rows

ROOT = Path(__file__).resolve().parents[1]
SHARED_TEST = ROOT.parent / "shared" / "data" / "gsm8k" / "test.jsonl"
COMMITTED = ROOT / "data" / "synthetic" / "gsm8k_test_synthetic.jsonl"

NATALIA = {
    "question": "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
    "How many clips did Natalia sell altogether in April and May?",
    "answer": "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n"
    "Natalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.\n#### 72",
}
# four steps, each feeding the next; no result is a number of the question
CHAIN4 = {
    "question": "Ann has 3 bags of 4 apples. She doubles them, adds 5, then triples the lot. How many apples?",
    "answer": "She has 3*4 = <<3*4=12>>12 apples.\nDoubled: 12*2 = <<12*2=24>>24 apples.\n"
    "Then 24+5 = <<24+5=29>>29 apples.\nTripled: 29*3 = <<29*3=87>>87 apples.\n#### 87",
}


def _change(row: dict, change: Change) -> tuple[list[str], str]:
    from uhead_viz.synthetic import _steps

    lines, final = parse_solution(row["answer"])
    new_lines, answer, _ = apply_change(row["question"], lines, final, change)
    return _steps(new_lines)[0], answer


def test_each_kind_is_carried_forward():
    steps, answer = _change(NATALIA, Change(0, 0, "result", 0, 25))
    assert steps[0] == "Natalia sold 48/2 = 25 clips in May."
    assert steps[1] == "Natalia sold 48+25 = 73 clips altogether in April and May."
    assert answer == "73" and arithmetic_errors(steps[0]) and not arithmetic_errors(steps[1])
    # a misread operand: the step's own arithmetic stays right; the question's 48 in step 2 stays 48
    steps, answer = _change(NATALIA, Change(0, 0, "operand", 0, 46))
    assert steps[0] == "Natalia sold 46/2 = 23 clips in May." and steps[1].startswith("Natalia sold 48+23 = 71 ")
    assert answer == "71" and not arithmetic_errors(steps[0])
    steps, answer = _change(NATALIA, Change(0, 0, "operator", 0, "*"))
    assert steps[0] == "Natalia sold 48*2 = 96 clips in May." and answer == "144"


def test_unsafe_changes_are_refused():
    lines, final = parse_solution(NATALIA["answer"])
    with pytest.raises(Reject, match="question"):  # 24 would also be a number of the question
        apply_change(NATALIA["question"] + " She has 24 pens.", lines, final, Change(0, 0, "result", 0, 25))
    side = "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nShe has 3+4 = <<3+4=7>>7 pens.\n#### 24"
    lines, final = parse_solution(side)
    with pytest.raises(Reject, match="final answer"):  # the pens never reach the answer
        apply_change(NATALIA["question"], lines, final, Change(1, 0, "result", 0, 8))
    twice = "So 6*4 = <<6*4=24>>24.\nAnd 8*3 = <<8*3=24>>24.\nIn all 24+24 = <<24+24=48>>48.\n#### 48"
    lines, final = parse_solution(twice)
    with pytest.raises(Reject, match="twice"):
        apply_change("Six bags of four and eight of three.", lines, final, Change(0, 0, "result", 0, 25))
    with pytest.raises(Reject, match="fraction"):  # 49/2 is not a whole number of clips
        apply_change(NATALIA["question"], *parse_solution(NATALIA["answer"]), Change(0, 0, "operand", 0, 49))
    assert parse_solution("no final answer") is None


def test_rows_are_labelled_seeded_and_spread_over_positions():
    rows = synthetic_rows(CHAIN4, "q", seed=3, keep_clean=True)
    changed, clean = rows
    k = changed["synthetic"]["step"]
    assert changed["labels"] == [0] * k + [1] + [None] * (3 - k)
    assert changed["label_confidence"] == [1.0] * (k + 1) + [0.0] * (3 - k)
    assert changed["answer"] != "87" and changed["synthetic"]["answer_was"] == "87"
    assert changed["steps"][:k] == clean["steps"][:k] and changed["steps"][k] != clean["steps"][k]
    assert clean["id"] == "q-clean" and clean["labels"] == [0, 0, 0, 0] and clean["answer"] == "87"
    assert rows == synthetic_rows(CHAIN4, "q", seed=3, keep_clean=True)
    drawn = [synthetic_rows(CHAIN4, "q", seed=s)[0]["synthetic"] for s in range(120)]
    positions = Counter(d["step"] for d in drawn)
    assert set(positions) == {0, 1, 2, 3} and min(positions.values()) > 120 / 4 * 0.6  # every step, about evenly
    assert set(Counter(d["kind"] for d in drawn)) == {"operand", "operator", "result"}


def test_cli_builds_a_split(tmp_path, capsys):
    (tmp_path / "gsm8k").mkdir()
    rows = [NATALIA, CHAIN4, {"question": "No solution", "answer": "none"}]
    (tmp_path / "gsm8k" / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "synth.jsonl"
    args = ["synthetic-errors", "--split", "test", "--data", str(tmp_path), "--keep-clean", "--out", str(out)]
    assert cli_main(args) == 0
    got = [json.loads(line) for line in out.read_text().splitlines()]
    assert {r["id"] for r in got} == {"synth-test-0", "synth-test-0-clean", "synth-test-1", "synth-test-1-clean"}
    report = json.loads(capsys.readouterr().out)
    assert (report["questions"], report["changed"], report["chains"]) == (3, 2, 4)
    assert cli_main(["synthetic-errors", "--split", "train", "--data", str(tmp_path), "--out", str(out)]) == 2


def test_committed_test_split_is_consistent_and_reproducible():
    if not COMMITTED.exists():
        pytest.skip("no committed synthetic set")
    rows = [json.loads(line) for line in COMMITTED.read_text().splitlines()]
    for r in rows:
        assert len(r["labels"]) == len(r["steps"]) == len(r["label_confidence"])
        if r["synthetic"]["kind"] == "none":
            assert set(r["labels"]) == {0}
        else:
            k = r["synthetic"]["step"]
            assert r["labels"][: k + 1] == [0] * k + [1] and set(r["labels"][k + 1 :]) <= {None}
            assert r["answer"] != r["synthetic"]["answer_was"]
            if r["synthetic"]["kind"] != "result":
                assert not arithmetic_errors(r["steps"][k])
    if not SHARED_TEST.exists():
        pytest.skip(f"{SHARED_TEST} is not here")
    source = [json.loads(line) for line in SHARED_TEST.read_text().splitlines()[:25]]
    again = build(source, "test", 0, seed=0, keep_clean=True)
    committed = {r["id"]: r for r in rows}
    assert again and all(committed[r["id"]] == r for r in again)
