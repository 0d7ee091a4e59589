"""The ``evaluate`` command on tiny models: report fields, skipped rows, resuming, Markdown and HTML."""

from __future__ import annotations

import json
import logging

import pytest

import uhead_viz.scorers.base as scorer_base
from uhead_viz import llm as llm_module
from uhead_viz.capture import teacher_force
from uhead_viz.cli import main
from uhead_viz.evaluate import load_items, resolve_methods
from uhead_viz.scorers import SCORERS, Scorer
from uhead_viz.uhead import UHead, save_head

SMALL = {"d_model": 32, "n_heads": 4, "d_ff": 64, "n_layers": 2}
BASELINES = ["maxprob", "minprob", "perplexity", "mean_entropy", "max_entropy", "seqprob"]
TRIVIAL = ["step_index", "chars_so_far", "is_last_step"]
FIELDS = {"pr_auc", "roc_auc", "f1", "error_acc", "correct_acc", "ece", "seconds_per_chain"}
Q = "Natalia sold 48 clips in April and half as many in May. How many clips did she sell?"


class KeywordOracle(Scorer):
    """Knows the answer: a step is wrong when it says WRONG (0.9), else fine (0.1)."""

    name = "keyword_oracle"
    needs_internals = False
    opt_in = True

    def score(self, chains):
        return [[0.9 if "WRONG" in s else 0.1 for s in c.steps] for c in chains]


def pb_rows():
    ok = ["48 / 2 = 24 clips in May.", "48 + 24 = 72 clips.", "So 72."]
    return [
        {"id": "ok-1", "generator": "t", "problem": Q, "steps": ok, "final_answer_correct": True, "label": -1},
        {"id": "err-0", "generator": "t", "problem": Q, "steps": ["WRONG 48 * 2 = 96.", *ok[1:]], "label": 0},
        {"id": "err-1", "generator": "t", "problem": Q, "steps": [ok[0], "WRONG 48 + 24 = 70.", "So 70."], "label": 1},
        {"id": "ok-2", "generator": "t", "problem": "What is 2 + 3?", "steps": ["2 + 3 = 5.", "So 5."], "label": -1},
        {"id": "bad-label", "problem": Q, "steps": ok[:2], "label": 5},
        {"id": "no-steps", "problem": Q, "label": -1},
        42,
        {
            "id": "err-2",
            "problem": "What is 3 * 4?",
            "steps": ["3 * 4 = 12.", "12 + 0 = 12.", "WRONG 13.", "x"],
            "label": 2,
        },
        {"id": "too-long", "problem": "1 + " * 3000, "steps": ["2."], "label": -1},
    ]


@pytest.fixture
def setup(tmp_path, monkeypatch, llama_llm):
    """Tiny model in place of the real one, a head in a checkpoints folder, a counting forward pass."""
    monkeypatch.setattr(llm_module, "load_llm", lambda *a, **k: llama_llm)
    ckpt = tmp_path / "checkpoints"
    ckpt.mkdir()
    monkeypatch.setenv("UHEAD_VIZ_CHECKPOINTS", str(ckpt))
    head = UHead.for_llm(llama_llm, **SMALL, mode="causal").eval()
    head.threshold = 0.42
    save_head(head, ckpt / "tiny")
    SCORERS.load_all()
    monkeypatch.setitem(SCORERS, KeywordOracle.name, KeywordOracle)
    calls = []

    def counting(llm, chain, spec, **kw):
        calls.append(chain.problem)
        return teacher_force(llm, chain, spec, **kw)

    monkeypatch.setattr(scorer_base, "teacher_force", counting)
    data = tmp_path / "pb.json"
    data.write_text(json.dumps(pb_rows()), encoding="utf-8")
    yield {"tmp": tmp_path, "data": data, "calls": calls, "ckpt": ckpt}
    for n in [n for n in SCORERS if ":" in n]:
        del SCORERS[n]


def run(data, out, *extra):
    return main(["evaluate", "--data", str(data), "--format", "processbench", "--out", str(out), *extra])


def test_report_fields_metrics_files_and_skipped_rows(setup, capsys, caplog):
    out = setup["tmp"] / "rep" / "report.json"
    with caplog.at_level(logging.WARNING):
        assert run(setup["data"], out, "--methods", "default,keyword_oracle") == 0
    rep = json.loads(out.read_text())
    assert rep["dataset"] == "pb.json" and rep["format"] == "processbench"
    assert rep["n_chains"] == 5
    assert rep["n_steps"] == 3 + 1 + 2 + 2 + 3  # steps after the first error are left out
    assert rep["n_wrong_steps"] == 3 and rep["n_chains_with_error"] == 3 and rep["n_chains_without_error"] == 2
    assert list(rep["methods"]) == ["uhead", *BASELINES, "keyword_oracle", *TRIVIAL]
    for m, r in rep["methods"].items():
        assert FIELDS <= set(r), m
        for k in FIELDS - {"seconds_per_chain"}:
            assert r[k] is None or 0.0 <= r[k] <= 1.0, (m, k)
        assert r["pr_auc"] is not None and r["roc_auc"] is not None
        assert r["seconds_per_chain"] >= 0.0
    oracle = rep["methods"]["keyword_oracle"]
    assert oracle["pr_auc"] == 1.0 and oracle["roc_auc"] == 1.0
    assert oracle["f1"] == 1.0 and oracle["error_acc"] == 1.0 and oracle["correct_acc"] == 1.0
    assert oracle["ece"] == pytest.approx(0.1, abs=1e-6)
    assert oracle["threshold"] == 0.5
    assert rep["methods"]["uhead"]["threshold"] == pytest.approx(0.42)
    assert "stored" in rep["methods"]["uhead"]["threshold_from"]
    # one capture per chain, shared, timed once
    assert len(setup["calls"]) == 5
    assert rep["capture"]["seconds_per_chain"] > 0
    assert set(rep["capture"]["shared_by"]) == {"uhead", *BASELINES}
    # malformed rows are listed by id (or line) and never stop the run
    skipped = {s["id"]: s["reason"] for s in rep["skipped"]}
    assert set(skipped) == {"bad-label", "no-steps", None, "too-long"}
    assert "out of range" in skipped["bad-label"] and "limit" in skipped["too-long"]
    assert "too-long" in caplog.text and "bad-label" in caplog.text
    # Markdown on stdout, HTML with plotly.js inline next to the report
    md = capsys.readouterr().out
    assert "| method | PR-AUC | ROC-AUC | F1 |" in md
    for m in rep["methods"]:
        assert f"| {m} |" in md
    assert "(capture, shared)" in md
    page = (out.parent / "report.html").read_text()
    assert "<table>" in page and "Precision-recall" in page and "Reliability" in page
    assert 'src="https://cdn.plot.ly' not in page and len(page) > 1_000_000  # plotly.js is in the page
    cache = out.parent / "report.scores.jsonl"
    assert len(cache.read_text().splitlines()) == 5 * (len(rep["methods"]) + 1)


def test_resume_skips_done_rows_and_combined_reuses_them(setup):
    out = setup["tmp"] / "report.json"
    args = ["--methods", "default,keyword_oracle"]
    assert run(setup["data"], out, *args) == 0
    first = json.loads(out.read_text())
    cache = setup["tmp"] / "report.scores.jsonl"
    n_lines = len(cache.read_text().splitlines())
    assert len(setup["calls"]) == 5

    assert run(setup["data"], out, *args) == 0  # everything is there: nothing is run again
    assert len(setup["calls"]) == 5 and len(cache.read_text().splitlines()) == n_lines
    again = json.loads(out.read_text())
    assert again["methods"] == first["methods"]

    # a combined score over methods already done: no forward pass, only its own lines
    assert run(setup["data"], out, "--methods", "default,keyword_oracle,combined:keyword_oracle") == 0
    assert len(setup["calls"]) == 5
    assert len(cache.read_text().splitlines()) == n_lines + 5
    rep = json.loads(out.read_text())
    comb = rep["methods"]["combined:keyword_oracle"]
    parts = rep["methods"]["uhead"]["seconds_per_chain"] + rep["methods"]["keyword_oracle"]["seconds_per_chain"]
    assert comb["seconds_per_chain"] >= parts * 0.99  # charged its parts' time
    lines = [json.loads(x) for x in cache.read_text().splitlines()]
    by_key = {(e["id"], e["method"]): e["scores"] for e in lines if "scores" in e}
    for rid in ("ok-1", "err-2"):
        want = [1 - (1 - a) * (1 - b) for a, b in zip(by_key[(rid, "uhead")], by_key[(rid, "keyword_oracle")])]
        assert by_key[(rid, "combined:keyword_oracle")] == pytest.approx(want, abs=1e-5)

    # a row whose text changed under the same id is scored again; the others are not
    rows = pb_rows()
    rows[0]["steps"] = ["48 / 2 = 24.", "24 + 48 = 72.", "72."]
    setup["data"].write_text(json.dumps(rows))
    assert run(setup["data"], out, *args) == 0
    assert len(setup["calls"]) == 6


def test_jsonl_format_limit_threshold_and_unknown_first_error(setup):
    rows = [
        {"id": "a", "problem": Q, "steps": ["48 / 2 = 24.", "fine", "WRONG 70.", "tail"], "labels": [0, None, 1, None]},
        {"id": "b", "problem": Q, "steps": ["48 / 2 = 24.", "48 + 24 = 72."], "labels": [0, 0]},
        {"id": "c", "problem": Q, "steps": ["48 / 2 = 24.", "48 + 24 = 72."], "labels": [None, 0]},
        {"id": "d", "problem": Q, "steps": ["x", "y"], "labels": [None, None]},
        {"id": "e", "problem": Q, "steps": ["x", "y"], "labels": [0, 2]},
        {"id": "f", "problem": Q, "steps": ["x"], "labels": [0, 0]},
    ]
    data = setup["tmp"] / "rows.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n{torn\n")
    items, skipped = load_items(data, "jsonl")
    assert [it.id for it in items] == ["a", "b", "c"]
    assert [len(it.labels) for it in items] == [3, 2, 2] and [it.gold for it in items] == [2, -1, None]
    assert {s["id"] for s in skipped} == {"d", "e", "f", None}
    out = setup["tmp"] / "j.json"
    args = ["evaluate", "--data", str(data), "--format", "jsonl", "--out", str(out)]
    assert main([*args, "--methods", "keyword_oracle,maxprob", "--threshold", "best"]) == 0
    rep = json.loads(out.read_text())
    assert rep["n_chains"] == 3 and rep["n_steps"] == 7 and rep["n_labelled_steps"] == 5
    assert rep["n_chains_with_error"] == 1 and rep["n_chains_without_error"] == 1
    assert rep["threshold_policy"] == "best" and "optimistic" in rep["notes"][0]
    assert "best F1" in rep["methods"]["maxprob"]["threshold_from"]
    assert rep["methods"]["keyword_oracle"]["f1"] == 1.0
    assert main([*args, "--methods", "maxprob", "--limit", "1", "--threshold", "0.3"]) == 0
    rep = json.loads(out.read_text())
    assert rep["n_chains"] == 1 and rep["methods"]["maxprob"]["threshold"] == 0.3


def test_no_head_leaves_uhead_out_unless_named(setup, caplog, capsys):
    for p in setup["ckpt"].iterdir():
        for f in p.iterdir():
            f.unlink()
        p.rmdir()
    out = setup["tmp"] / "r.json"
    with caplog.at_level(logging.WARNING):
        assert run(setup["data"], out, "--limit", "2") == 0
    rep = json.loads(out.read_text())
    assert list(rep["methods"]) == [*BASELINES, *TRIVIAL] and "uhead" in rep["unavailable"]
    assert "UHead is unavailable" in caplog.text
    capsys.readouterr()
    assert run(setup["data"], out, "--methods", "uhead") == 2
    assert "needs a head" in capsys.readouterr().err


def test_user_errors_exit_2(setup, capsys):
    out = setup["tmp"] / "r.json"
    assert run(setup["tmp"] / "missing.json", out) == 2
    assert run(setup["data"], out, "--methods", "maxprob,bogus") == 2
    assert "Unknown method 'bogus'" in capsys.readouterr().err
    assert run(setup["data"], out, "--threshold", "often") == 2
    bad = setup["tmp"] / "bad.json"
    bad.write_text("[{not json")
    assert run(bad, out) == 2
    assert not out.exists()


def test_default_and_all_methods(monkeypatch):
    SCORERS.load_all()
    judge = type("FakeJudge", (KeywordOracle,), {"name": "judge"})
    monkeypatch.setitem(SCORERS, "judge", judge)
    default, explicit = resolve_methods(None)
    assert default[0] == "uhead" and set(BASELINES) <= set(default)
    assert "judge" not in default and "combined" not in default and not explicit
    assert not set(TRIVIAL) & set(default)  # `score` output: the model's methods only
    assert set(TRIVIAL) <= set(resolve_methods(None, evaluation=True)[0])  # every report holds them
    everything, _ = resolve_methods("all")
    assert {"judge", "combined"} <= set(everything) and [m for m in everything if m not in TRIVIAL][-1] == "combined"
    named, explicit = resolve_methods("combined,maxprob,maxprob")
    assert named == ["maxprob", "combined"] and explicit == {"maxprob", "combined"}


def test_evaluate_reads_the_store_features_filled_also_for_rows_cut_after_their_last_label(setup):
    """``features`` stores whole chains; ``evaluate`` scores a row only up to its last labelled step.
    The cut chain is read from the whole chain's capture (its first rows): no forward pass, and the
    same scores as a live capture."""
    rows = [
        {"id": "a", "problem": Q, "steps": ["48 / 2 = 24.", "WRONG 48 + 24 = 70.", "So 70."], "labels": [0, 1, None]},
        {"id": "b", "problem": Q, "steps": ["48 / 2 = 24.", "48 + 24 = 72.", "So 72."], "labels": [0, 0, 0]},
    ]
    data = setup["tmp"] / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    store = setup["tmp"] / "store"
    assert main(["features", "--input", str(data), "--store", str(store)]) == 0
    args = ["evaluate", "--data", str(data), "--format", "jsonl", "--methods", "uhead,minprob"]
    assert main([*args, "--out", str(setup["tmp"] / "live.json")]) == 0
    assert len(setup["calls"]) == 2
    assert main([*args, "--out", str(setup["tmp"] / "stored.json"), "--store", str(store)]) == 0
    assert len(setup["calls"]) == 2  # both rows came from the store, "a" from its whole chain's rows

    def scores(name):
        lines = [json.loads(x) for x in (setup["tmp"] / f"{name}.scores.jsonl").read_text().splitlines()]
        return {(e["id"], e["method"]): e["scores"] for e in lines if "scores" in e}

    live, stored = scores("live"), scores("stored")
    assert len(stored[("a", "uhead")]) == 2 and set(live) == set(stored)
    for k in live:
        assert stored[k] == pytest.approx(live[k], abs=2e-3), k
