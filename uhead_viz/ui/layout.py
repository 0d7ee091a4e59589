"""The page: its tabs and components, and which handler each event calls.

``build(holder)`` makes the page for one model holder: the handlers are bound to that holder
(no module-level one to swap), and the built page keeps them as ``demo.handlers`` so tests
and tools can call them as the page does.
"""

from __future__ import annotations

import os
from typing import Any

import gradio as gr

from .. import allowlist
from ..chains_io import MAX_UPLOAD_BYTES
from ..downloads import SessionDownloads
from ..engine import verifier_names
from . import examples as ex
from . import export, render, share, styles
from .api import API_DOC, ApiHandlers
from .base import JUDGE, MODES, NO_VERIFIER, PRM, Page, mode_of
from .handlers_ask import AskHandlers
from .handlers_file import FileHandlers
from .handlers_view import ViewHandlers
from .holder import EngineHolder

INTRO = """<div class="uv-title"><h1>uhead-viz</h1>
<p>A local LLM solves a problem step by step; an uncertainty head reads its attention and token
probabilities and colours each step by the probability that it is wrong.</p></div>"""

THEME = gr.themes.Soft(
    primary_hue="blue",
    neutral_hue="slate",
    font=("ui-sans-serif", "system-ui", "-apple-system", "Segoe UI", "Roboto", "Helvetica Neue", "Arial", "sans-serif"),
)


class Handlers(AskHandlers, ViewHandlers, FileHandlers, ApiHandlers):
    """Every handler of one page, bound to its model holder, components and download folders."""


def _ask_tab(p: Page, downloads: SessionDownloads) -> dict[str, Any]:
    """The Ask tab; returns the controls the events need that handlers never write."""
    verifiers = [NO_VERIFIER] + ([JUDGE] if "judge" in verifier_names() else []) + [PRM]
    c: dict[str, Any] = {}
    with gr.Row(equal_height=False):
        with gr.Column(scale=4, min_width=320):
            p.question = gr.Textbox(label="Question", lines=4, placeholder="Type a math word problem…",
                                    elem_id="question")
            with gr.Row():
                c["go"] = gr.Button("Solve and check", variant="primary", elem_id="solve")
                c["stop"] = gr.Button("Stop", variant="secondary", elem_id="stop")
            c["examples"] = gr.Examples(
                [[q] for q in ex.questions()],
                inputs=[p.question],
                label="Examples (GSM8K- and MATH-style; results computed ahead of time, shown at once)",
                example_labels=[f"{e['style']}: {render._short(e['question'], 46)}" for e in ex.EXAMPLES],
                cache_examples=False,
                api_visibility="private",
            )
            p.mode = gr.Radio(list(MODES), value="Step score", label="Colour by", elem_id="mode")
            with gr.Accordion("Generation settings", open=False):
                c["max_tokens"] = gr.Slider(32, 1024, value=320, step=16, label="Max new tokens")
                c["temperature"] = gr.Slider(0.0, 1.5, value=0.0, step=0.05, label="Temperature (0 = greedy)")
            with gr.Accordion("Verifier", open=False, elem_id="verifier-acc"):
                gr.Markdown(
                    "A verifier (an LLM judge, or a process reward model given by hub id) takes seconds "
                    "per chain on a CPU, so it runs after the chain is complete, or on demand in the "
                    "Compare tab."
                )
                c["verifier"] = gr.Dropdown(verifiers, value=NO_VERIFIER, label="Verifier", elem_id="verifier")
                offered = allowlist.allowed_prms()
                c["prm_id"] = gr.Textbox(
                    label="PRM hub id",
                    placeholder=offered[0] if offered else "none offered on this server",
                    info="This server offers: " + (", ".join(offered) or "none"),
                )
                c["auto_verify"] = gr.Checkbox(False, label="Run the verifier after each chain")
        with gr.Column(scale=7, min_width=420):
            p.chain = gr.HTML(render.chain_html(None), elem_id="chain", js_on_load=styles.STEP_CLICK_JS)
            p.detail = gr.HTML(render.step_detail_html(None, None), elem_id="detail")
            p.info = gr.HTML("", elem_id="ask-info")
            export.add_download_buttons(p.ask_state, p.mode, mode_of, "ask", downloads.fresh)
            c["link"] = share.link_box()
    return c


def _why_tab(p: Page) -> dict[str, Any]:
    gr.Markdown("What is behind the selected step's score. Click a step in any chain to select it.")
    p.step_dd = gr.Dropdown(choices=[], label="Step", elem_id="why-step")
    p.fig_scores = gr.Plot(show_label=False, elem_id="fig-scores")
    p.fig_tokens = gr.Plot(show_label=False, elem_id="fig-tokens")
    c: dict[str, Any] = {}
    with gr.Row():
        with gr.Column(scale=1):
            with gr.Row():
                c["distance"] = gr.Dropdown(["all", "1", "2", "3", "4", "5"], value="all", label="Look-back distance")
                c["relative"] = gr.Checkbox(False, label="Relative to the chain's mean")
            p.fig_attn = gr.Plot(show_label=False, elem_id="fig-attn")
        with gr.Column(scale=1):
            p.fig_attr = gr.Plot(show_label=False, elem_id="fig-attr")
    return c


def _compare_tab(p: Page) -> Any:
    gr.Markdown(
        "The head (or, without one, the baseline) against a verifier, step by step. The combined score "
        "is 1 − (1 − head)(1 − verifier). Pick the verifier in the Ask tab's accordion."
    )
    with gr.Row():
        verify_btn = gr.Button("Run verifier on this chain", variant="primary", elem_id="verify")
    p.verify_msg = gr.HTML("")
    p.fig_cmp = gr.Plot(show_label=False, elem_id="fig-compare")
    p.cmp_html = gr.HTML(render.compare_html(None), elem_id="compare-table")
    return verify_btn


def _file_tab(p: Page, downloads: SessionDownloads) -> tuple[Any, Any]:
    gr.Markdown(
        "Upload chains as JSON (a list) or JSON Lines: ProcessBench rows (`id`, `problem`, `steps`, "
        "`label`), rows written by `python -m uhead_viz generate`, or any `{problem, steps}` rows, "
        f"optionally with per-step `labels`. Up to {MAX_UPLOAD_BYTES // 2**20} MB."
    )
    with gr.Row():
        upload = gr.File(label="Chains file (.json or .jsonl)", elem_id="upload", scale=3)
        score_btn = gr.Button("Score file", variant="primary", elem_id="score-file", scale=1)
    p.file_msg = gr.HTML("", elem_id="file-msg")
    p.table = gr.Dataframe(
        label="Steps, most likely wrong first (click a row to open its chain)",
        interactive=False, wrap=True, show_search="filter", max_height=420, elem_id="table",
    )
    p.report = gr.HTML("", elem_id="report")
    p.downloads = gr.File(label="Downloads", file_count="multiple", interactive=False, elem_id="downloads")
    p.file_chain = gr.HTML(render.placeholder_html("Click a row of the table to open its chain here."),
                           elem_id="file-chain", js_on_load=styles.STEP_CLICK_JS)
    p.file_detail = gr.HTML("", elem_id="file-detail")
    export.add_download_buttons(p.file_state, p.mode, mode_of, "file", downloads.fresh)
    return upload, score_btn


def _paste_tab(p: Page, downloads: SessionDownloads) -> tuple[Any, Any, Any, Any]:
    with gr.Row(equal_height=False):
        with gr.Column(scale=4, min_width=320):
            problem = gr.Textbox(label="Problem", lines=3, elem_id="paste-problem")
            steps = gr.Textbox(label="Steps (one per line, or each starting 'Step k:')", lines=8,
                               elem_id="paste-steps")
            answer = gr.Textbox(label="Final answer (optional)", elem_id="paste-answer")
            btn = gr.Button("Score these steps", variant="primary", elem_id="paste-go")
        with gr.Column(scale=7, min_width=420):
            p.p_chain = gr.HTML(render.placeholder_html("Scored steps appear here."), elem_id="paste-chain",
                                js_on_load=styles.STEP_CLICK_JS)
            p.p_detail = gr.HTML("", elem_id="paste-detail")
            export.add_download_buttons(p.paste_state, p.mode, mode_of, "paste", downloads.fresh)
    return problem, steps, answer, btn


def build(holder: EngineHolder | None = None, downloads: SessionDownloads | None = None) -> gr.Blocks:
    """The page for ``holder``'s model (a fresh holder, loading the default model, when none is given)."""
    holder = holder if holder is not None else EngineHolder()
    downloads = downloads if downloads is not None else SessionDownloads()
    p = Page()
    h = Handlers(holder, p, downloads)
    model_work = {"concurrency_id": "model", "concurrency_limit": 1}
    # A file job has its own slot: it takes the model per chain, in the engine lock's background
    # class, so a question asked meanwhile starts at once and goes before the next chain.
    file_work = {"concurrency_id": "file", "concurrency_limit": 1}
    private = {"api_visibility": "private"}
    # Offline unless asked: Gradio's usage analytics and version check (and the Hugging Face
    # telemetry they send) contact api.gradio.app and huggingface.co when the app starts.
    analytics = os.environ.get("GRADIO_ANALYTICS_ENABLED", "").strip() == "True"
    # Gradio's copies of served files (the exports) go after an hour; ours go with the session.
    with gr.Blocks(title="uhead-viz", analytics_enabled=analytics, delete_cache=(1800, 3600)) as demo:
        gr.HTML(INTRO)
        status = gr.HTML(holder.status_html(), elem_id="uv-status")
        timer = gr.Timer(1.0)
        p.current, p.view, p.sel = gr.State(None), gr.State(None), gr.State(None)
        p.ask_state, p.paste_state, p.file_state = gr.State(None), gr.State(None), gr.State(None)
        p.file_rows = gr.State([])
        with gr.Tabs():
            with gr.Tab("Ask", id="ask", elem_id="tab-ask"):
                ask = _ask_tab(p, downloads)
            with gr.Tab("Why", id="why", elem_id="tab-why"):
                why = _why_tab(p)
            with gr.Tab("Compare", id="compare", elem_id="tab-compare"):
                verify_btn = _compare_tab(p)
            with gr.Tab("Analyse a file", id="file", elem_id="tab-file"):
                upload, score_btn = _file_tab(p, downloads)
            with gr.Tab("Paste a chain", id="paste", elem_id="tab-paste"):
                p_problem, p_steps, p_answer, p_btn = _paste_tab(p, downloads)
            with gr.Tab("API", id="api"):
                gr.Markdown(API_DOC)

        ask_outs = [p.chain, p.detail, p.ask_state, p.current, p.view, p.sel, p.info]
        ask_ins = [p.question, ask["max_tokens"], ask["temperature"], ask["verifier"], ask["prm_id"],
                   ask["auto_verify"], p.mode]
        asked = gr.on([ask["go"].click, p.question.submit], h.ask, ask_ins, ask_outs, **private, **model_work)
        ask["stop"].click(None, cancels=[asked])
        ask["examples"].load_input_event.then(h.show_example, [p.question, p.mode], ask_outs, **private,
                                              **model_work)
        for view, select in (("ask", h.select_ask), ("paste", h.select_paste), ("file", h.select_file)):
            html, detail, state = p.chain_parts(view)
            html.click(select, [state, p.mode], [html, detail, p.current, p.view, p.sel], **private)
        p.mode.change(h.rerender, [p.mode, p.ask_state, p.paste_state, p.file_state, p.view, p.sel],
                      [p.chain, p.p_chain, p.file_chain], **private)
        gr.on([p.current.change, p.sel.change, why["distance"].change, why["relative"].change], h.why_views,
              [p.current, p.sel, why["distance"], why["relative"]],
              [p.step_dd, p.fig_scores, p.fig_tokens, p.fig_attn, p.fig_attr], **private)
        p.step_dd.input(lambda k: k, [p.step_dd], [p.sel], **private)
        p.current.change(h.compare_views, [p.current], [p.fig_cmp, p.cmp_html], **private)
        verify_btn.click(
            h.run_verifier, [p.current, p.view, ask["verifier"], ask["prm_id"], p.mode, p.sel],
            [p.current, p.ask_state, p.chain, p.paste_state, p.p_chain, p.file_state, p.file_chain, p.verify_msg],
            **private, **model_work,
        )
        score_btn.click(h.score_upload, [upload], [p.file_msg, p.table, p.file_rows, p.downloads, p.report],
                        show_progress_on=[p.table], **private, **file_work)
        p.table.select(h.open_row, [p.file_rows, p.mode],
                       [p.file_chain, p.file_detail, p.file_state, p.current, p.view, p.sel], **private, **model_work)
        p_btn.click(h.paste, [p_problem, p_steps, p_answer, p.mode],
                    [p.p_chain, p.p_detail, p.paste_state, p.current, p.view, p.sel], **private, **model_work)
        timer.tick(
            lambda: (holder.status_html(), gr.Timer(1.0 if not holder.ready.is_set() else 30.0)), None,
            [status, timer], show_progress="hidden", **private,
        )
        linked = share.wire(demo, question=p.question, notice=p.info, link=ask["link"], state=p.ask_state,
                            open_chain=h.show_example, open_inputs=[p.question, p.mode], open_outputs=ask_outs,
                            **model_work)
        ask["stop"].click(None, cancels=[linked])
        gr.api(h.analyze_api, api_name="analyze", **model_work)
        demo.unload(h.end_session)
    demo.handlers = h  # type: ignore[attr-defined]
    return demo


def launch(demo: gr.Blocks, **kw: Any) -> Any:
    demo.queue(default_concurrency_limit=1, max_size=64)
    return demo.launch(
        show_error=False,
        css=styles.CSS,
        theme=THEME,
        max_file_size=MAX_UPLOAD_BYTES,
        **kw,
    )
