"""Typed results: a record read and written again is the same dict; the API's shape derives from it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from uhead_viz.results import Analysis, StepResult, partial_json

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "assets" / "examples").glob("*.json"))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_a_stored_analysis_round_trips_key_for_key(path):
    rec = json.loads(path.read_text(encoding="utf-8"))
    a = Analysis.from_record(rec)
    assert a.primary == rec["primary"] and len(a.steps) == len(rec["steps"])
    assert isinstance(a.steps[0], StepResult) and a.steps[0].body == rec["steps"][0]["body"]
    back = a.to_record()
    assert back == rec and list(back) == list(rec)
    assert [list(s) for s in back["steps"]] == [list(s) for s in rec["steps"]]


@pytest.mark.parametrize("path", EXAMPLES[:1], ids=[p.stem for p in EXAMPLES[:1]])
def test_the_api_shape_derives_from_the_record_and_round_trips(path):
    rec = json.loads(path.read_text(encoding="utf-8"))
    j = Analysis.from_record(rec).to_json()
    assert list(j) == ["question", "model", "head", "primary", "threshold", "answer", "stop_reason", "verifier",
                       "steps", "notes"]
    assert j["model"] == rec["model"]["name"] and j["head"] == rec["head"]["path"]
    assert [s["text"] for s in j["steps"]] == [s["body"] for s in rec["steps"]]
    assert [s["scores"] for s in j["steps"]] == [s["scores"] for s in rec["steps"]]
    assert Analysis.from_json(j).to_json() == j
    json.dumps(j)


def test_extra_step_keys_and_notes_are_kept():
    rec = {"question": "q", "steps": [{"index": 0, "text": "Step 1: a", "body": "a", "scores": {"m": 0.2},
                                       "label": 1}], "id": "row-7"}
    a = Analysis.from_record(rec)
    assert a.steps[0].extra == {"label": 1} and a.fields == {"id": "row-7"}
    assert a.to_record() == rec
    a.notes.append("a setting moved into range")
    assert a.to_record()["notes"] == ["a setting moved into range"]


def test_a_partial_update_lists_only_scored_steps():
    view = {"question": "q", "live": True, "steps": [
        {"index": 0, "text": "Step 1: a", "body": "a", "scores": {"m": 0.25}, "state": "done"},
        {"index": 1, "text": "Step 2: b", "body": "b", "scores": None, "state": "writing"},
    ]}
    assert partial_json(view) == {"question": "q", "partial": True,
                                  "steps": [{"index": 0, "text": "a", "scores": {"m": 0.25}}]}
