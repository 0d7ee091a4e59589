"""uhead-viz: ask a question and watch each reasoning step coloured by how likely it is wrong.

The app is thin: the pipeline is ``uhead_viz.engine``, the HTML ``uhead_viz.render``, the
figures ``uhead_viz.plots``, the stored examples ``uhead_viz.examples``. The model loads in
the background so the page is served at once; the first request waits for it.
``UHEAD_VIZ_MODEL`` picks the model (by default the packaged Qwen2.5-Coder-1.5B-Instruct,
on a Space too: see docs/deploy.md). The main action is the API endpoint ``analyze``.
"""

from __future__ import annotations

# isort: split
from uhead_viz import zerogpu  # first: on ZeroGPU, `spaces` must be imported before CUDA is touched

# isort: split
import csv
import json
import logging
import os
import threading
from collections.abc import Iterator
from contextlib import closing
from typing import Any

import gradio as gr
import pandas as pd

from uhead_viz import allowlist, export, plots, render, settings, share
from uhead_viz import examples as ex
from uhead_viz.downloads import SessionDownloads
from uhead_viz.engine import MAX_UPLOAD_BYTES, Engine, api_result, request_settings, verifier_names
from uhead_viz.errors import InputError, PackError
from uhead_viz.howto import is_probability
from uhead_viz.llm import clean_question, load_llm, model_env_default
from uhead_viz.methods import method_label
from uhead_viz.public import scrub, shown_path

logger = logging.getLogger("uhead_viz.app")

MODES = {"Step score": "step", "Token probability": "prob", "Token attention": "attn"}
NO_VERIFIER = "None"
JUDGE = "LLM judge (same model)"
PRM = "PRM (hub id from this server's list)"
OOPS = "Something went wrong ({}). The error was logged; please try again."
DOWNLOADS = SessionDownloads()


class EngineHolder:
    """Loads the model (and finds its head) once, in the background, and hands the engine to requests."""

    def __init__(self, name: str | None = None, engine: Engine | None = None) -> None:
        self.name = name or (engine.llm.name if engine else model_env_default())
        self.engine = engine
        self.error: str | None = None
        self.ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        if engine is not None:
            self.ready.set()

    def start(self) -> None:
        with self._start_lock:
            if not self.ready.is_set() and self._thread is None:
                self._thread = threading.Thread(target=self._load, daemon=True, name="uhead-load")
                self._thread.start()

    def load(self, warm: bool = True) -> None:
        """Load now, in this thread (ZeroGPU places the model when the app is imported)."""
        if not self.ready.is_set():
            self._load(warm)

    def _load(self, warm: bool = True) -> None:
        try:
            import torch

            device = settings.device() or ("cuda" if torch.cuda.is_available() else None)
            self.engine = Engine(load_llm(self.name, device=device))
            if warm:  # a forward pass: on ZeroGPU only inside @spaces.GPU
                self.engine.warm()
        except (PackError, OSError, ValueError) as e:
            self.error = str(e)
            logger.error("Model failed to load: %s", e)
        except Exception as e:  # never leave requests waiting forever
            self.error = f"{e.__class__.__name__}: {e}"
            logger.exception("Model failed to load")
        finally:
            if self.engine is None and not self.error:  # e.g. SystemExit or MemoryError in the loader
                self.error = "the model loader stopped without a result"
            self.ready.set()

    def get(self) -> Engine:
        """The engine, once loaded; InputError at once if loading failed or the loader died."""
        self.start()  # a request before main() started the loader starts it
        while not self.ready.wait(0.5):
            th = self._thread
            if th is not None and not th.is_alive() and not self.ready.is_set():
                self.error = self.error or "the model loader stopped without a result"
                self.ready.set()
        if self.engine is None:
            raise InputError(f"The model is not available: {scrub(self.error or 'unknown error')}")
        return self.engine

    def status_html(self) -> str:
        if not self.ready.is_set():
            return render.status_html(None, loading=self.name)
        if self.engine is None:
            return render.status_html(None, error=scrub(self.error or ""))
        self.engine.refresh_head()
        return render.status_html(self.engine.status())


HOLDER = EngineHolder()
if zerogpu.enabled():  # a GPU Space: load at import, so the GPU work below finds the model placed
    HOLDER.load(warm=not zerogpu.on_zero_gpu())


# ----- model work (inside @spaces.GPU on ZeroGPU; plain calls elsewhere) --------------------------
@zerogpu.model_work
def model_stream(question: str, max_new_tokens: Any, temperature: Any, verifier: str | None) -> Iterator[dict]:
    """The engine's stream events; closing this generator stops generation at once."""
    with closing(HOLDER.get().stream(question, max_new_tokens, temperature, verifier=verifier)) as st:
        yield from st


@zerogpu.model_work
def model_example(question: str) -> tuple[dict[str, Any] | None, str]:
    """An example's stored result (re-scored when only the head changed), or (None, why not)."""
    return ex.load(HOLDER.get(), question)


@zerogpu.model_work
def model_verify(analysis: dict[str, Any], name: str) -> dict[str, Any]:
    return HOLDER.get().verify(analysis, name)


@zerogpu.model_work
def model_paste(problem: str, steps: str, answer: str | None) -> dict[str, Any]:
    return HOLDER.get().analyze_pasted(problem, steps, answer)


@zerogpu.model_work
def model_row(row: dict[str, Any]) -> dict[str, Any]:
    return HOLDER.get().analyze_row(row)


@zerogpu.model_work
def model_score_file(path: str) -> Iterator[tuple[int, int, list[dict[str, Any]], list[str]]]:
    yield from HOLDER.get().score_file(path)


# ----- helpers ------------------------------------------------------------------------------------
def _mode(label: str | None) -> str:
    return MODES.get(label or "", "step")


def _verifier_name(choice: str | None, prm_id: str | None) -> str | None:
    if choice == JUDGE:
        return "judge"
    if choice == PRM:  # only ids on the server's list; checked before anything is looked up
        return "prm:" + allowlist.web_prm(prm_id or "")
    return None


def _err(e: BaseException) -> str:
    if isinstance(e, InputError):
        return render.notice_html(scrub(str(e)), "error")
    logger.exception("request failed", exc_info=e)
    return render.notice_html(OOPS.format(e.__class__.__name__), "error")


def _info(a: dict[str, Any], source: str = "") -> str:
    bits = []
    t = a.get("timing") or {}
    if source == "stored":
        bits.append("Stored result for this example (computed ahead of time with this model).")
    elif source == "re-scored":
        bits.append("Stored chain for this example, re-scored now with the current head.")
    if t:
        bits.append(
            f"Generated in {t.get('generate_s', 0):.1f} s; final teacher-forced scoring {t.get('final_s', 0):.1f} s."
        )
    if a.get("stop_reason") and a["stop_reason"] not in ("answer", "eos"):
        bits.append(f"Generation stopped early: {a['stop_reason'].replace('_', ' ')}.")
    v = a.get("verifier")
    if v:
        bits.append(f"Verifier: {v['label']} ({v.get('seconds', 0):.1f} s).")
    else:
        bits.append("Verifier not run yet: it takes seconds per chain on a CPU, so it runs on demand (Compare tab).")
    return f'<div class="uv-hint">{render.esc(" ".join(bits))}</div>'


def _view(a: dict[str, Any], name: str) -> dict[str, Any]:
    a = dict(a)
    a["_view"] = name
    return a


# ----- ask ----------------------------------------------------------------------------------------
def ask(question, max_tokens, temperature, verifier, prm_id, auto_verify, mode_label) -> Iterator[tuple]:
    """Stream the chain; each step is coloured as soon as it is complete."""
    mode = _mode(mode_label)
    skip = gr.skip()
    try:
        q = clean_question(question or "")
        vname = _verifier_name(verifier, prm_id) if auto_verify else None
        HOLDER.get()  # a model that failed to load is reported before anything else
        # the old chain's state is dropped, so a click during streaming cannot bring it back
        yield render.chain_html({"question": q, "steps": [], "live": True}), "", None, skip, skip, ""
        final = None
        try:
            with closing(model_stream(q, max_tokens, temperature, vname)) as st:  # Stop closes it at once
                for ev in st:
                    if ev["phase"] == "stream":
                        yield render.chain_html(ev["view"], mode), skip, skip, skip, skip, skip
                    else:
                        final = _view(ev["analysis"], "ask")
                        yield (render.chain_html(final, mode), render.step_detail_html(final, None), final, final,
                               None, _info(final))
        except InputError as e:  # a verifier that cannot run: the chain itself is fine
            if final is None:
                raise
            yield skip, skip, skip, skip, skip, _info(final) + render.notice_html(str(e), "warn")
    except Exception as e:
        yield _err(e), "", skip, skip, skip, ""


def show_example(question, mode_label) -> Iterator[tuple]:
    """An example's stored result at once when it fits the loaded model; else generated live."""
    mode = _mode(mode_label)
    try:
        HOLDER.get()
        a, why = model_example(question)
        if a is not None:
            a = _view(a, "ask")
            yield render.chain_html(a, mode), render.step_detail_html(a, None), a, a, None, _info(a, why)
            return
        logger.info("Example generated live: %s", why)
    except Exception as e:
        yield _err(e), "", gr.skip(), gr.skip(), gr.skip(), ""
        return
    yield from ask(question, ex.DEFAULT_SETTINGS["max_new_tokens"], 0.0, NO_VERIFIER, "", False, mode_label)


# ----- selection, views, plots --------------------------------------------------------------------
def select_step(a, mode_label, evt: gr.EventData):
    data = getattr(evt, "_data", None) or {}
    try:
        k = int(data.get("step"))
    except (TypeError, ValueError):
        return gr.skip(), gr.skip(), gr.skip(), gr.skip()
    if not a or not a.get("steps") or not 0 <= k < len(a["steps"]):
        return gr.skip(), gr.skip(), gr.skip(), gr.skip()
    return render.chain_html(a, _mode(mode_label), selected=k), render.step_detail_html(a, k), a, k


def rerender(mode_label, ask_a, paste_a, file_a, current, sel):
    mode = _mode(mode_label)

    def one(a):
        if not a:
            return gr.skip()
        k = sel if current and a.get("_view") == current.get("_view") else None
        return render.chain_html(a, mode, selected=k)

    return one(ask_a), one(paste_a), one(file_a)


def why_views(a, sel, distance, relative):
    steps = (a or {}).get("steps") or []
    k = sel if isinstance(sel, int) and 0 <= sel < len(steps) else (0 if steps else None)
    choices = [(f"Step {i + 1}: {render._short(s.get('body', ''), 60)}", i) for i, s in enumerate(steps)]
    dd = gr.update(choices=choices, value=k)
    return (
        dd,
        plots.step_scores_fig(a, k),
        plots.token_trace_fig(a, k),
        plots.attention_fig(a, k, distance="all" if distance in (None, "all") else str(distance), relative=relative),
        plots.attribution_fig(a, k),
    )


def compare_views(a):
    return plots.compare_fig(a), render.compare_html(a)


def run_verifier(current, verifier, prm_id, mode_label, sel):
    skip = gr.skip()
    if not current or not current.get("steps"):
        return (skip,) * 7 + (render.notice_html("Analyse a chain first.", "warn"),)
    try:
        name = _verifier_name(verifier, prm_id)
        if name is None:
            return (skip,) * 7 + (render.notice_html("Choose a verifier first.", "warn"),)
        HOLDER.get()
        a = model_verify(current, name)
    except Exception as e:
        return (skip,) * 7 + (_err(e),)
    mode = _mode(mode_label)
    html = render.chain_html(a, mode, selected=sel)
    view = a.get("_view")
    outs = [a]
    for name_ in ("ask", "paste", "file"):
        outs += [a, html] if view == name_ else [skip, skip]
    msg = render.notice_html(f"Verified with {a['verifier']['label']} in {a['verifier']['seconds']:.1f} s.", "ok")
    return (*outs, msg)


# ----- paste --------------------------------------------------------------------------------------
def paste(problem, steps, answer, mode_label):
    skip = gr.skip()
    try:
        clean_question(problem or "")
        HOLDER.get()
        a = _view(model_paste(problem, steps, answer), "paste")
    except Exception as e:
        return _err(e), "", skip, skip, skip
    return render.chain_html(a, _mode(mode_label)), render.step_detail_html(a, None), a, a, None


# ----- files --------------------------------------------------------------------------------------
def _progress_html(done: int, total: int, n_ok: int, errors: list[str]) -> str:
    # the bar itself is Gradio's (gr.Progress in score_upload); this is the count and the problems
    bar = f'<div class="uv-hint">Scored {done} of {total} chains ({n_ok} ok, {len(errors)} problems)</div>'
    if errors:
        items = "".join(f"<li>{render.esc(e)}</li>" for e in errors[:20])
        more = f"<li>… and {len(errors) - 20} more</li>" if len(errors) > 20 else ""
        bar += render.notice_html(f"{len(errors)} row(s) could not be scored and were skipped:", "warn")
        bar += f'<ul class="uv-hint">{items}{more}</ul>'
    return bar


def steps_table(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """One line per step, the most likely wrong first."""
    recs = []
    for r in rows:
        prim = r["primary"]
        labels = r.get("labels") or [None] * len(r["steps"])
        for k, text in enumerate(r["steps"]):
            name = "p_wrong" if is_probability(prim) else "score"  # a baseline's number is not a probability
            rec = {"chain": r["id"], "step": k + 1, f"{name} ({method_label(prim)})": r["scores"][prim][k]}
            for m, vals in r["scores"].items():
                if m != prim and isinstance(vals, list) and k < len(vals):
                    rec[m] = vals[k]
            if any(y is not None for y in labels):
                rec["label"] = {None: "", 0: "fine", 1: "wrong"}.get(labels[k], "")
            rec["text"] = " ".join(str(text).split())[:300]
            recs.append(rec)
    df = pd.DataFrame(recs)
    if len(df):
        df = df.sort_values(df.columns[2], ascending=False, kind="stable").reset_index(drop=True)
    return df


def evaluation_report(rows: list[dict[str, Any]], eng: Engine) -> dict[str, Any] | None:
    """Step metrics per method over the rows that carry labels; None when none does."""
    from uhead_viz import metrics

    lab = [r for r in rows if r.get("labels") and any(y is not None for y in r["labels"])]
    if not lab:
        return None
    methods = [m for m in lab[0]["scores"] if all(m in r["scores"] for r in lab)]
    labels = [r["labels"] for r in lab]
    out: dict[str, Any] = {
        "n_chains": len(lab),
        "n_steps": sum(1 for ls in labels for y in ls if y is not None),
        "n_wrong": sum(1 for ls in labels for y in ls if y == 1),
        "model": eng.llm.name,
        "head": shown_path(eng.hs.path),
        "methods": {},
    }
    for m in methods:
        scores = [r["scores"][m] for r in lab]
        if m == "uhead":
            thr, how = eng.threshold, "the head's validation threshold"
        else:
            thr, _ = metrics.best_threshold([metrics.first_error(y) for y in labels], scores)
            how = "best on this file (optimistic)"
        out["methods"][m] = {**metrics.summary(labels, scores, thr), "threshold": thr, "threshold_from": how}
    return out


def end_session(request: gr.Request = None) -> None:
    """The visitor closed the page: remove the session's exports."""
    DOWNLOADS.end(getattr(request, "session_hash", None))


def _write_downloads(
    rows: list[dict[str, Any]], df: pd.DataFrame, report: dict | None, session: str | None = None
) -> list[str]:
    """The exports, in the session's own temporary folder (replacing its previous ones)."""
    d = DOWNLOADS.fresh(session, "file")
    paths = [d / "step_scores.csv", d / "scored_chains.jsonl"]
    df.to_csv(paths[0], index=False, quoting=csv.QUOTE_NONNUMERIC)
    with open(paths[1], "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    if report:
        paths.append(d / "evaluation_report.json")
        paths[-1].write_text(json.dumps(report, indent=2, default=float) + "\n", encoding="utf-8")
    return [str(p) for p in paths]


def score_upload(file, request: gr.Request = None, progress=gr.Progress()) -> Iterator[tuple]:  # noqa: B008 (Gradio reads the default)
    skip = gr.skip()
    if file is None:
        yield render.notice_html("Choose a JSON or JSONL file of chains first.", "warn"), skip, skip, skip, ""
        return
    path = file if isinstance(file, str) else getattr(file, "name", None) or file.get("path")
    try:
        eng = HOLDER.get()
        rows: list[dict[str, Any]] = []
        errors: list[str] = []
        total = 0
        # Gradio's progress bar shows while nothing is yielded; the table comes once, complete
        for update in model_score_file(path):
            done, total, rows, errors = update
            progress((done, total), desc="Scoring chains", unit="chains")
        if not rows:
            msg = "None of the rows could be scored. " + (errors[0] if errors else "")
            yield render.notice_html(msg, "error") + _progress_html(total, total, 0, errors), skip, rows, None, ""
            return
        df = steps_table(rows)
        report = evaluation_report(rows, eng)
        files = _write_downloads(rows, df, report, getattr(request, "session_hash", None))
        done_msg = render.notice_html(
            f"Scored {len(rows)} chains ({len(df)} steps). Click a row to open its chain below.", "ok"
        )
        yield done_msg + _progress_html(total, total, len(rows), errors), df, rows, files, render.report_html(report)
    except Exception as e:
        yield _err(e), skip, skip, skip, ""


def open_row(rows, mode_label, evt: gr.SelectData):
    skip = gr.skip()
    try:
        rv = evt.row_value or []
        chain_id, step = str(rv[0]), int(rv[1]) - 1
        row = next((r for r in rows or [] if str(r["id"]) == chain_id), None)
        if row is None:
            msg = render.notice_html("That chain is no longer loaded; score the file again.", "warn")
            return msg, "", skip, skip, skip
        HOLDER.get()
        a = _view(model_row(row), "file")
    except Exception as e:
        return _err(e), "", skip, skip, skip
    k = step if 0 <= step < len(a["steps"]) else None
    return render.chain_html(a, _mode(mode_label), selected=k), render.step_detail_html(a, k), a, a, k


# ----- API ----------------------------------------------------------------------------------------
def _analyses(question: Any, max_new_tokens: Any, temperature: Any, verifier: Any) -> Iterator[dict[str, Any]]:
    """The API's answer as it grows: a partial result per streamed update, then the final one.

    Yielding while the chain is written is what lets a client's ``job.cancel()`` stop the
    work: Gradio closes a generator between two yields (which ends generation and frees
    the model at once), but cannot stop a plain function that is running.
    """
    try:
        vname = allowlist.web_verifier(verifier)  # before anything is read or loaded
        q = clean_question(question if question is not None else "")
        tokens, temp, _ = request_settings(max_new_tokens, temperature)  # refuses what is not a number
        HOLDER.get()
        default = tokens == ex.DEFAULT_SETTINGS["max_new_tokens"] and temp == 0.0
        a = model_example(q)[0] if default and not vname else None
        if a is None:
            # closed explicitly, so a cancel (GeneratorExit at a yield) stops generation at once
            with closing(model_stream(q, max_new_tokens, temperature, vname)) as st:
                for ev in st:
                    if ev["phase"] == "stream":
                        yield partial_result(ev["view"])
                    elif ev["phase"] == "final" and vname:
                        yield partial_result(ev["analysis"])
                    else:
                        a = ev["analysis"]
        assert a is not None
        yield api_result(a)
    except InputError as e:
        yield {"error": scrub(str(e)), "steps": []}
    except Exception as e:
        logger.exception("analyze failed")
        yield {"error": OOPS.format(e.__class__.__name__), "steps": []}


def partial_result(view: dict[str, Any]) -> dict[str, Any]:
    """A streamed update of the API: the steps scored so far, marked ``partial``."""
    steps = [
        {"index": s["index"], "text": s["body"], "scores": dict(s["scores"])}
        for s in view.get("steps", [])
        if s.get("scores")
    ]
    return {"question": view.get("question"), "partial": True, "steps": steps}


def analyze(question: str, max_new_tokens: int = 320, temperature: float = 0.0, verifier: str = "") -> dict:
    """Generate a step-by-step chain for a question and score every step.

    Returns JSON: ``steps``, each with its ``text`` and ``scores`` (method -> probability the
    step is wrong), plus the model, the head, the method that colours the page (``primary``),
    the answer, and ``notes`` (e.g. a setting moved into range). ``verifier``: "" (none),
    "judge", or "prm:<hub id>" with an id on the server's list (``UHEAD_VIZ_PRM_ALLOW`` or
    ``prm_allowlist.txt``). Errors come back as ``{"error": message, "steps": []}``.
    """
    *_, final = _analyses(question, max_new_tokens, temperature, verifier)
    return final


def analyze_api(
    question: str, max_new_tokens: int = 320, temperature: float = 0.0, verifier: str = ""
) -> Iterator[dict]:
    """Generate a step-by-step chain for a question and score every step.

    Returns JSON: ``steps``, each with its ``text`` and ``scores`` (method -> probability the
    step is wrong), plus the model, the head, the method that colours the page (``primary``),
    the answer, and ``notes`` (e.g. a setting moved into range). ``verifier``: "" (none),
    "judge", or "prm:<hub id>" with an id on the server's list (``UHEAD_VIZ_PRM_ALLOW`` or
    ``prm_allowlist.txt``). Errors come back as ``{"error": message, "steps": []}``.
    While the chain is written, updates marked ``"partial": true`` stream first; a client's
    ``predict()`` returns the final result, and ``job.cancel()`` stops the work.
    """
    yield from _analyses(question, max_new_tokens, temperature, verifier)


# ----- layout -------------------------------------------------------------------------------------
INTRO = """<div class="uv-title"><h1>uhead-viz</h1>
<p>A local LLM solves a problem step by step; an uncertainty head reads its attention and token
probabilities and colours each step by the probability that it is wrong.</p></div>"""

API_DOC = """### Use it from code
```python
from gradio_client import Client
result = Client("http://127.0.0.1:7860").predict("What is 17 * 23?", api_name="/analyze")
for step in result["steps"]:
    print(step["scores"][result["primary"]], step["text"])
```
`analyze(question, max_new_tokens=320, temperature=0.0, verifier="")` returns the steps, each with its
text and its score by every method (probability that the step is wrong). `verifier` may be `"judge"`
or `"prm:<hub id>"` with an id this server offers (the PRM box lists them); the verifier and the combined
score `1 - (1 - head)(1 - verifier)` are then added.
While the chain is written, updates marked `"partial": true` stream (`Client.submit`); `predict` returns the
final result, and `job.cancel()` stops the work at once.
"""


def build(holder: EngineHolder | None = None) -> gr.Blocks:
    global HOLDER
    if holder is not None:
        HOLDER = holder
    verifiers = [NO_VERIFIER] + ([JUDGE] if "judge" in verifier_names() else []) + [PRM]
    model_work = {"concurrency_id": "model", "concurrency_limit": 1}
    # A file job has its own slot: it takes the model per chain, in the engine lock's background
    # class, so a question asked meanwhile starts at once and goes before the next chain.
    file_work = {"concurrency_id": "file", "concurrency_limit": 1}
    # Offline unless asked: Gradio's usage analytics and version check (and the Hugging Face
    # telemetry they send) contact api.gradio.app and huggingface.co when the app starts.
    analytics = os.environ.get("GRADIO_ANALYTICS_ENABLED", "").strip() == "True"
    # Gradio's copies of served files (the exports) go after an hour; ours go with the session.
    with gr.Blocks(title="uhead-viz", analytics_enabled=analytics, delete_cache=(1800, 3600)) as demo:
        gr.HTML(INTRO)
        status = gr.HTML(HOLDER.status_html(), elem_id="uv-status")
        timer = gr.Timer(1.0)
        current = gr.State(None)
        sel = gr.State(None)
        ask_state, paste_state, file_state, file_rows = gr.State(None), gr.State(None), gr.State(None), gr.State([])
        with gr.Tabs():
            with gr.Tab("Ask", id="ask", elem_id="tab-ask"):
                with gr.Row(equal_height=False):
                    with gr.Column(scale=4, min_width=320):
                        question = gr.Textbox(
                            label="Question", lines=4, placeholder="Type a math word problem…", elem_id="question"
                        )
                        with gr.Row():
                            go = gr.Button("Solve and check", variant="primary", elem_id="solve")
                            stop = gr.Button("Stop", variant="secondary", elem_id="stop")
                        examples = gr.Examples(
                            [[q] for q in ex.questions()],
                            inputs=[question],
                            label="Examples (GSM8K- and MATH-style; results computed ahead of time, shown at once)",
                            example_labels=[f"{e['style']}: {render._short(e['question'], 46)}" for e in ex.EXAMPLES],
                            cache_examples=False,
                            api_visibility="private",
                        )
                        mode = gr.Radio(list(MODES), value="Step score", label="Colour by", elem_id="mode")
                        with gr.Accordion("Generation settings", open=False):
                            max_tokens = gr.Slider(32, 1024, value=320, step=16, label="Max new tokens")
                            temperature = gr.Slider(0.0, 1.5, value=0.0, step=0.05, label="Temperature (0 = greedy)")
                        with gr.Accordion("Verifier", open=False, elem_id="verifier-acc"):
                            gr.Markdown(
                                "A verifier (an LLM judge, or a process reward model given by hub id) takes seconds "
                                "per chain on a CPU, so it runs after the chain is complete, or on demand in the "
                                "Compare tab."
                            )
                            verifier = gr.Dropdown(verifiers, value=NO_VERIFIER, label="Verifier", elem_id="verifier")
                            offered = allowlist.allowed_prms()
                            prm_id = gr.Textbox(
                                label="PRM hub id",
                                placeholder=offered[0] if offered else "none offered on this server",
                                info="This server offers: " + (", ".join(offered) or "none"),
                            )
                            auto_verify = gr.Checkbox(False, label="Run the verifier after each chain")
                    with gr.Column(scale=7, min_width=420):
                        chain = gr.HTML(render.chain_html(None), elem_id="chain", js_on_load=render.STEP_CLICK_JS)
                        detail = gr.HTML(render.step_detail_html(None, None), elem_id="detail")
                        info = gr.HTML("", elem_id="ask-info")
                        export.add_download_buttons(ask_state, mode, _mode, "ask", DOWNLOADS.fresh)
                        link = share.link_box()
            with gr.Tab("Why", id="why", elem_id="tab-why"):
                gr.Markdown("What is behind the selected step's score. Click a step in any chain to select it.")
                step_dd = gr.Dropdown(choices=[], label="Step", elem_id="why-step")
                fig_scores = gr.Plot(show_label=False, elem_id="fig-scores")
                fig_tokens = gr.Plot(show_label=False, elem_id="fig-tokens")
                with gr.Row():
                    with gr.Column(scale=1):
                        with gr.Row():
                            distance = gr.Dropdown(["all", "1", "2", "3", "4", "5"], value="all",
                                                   label="Look-back distance")
                            relative = gr.Checkbox(False, label="Relative to the chain's mean")
                        fig_attn = gr.Plot(show_label=False, elem_id="fig-attn")
                    with gr.Column(scale=1):
                        fig_attr = gr.Plot(show_label=False, elem_id="fig-attr")
            with gr.Tab("Compare", id="compare", elem_id="tab-compare"):
                gr.Markdown(
                    "The head (or, without one, the baseline) against a verifier, step by step. The combined score "
                    "is 1 − (1 − head)(1 − verifier). Pick the verifier in the Ask tab's accordion."
                )
                with gr.Row():
                    verify_btn = gr.Button("Run verifier on this chain", variant="primary", elem_id="verify")
                verify_msg = gr.HTML("")
                fig_cmp = gr.Plot(show_label=False, elem_id="fig-compare")
                cmp_html = gr.HTML(render.compare_html(None), elem_id="compare-table")
            with gr.Tab("Analyse a file", id="file", elem_id="tab-file"):
                gr.Markdown(
                    "Upload chains as JSON (a list) or JSON Lines: ProcessBench rows (`id`, `problem`, `steps`, "
                    "`label`), rows written by `python -m uhead_viz generate`, or any `{problem, steps}` rows, "
                    f"optionally with per-step `labels`. Up to {MAX_UPLOAD_BYTES // 2**20} MB."
                )
                with gr.Row():
                    upload = gr.File(label="Chains file (.json or .jsonl)", elem_id="upload", scale=3)
                    score_btn = gr.Button("Score file", variant="primary", elem_id="score-file", scale=1)
                file_msg = gr.HTML("", elem_id="file-msg")
                table = gr.Dataframe(
                    label="Steps, most likely wrong first (click a row to open its chain)",
                    interactive=False, wrap=True, show_search="filter", max_height=420, elem_id="table",
                )
                report = gr.HTML("", elem_id="report")
                downloads = gr.File(label="Downloads", file_count="multiple", interactive=False, elem_id="downloads")
                file_chain = gr.HTML(render.placeholder_html("Click a row of the table to open its chain here."),
                                     elem_id="file-chain", js_on_load=render.STEP_CLICK_JS)
                file_detail = gr.HTML("", elem_id="file-detail")
                export.add_download_buttons(file_state, mode, _mode, "file", DOWNLOADS.fresh)
            with gr.Tab("Paste a chain", id="paste", elem_id="tab-paste"):
                with gr.Row(equal_height=False):
                    with gr.Column(scale=4, min_width=320):
                        p_problem = gr.Textbox(label="Problem", lines=3, elem_id="paste-problem")
                        p_steps = gr.Textbox(
                            label="Steps (one per line, or each starting 'Step k:')", lines=8, elem_id="paste-steps"
                        )
                        p_answer = gr.Textbox(label="Final answer (optional)", elem_id="paste-answer")
                        p_btn = gr.Button("Score these steps", variant="primary", elem_id="paste-go")
                    with gr.Column(scale=7, min_width=420):
                        p_chain = gr.HTML(render.placeholder_html("Scored steps appear here."), elem_id="paste-chain",
                                          js_on_load=render.STEP_CLICK_JS)
                        p_detail = gr.HTML("", elem_id="paste-detail")
                        export.add_download_buttons(paste_state, mode, _mode, "paste", DOWNLOADS.fresh)
            with gr.Tab("API", id="api"):
                gr.Markdown(API_DOC)

        ask_outs = [chain, detail, ask_state, current, sel, info]
        ask_ins = [question, max_tokens, temperature, verifier, prm_id, auto_verify, mode]
        e1 = go.click(ask, ask_ins, ask_outs, api_visibility="private", **model_work)
        e2 = question.submit(ask, ask_ins, ask_outs, api_visibility="private", **model_work)
        stop.click(None, cancels=[e1, e2])
        examples.load_input_event.then(show_example, [question, mode], ask_outs, api_visibility="private",
                                       **model_work)
        for view, state, det in ((chain, ask_state, detail), (p_chain, paste_state, p_detail),
                                 (file_chain, file_state, file_detail)):
            view.click(select_step, [state, mode], [view, det, current, sel], api_visibility="private")
        mode.change(rerender, [mode, ask_state, paste_state, file_state, current, sel], [chain, p_chain, file_chain],
                    api_visibility="private")
        why_ins = [current, sel, distance, relative]
        why_outs = [step_dd, fig_scores, fig_tokens, fig_attn, fig_attr]
        for trig in (current.change, sel.change, distance.change, relative.change):
            trig(why_views, why_ins, why_outs, api_visibility="private")
        step_dd.input(lambda k: k, [step_dd], [sel], api_visibility="private")
        current.change(compare_views, [current], [fig_cmp, cmp_html], api_visibility="private")
        verify_btn.click(
            run_verifier, [current, verifier, prm_id, mode, sel],
            [current, ask_state, chain, paste_state, p_chain, file_state, file_chain, verify_msg],
            api_visibility="private", **model_work,
        )
        score_btn.click(score_upload, [upload], [file_msg, table, file_rows, downloads, report],
                        api_visibility="private", show_progress_on=[table], **file_work)
        table.select(open_row, [file_rows, mode], [file_chain, file_detail, file_state, current, sel],
                     api_visibility="private", **model_work)
        p_btn.click(paste, [p_problem, p_steps, p_answer, mode], [p_chain, p_detail, paste_state, current, sel],
                    api_visibility="private", **model_work)
        timer.tick(
            lambda: (HOLDER.status_html(), gr.Timer(1.0 if not HOLDER.ready.is_set() else 30.0)), None, [status, timer],
            api_visibility="private", show_progress="hidden",
        )
        linked = share.wire(demo, question=question, notice=info, link=link, state=ask_state, open_chain=show_example,
                            open_inputs=[question, mode], open_outputs=ask_outs, **model_work)
        stop.click(None, cancels=[linked])
        gr.api(analyze_api, api_name="analyze", **model_work)
        demo.unload(end_session)
    return demo


THEME = gr.themes.Soft(
    primary_hue="blue",
    neutral_hue="slate",
    font=("ui-sans-serif", "system-ui", "-apple-system", "Segoe UI", "Roboto", "Helvetica Neue", "Arial", "sans-serif"),
)


def launch(demo: gr.Blocks, **kw: Any) -> Any:
    demo.queue(default_concurrency_limit=1, max_size=64)
    return demo.launch(
        show_error=False,
        css=render.CSS,
        theme=THEME,
        max_file_size=MAX_UPLOAD_BYTES,
        **kw,
    )


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    HOLDER.start()
    launch(
        build(),
        server_name=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
        server_port=int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
    )


if __name__ == "__main__":
    main()
