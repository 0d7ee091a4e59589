"""PRM800K phase-1 train as training chains: branches, neutral ratings, splits, the CLI command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from uhead_viz.cli import main as cli_main
from uhead_viz.prm800k_train import SOURCE, is_heldout, summary, training_chains

COLS = ["instruction", "responses", "next_response", "answer", "is_human_response", "is_solution"]


def _problem(name: str, bad_in_trajectory: bool = False) -> list[tuple]:
    """One problem: depth 0 has a preferred step, a wrong and a neutral alternative; depth 1 a
    human-written step (taken) and a wrong alternative; depth 2 the preferred final step and a
    wrong final alternative. With ``bad_in_trajectory`` the taken depth-1 step is rated wrong."""
    rating = -1.0 if bad_in_trajectory else None
    taken2 = (name, ["good 1"], "taken 2", None, not bad_in_trajectory, False, True, rating)
    return [
        (name, [], "good 1", None, False, False, True, 1.0),
        (name, [], "bad 1", None, False, False, False, -1.0),
        (name, [], "meh 1", None, False, False, False, 0.0),
        taken2,
        (name, ["good 1"], "bad 2", None, False, False, False, -1.0),
        (name, ["good 1", "taken 2"], "final 3", "42", False, True, True, 1.0),
        (name, ["good 1", "taken 2"], "wrong final 3", "41", False, False, False, -1.0),
    ]


def _names() -> tuple[list[str], list[str]]:
    """Problem texts that fall in the train split and in the held-out split."""
    train, val = [], []
    for i in range(200):
        name = f"Problem {i}: what is {i} + 1?"
        (val if is_heldout(name) else train).append(name)
    return train, val


def _parquet(tmp_path: Path, rows: list[tuple]) -> Path:
    import pandas as pd

    df = pd.DataFrame(rows, columns=COLS + ["is_preferred_response", "rating"])
    path = tmp_path / "train.parquet"
    df.to_parquet(path)
    return path


def test_branches_are_labelled_only_at_their_alternative(tmp_path):
    train, _ = _names()
    path = _parquet(tmp_path, _problem(train[0]))
    rows = training_chains(path, "train")
    by_steps = {tuple(r["steps"]): r for r in rows}
    main = rows[0]
    assert main["id"].endswith("-main") and main["steps"] == ["good 1", "taken 2", "final 3"]
    assert main["labels"] == [0, None, 0] and main["answer"] == "42"
    assert by_steps[("bad 1",)]["labels"] == [1]
    assert by_steps[("meh 1",)]["labels"] == [0]  # neutral counts as fine by default
    assert by_steps[("good 1", "bad 2")]["labels"] == [None, 1]  # the prefix is rated in the main row only
    assert by_steps[("good 1", "taken 2", "wrong final 3")]["labels"] == [None, None, 1]
    for r in rows:
        assert r["label_source"] == SOURCE and r["source"] == SOURCE and r["id"].startswith("prm800k-p1tr-")
        assert r["label_confidence"] == [0.0 if lab is None else 1.0 for lab in r["labels"]]
        assert "ids" not in r  # re-tokenized for whichever model reads it
    # branches come after their trajectory, shortest prefix first, so the capture reuses the trunk
    assert [len(r["steps"]) for r in rows[1:]] == sorted(len(r["steps"]) for r in rows[1:])


def test_neutral_options(tmp_path):
    train, _ = _names()
    path = _parquet(tmp_path, _problem(train[0]))
    meh = {o: {tuple(r["steps"]): r["labels"] for r in training_chains(path, neutral=o)} for o in ("wrong", "skip")}
    assert meh["wrong"][("meh 1",)] == [1]
    assert ("meh 1",) not in meh["skip"]
    assert len(meh["skip"]) == len(meh["wrong"]) - 1
    with pytest.raises(ValueError, match="neutral"):
        training_chains(path, neutral="maybe")


def test_steps_after_a_wrong_trajectory_step_stay_out(tmp_path):
    train, _ = _names()
    path = _parquet(tmp_path, _problem(train[0], bad_in_trajectory=True))
    rows = training_chains(path)
    main = next(r for r in rows if r["id"].endswith("-main"))
    assert main["labels"] == [0, 1, None]  # the preferred final step follows the error: unlabelled
    # the final-step alternative forks after the wrong step: dropped; the depth-1 one stays
    assert {tuple(r["steps"]) for r in rows} == {
        ("good 1", "taken 2", "final 3"), ("bad 1",), ("meh 1",), ("good 1", "bad 2"),
    }


def test_splits_are_disjoint_and_max_branches_is_seeded(tmp_path):
    train, val = _names()
    assert train and val
    path = _parquet(tmp_path, [x for name in train[:3] + val[:2] for x in _problem(name)])
    tr, va = training_chains(path, "train"), training_chains(path, "val")
    assert {r["problem"] for r in tr} == set(train[:3]) and {r["problem"] for r in va} == set(val[:2])
    few = training_chains(path, "train", max_branches=2, seed=1)
    assert len(few) == 3 * 3  # each problem: its trajectory and two branches
    assert [r["id"] for r in few] == [r["id"] for r in training_chains(path, "train", max_branches=2, seed=1)]
    others = [training_chains(path, "train", max_branches=2, seed=s) for s in range(2, 8)]
    assert any([r["id"] for r in o] != [r["id"] for r in few] for o in others)
    s = summary(few)
    assert (s["chains"], s["problems"], s["steps"]) == (9, 3, sum(len(r["steps"]) for r in few))
    assert s["wrong"] + s["fine"] == s["labelled"] and s["new_chars"] < s["chars"]


def test_cli_writes_the_chains(tmp_path, capsys):
    train, _ = _names()
    path = _parquet(tmp_path, [x for name in train[:2] for x in _problem(name)])
    out = tmp_path / "chains.jsonl"
    args = ["prm800k-chains", "--data", str(path), "--split", "train", "--neutral", "skip", "--out", str(out)]
    assert cli_main(args) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows == training_chains(path, "train", neutral="skip")
    assert json.loads(capsys.readouterr().out)["chains"] == len(rows)
    assert cli_main(["prm800k-chains", "--data", str(tmp_path / "none.parquet"), "--out", str(out)]) == 2


def test_problems_keeps_a_prefix_of_the_split_that_a_longer_run_extends(tmp_path):
    train, val = _names()
    path = _parquet(tmp_path, [x for name in [train[0], val[0], train[1], train[2]] for x in _problem(name)])
    first2 = training_chains(path, "train", max_branches=2, problems=2)
    assert [r["problem"] for r in first2 if r["id"].endswith("-main")] == train[:2]  # the val problem is not counted
    whole = training_chains(path, "train", max_branches=2)
    assert whole[: len(first2)] == first2 and len(whole) > len(first2)
    out = tmp_path / "c.jsonl"
    args = ["prm800k-chains", "--data", str(path), "--max-branches", "2", "--problems", "2", "--out", str(out)]
    assert cli_main(args) == 0
    assert [json.loads(x) for x in out.read_text().splitlines()] == first2
