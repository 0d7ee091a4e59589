"""The app's handlers, called as Gradio calls them, on the tiny step-writing model (no browser)."""

from __future__ import annotations

import json

import pytest
from app_support import installed_engine, last

import app

Q = "Natalia sold 48 clips in April and half as many in May. How many clips did she sell?"


class Evt:
    def __init__(self, data=None, row_value=None):
        self._data = data
        self.row_value = row_value


@pytest.fixture(scope="module")
def engine(tokenizer, tmp_path_factory):
    with installed_engine(tokenizer, tmp_path_factory.mktemp("appcheck")) as eng:
        yield eng


def test_build_has_the_analyze_endpoint(engine):
    demo = app.build(app.EngineHolder(engine=engine))
    info = demo.get_api_info()
    assert "/analyze" in info["named_endpoints"]
    assert [p["parameter_name"] for p in info["named_endpoints"]["/analyze"]["parameters"]][:2] == [
        "question",
        "max_new_tokens",
    ]


def test_ask_streams_then_returns_the_analysis(engine):
    outs = list(app.ask(Q, 80, 0.0, app.NO_VERIFIER, "", False, "Step score"))
    assert len(outs) >= 3
    html, detail, state, current, sel, info = outs[-1]
    assert html.count('class="uv-step') == 3 and "uv-legend" in html
    assert state["steps"] and current is state and sel is None and state["_view"] == "ask"
    assert "Verifier not run yet" in info
    # the streamed updates before it show the chain growing
    assert any("uv-writing" in o[0] for o in outs[:-1])


@pytest.mark.parametrize("q,msg", [("", "The question is empty"), ("x" * 100_000, "100,000 characters")])
def test_bad_questions_get_a_message(engine, q, msg):
    html = last(app.ask(q, 80, 0.0, app.NO_VERIFIER, "", False, "Step score"))[0]
    assert msg in html and "uv-error" in html
    assert msg in app.analyze(q)["error"]


def test_unexpected_errors_never_show_a_traceback(engine, monkeypatch):
    def boom(*a, **k):
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(engine, "stream", boom)
    html = last(app.ask(Q, 80, 0.0, app.NO_VERIFIER, "", False, "Step score"))[0]
    assert "Something went wrong (RuntimeError)" in html and "secret" not in html
    r = app.analyze(Q)
    assert r == {"error": app.OOPS.format("RuntimeError"), "steps": []}


def test_analyze_api(engine):
    r = app.analyze(Q, max_new_tokens=80)
    assert r["primary"] == "minprob" and len(r["steps"]) == 3
    assert all("minprob" in s["scores"] and s["text"] for s in r["steps"])


def test_select_step_and_rerender(engine):
    a = last(app.ask(Q, 80, 0.0, app.NO_VERIFIER, "", False, "Step score"))[2]
    html, detail, current, k = app.select_step(a, "Step score", Evt({"step": 1}))
    assert k == 1 and "uv-selected" in html and "Step 2" in detail and current is a
    assert all(x == app.gr.skip() for x in app.select_step(a, "Step score", Evt({"step": 9})))
    ask_html, paste_html, file_html = app.rerender("Token probability", a, None, None, a, 1)
    assert "uv-tok" in ask_html and paste_html == app.gr.skip()
    dd, *figs = app.why_views(a, 1, "all", False)
    assert len(figs) == 4 and dd["value"] == 1 and len(dd["choices"]) == 3


def test_score_upload_with_a_bad_row(engine, tmp_path):
    f = tmp_path / "rows.jsonl"
    rows = [
        {"id": "a", "problem": Q, "steps": ["48 / 2 = 24", "48 + 24 = 72"], "labels": [0, 0]},
        {"id": "b", "problem": Q},
        {"id": "c", "problem": Q, "steps": ["48 / 2 = 20", "48 + 20 = 68"], "labels": [1, 1]},
    ]
    f.write_text("\n".join(json.dumps(r) for r in rows))
    msg, df, scored, files, report = last(app.score_upload(str(f)))
    assert "Scored 2 chains" in msg and "id b" in msg
    assert list(df["chain"]).count("a") == 2 and "label" in df.columns
    assert df.iloc[:, 2].is_monotonic_decreasing
    assert {p.rsplit("/", 1)[-1] for p in files} == {"step_scores.csv", "scored_chains.jsonl", "evaluation_report.json"}
    rep = json.loads(open(files[2]).read())
    assert rep["n_chains"] == 2 and rep["n_wrong"] == 2 and "minprob" in rep["methods"]
    assert "PR-AUC" in report
    html, detail, state, current, k = app.open_row(scored, "Step score", Evt(row_value=["c", 2, 0.5]))
    assert k == 1 and "48 + 20 = 68" in html and state["steps"][1]["label"] == 1


def test_score_upload_refusals(engine, tmp_path):
    f = tmp_path / "notes.txt"
    f.write_text("not json\n")
    assert "No chains could be read" in last(app.score_upload(str(f)))[0]
    assert "Choose a JSON" in last(app.score_upload(None))[0]


def test_paste(engine):
    html, detail, state, current, sel = app.paste(Q, "48 / 2 = 24\n48 + 24 = 72", "72", "Step score")
    assert html.count('class="uv-step') == 2 and state["kind"] == "pasted" and state["_view"] == "paste"
    assert "Paste at least one step" in app.paste(Q, "", "", "Step score")[0]
    assert "The question is empty" in app.paste("", "a", "", "Step score")[0]


def test_verifier_needs_a_choice_and_a_prm_id(engine):
    a = last(app.ask(Q, 80, 0.0, app.NO_VERIFIER, "", False, "Step score"))[2]
    assert "Choose a verifier" in app.run_verifier(a, app.NO_VERIFIER, "", "Step score", None)[-1]
    assert "hub id" in app.run_verifier(a, app.PRM, "", "Step score", None)[-1]
    assert "Analyse a chain first" in app.run_verifier(None, app.JUDGE, "", "Step score", None)[-1]
