"""The app's handlers, called as Gradio calls them, on the tiny step-writing model (no browser)."""

from __future__ import annotations

import json

import gradio as gr
import pytest
from app_support import installed_engine, last, page_handlers

import app
from uhead_viz.ui.base import JUDGE, NO_VERIFIER, OOPS, PRM

Q = "Natalia sold 48 clips in April and half as many in May. How many clips did she sell?"


class Evt:
    def __init__(self, data=None, row_value=None):
        self._data = data
        self.row_value = row_value


@pytest.fixture(scope="module")
def engine(tokenizer, tmp_path_factory):
    with installed_engine(tokenizer, tmp_path_factory.mktemp("appcheck")) as eng:
        yield eng


@pytest.fixture(scope="module")
def ui(engine):
    return page_handlers(engine)


def test_build_has_the_analyze_endpoint(engine):
    demo = app.build(app.EngineHolder(engine=engine))
    info = demo.get_api_info()
    assert "/analyze" in info["named_endpoints"]
    assert [p["parameter_name"] for p in info["named_endpoints"]["/analyze"]["parameters"]][:2] == [
        "question",
        "max_new_tokens",
    ]


def test_ask_streams_then_returns_the_analysis(ui):
    p = ui.page
    outs = list(ui.ask(Q, 80, 0.0, NO_VERIFIER, "", False, "Step score"))
    assert len(outs) >= 3
    final = outs[-1]
    html, state, current, sel, info = (final[c] for c in (p.chain, p.ask_state, p.current, p.sel, p.info))
    assert html.count('class="uv-step') == 3 and "uv-legend" in html
    assert state["steps"] and current is state and sel is None and final[p.view] == "ask"
    assert "Verifier not run yet" in info
    # the streamed updates before it show the chain growing
    assert any("uv-writing" in o.get(p.chain, "") for o in outs[:-1])


@pytest.mark.parametrize("q,msg", [("", "The question is empty"), ("x" * 100_000, "100,000 characters")])
def test_bad_questions_get_a_message(ui, q, msg):
    html = last(ui.ask(q, 80, 0.0, NO_VERIFIER, "", False, "Step score"))[ui.page.chain]
    assert msg in html and "uv-error" in html
    assert msg in ui.analyze(q)["error"]


def test_unexpected_errors_never_show_a_traceback(engine, ui, monkeypatch):
    def boom(*a, **k):
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(engine, "stream", boom)
    html = last(ui.ask(Q, 80, 0.0, NO_VERIFIER, "", False, "Step score"))[ui.page.chain]
    assert "Something went wrong (RuntimeError)" in html and "secret" not in html
    r = ui.analyze(Q)
    assert r == {"error": OOPS.format("RuntimeError"), "steps": []}


def test_analyze_api(ui):
    r = ui.analyze(Q, max_new_tokens=80)
    assert r["primary"] == "minprob" and len(r["steps"]) == 3
    assert all("minprob" in s["scores"] and s["text"] for s in r["steps"])


def test_select_step_and_rerender(ui):
    p = ui.page
    a = last(ui.ask(Q, 80, 0.0, NO_VERIFIER, "", False, "Step score"))[p.ask_state]
    out = ui.select_ask(a, "Step score", Evt({"step": 1}))
    html, detail, current, k = out[p.chain], out[p.detail], out[p.current], out[p.sel]
    assert k == 1 and "uv-selected" in html and "Step 2" in detail and current is a and out[p.view] == "ask"
    assert ui.select_ask(a, "Step score", Evt({"step": 9})) == gr.skip()
    out = ui.rerender("Token probability", a, None, None, "ask", 1)
    assert "uv-tok" in out[p.chain] and p.p_chain not in out
    out = ui.why_views(a, 1, "all", False)
    dd, figs = out[p.step_dd], [out[c] for c in (p.fig_scores, p.fig_tokens, p.fig_attn, p.fig_attr)]
    assert len(figs) == 4 and dd["value"] == 1 and len(dd["choices"]) == 3


def test_score_upload_with_a_bad_row(ui, tmp_path):
    f = tmp_path / "rows.jsonl"
    rows = [
        {"id": "a", "problem": Q, "steps": ["48 / 2 = 24", "48 + 24 = 72"], "labels": [0, 0]},
        {"id": "b", "problem": Q},
        {"id": "c", "problem": Q, "steps": ["48 / 2 = 20", "48 + 20 = 68"], "labels": [1, 1]},
    ]
    f.write_text("\n".join(json.dumps(r) for r in rows))
    p = ui.page
    out = last(ui.score_upload(str(f)))
    msg, df, scored, files, report = (out[c] for c in (p.file_msg, p.table, p.file_rows, p.downloads, p.report))
    assert "Scored 2 chains" in msg and "id b" in msg
    assert list(df["chain"]).count("a") == 2 and "label" in df.columns
    assert df.iloc[:, 2].is_monotonic_decreasing
    assert {p.rsplit("/", 1)[-1] for p in files} == {"step_scores.csv", "scored_chains.jsonl", "evaluation_report.json"}
    rep = json.loads(open(files[2]).read())
    assert rep["n_chains"] == 2 and rep["n_wrong"] == 2 and "minprob" in rep["methods"]
    assert "PR-AUC" in report
    out = ui.open_row(scored, "Step score", Evt(row_value=["c", 2, 0.5]))
    html, state, k = out[p.file_chain], out[p.file_state], out[p.sel]
    assert k == 1 and "48 + 20 = 68" in html and state["steps"][1]["label"] == 1


def test_score_upload_refusals(ui, tmp_path):
    f = tmp_path / "notes.txt"
    f.write_text("not json\n")
    assert "No chains could be read" in last(ui.score_upload(str(f)))[ui.page.file_msg]
    assert "Choose a JSON" in last(ui.score_upload(None))[ui.page.file_msg]


def test_paste(ui):
    p = ui.page
    out = ui.paste(Q, "48 / 2 = 24\n48 + 24 = 72", "72", "Step score")
    html, state = out[p.p_chain], out[p.paste_state]
    assert html.count('class="uv-step') == 2 and state["kind"] == "pasted" and out[p.view] == "paste"
    assert "Paste at least one step" in ui.paste(Q, "", "", "Step score")[p.p_chain]
    assert "The question is empty" in ui.paste("", "a", "", "Step score")[p.p_chain]


def test_verifier_needs_a_choice_and_a_prm_id(ui):
    p = ui.page
    a = last(ui.ask(Q, 80, 0.0, NO_VERIFIER, "", False, "Step score"))[p.ask_state]
    assert "Choose a verifier" in ui.run_verifier(a, "ask", NO_VERIFIER, "", "Step score", None)[p.verify_msg]
    assert "hub id" in ui.run_verifier(a, "ask", PRM, "", "Step score", None)[p.verify_msg]
    assert "Analyse a chain first" in ui.run_verifier(None, None, JUDGE, "", "Step score", None)[p.verify_msg]


def test_a_holder_crosses_a_process_boundary_by_reference(ui):
    """On ZeroGPU the model work's arguments are pickled into a forked worker, which already holds
    the holder: it goes across as its key, never as a model, threads and locks."""
    import pickle

    data = pickle.dumps(ui.holder)
    assert len(data) < 200 and pickle.loads(data) is ui.holder
