"""Links that open the app on a chain, so an analysis can be sent to someone.

``?example=ID`` opens a stored example at once (``ID`` as in ``examples.EXAMPLES``, e.g.
``gsm8k-natalia``); ``?q=QUESTION`` fills the question in and runs it with the default
settings, which are the settings stored examples are built with. Gradio's own
``?__theme=dark`` works alongside either.

The page's address is read in the browser (``window.location``) rather than from the
request: behind a proxy (a Space, a reverse proxy) the server sees its own address, not
the one the person typed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import quote

import gradio as gr

from . import examples as ex
from .render import notice_html

logger = logging.getLogger(__name__)

EXAMPLE, QUESTION = "example", "q"
# the page's own address, without its query string
BASE_JS = "(base) => window.location.origin + window.location.pathname"


def query_for(analysis: dict[str, Any] | None) -> str:
    """The query string that opens this chain again: its example's id, else its question; "" for none."""
    q = (analysis or {}).get("question")
    if not q or not (analysis or {}).get("steps"):
        return ""
    e = ex.example_for(q)
    if e is not None:
        return f"?{EXAMPLE}={quote(e['id'])}"
    return f"?{QUESTION}={quote(q, safe='')}"


def link_for(analysis: dict[str, Any] | None, base: str | None) -> str:
    """The full link to a chain (base is the page's address), or "" when there is nothing to link to."""
    query = query_for(analysis)
    return f"{base or ''}{query}" if query else ""


def read_query(params: dict[str, str]) -> tuple[str | None, str, str]:
    """(question, how, notice) from a page's query parameters; how is "example", "q" or ""."""
    name = (params.get(EXAMPLE) or "").strip()
    if name:
        e = next((e for e in ex.EXAMPLES if e["id"] == name), None)
        if e is None:
            ids = ", ".join(x["id"] for x in ex.EXAMPLES)
            return None, "", notice_html(f"There is no example called '{name}'. The examples are: {ids}.", "warn")
        return e["question"], EXAMPLE, ""
    q = params.get(QUESTION)
    if q is not None and q.strip():
        return q, QUESTION, ""
    return None, "", ""


def wire(
    demo: gr.Blocks,
    *,
    question: gr.Textbox,
    notice: gr.HTML,
    link: gr.Textbox,
    state: gr.State,
    open_chain: Callable[..., Any],
    open_inputs: Sequence[Any],
    open_outputs: Sequence[Any],
    **event_kw: Any,
) -> Any:
    """Open the chain a link asks for when the page loads, and keep ``link`` pointing at ``state``'s chain.

    ``open_chain(*open_inputs)`` is the handler that shows a question's chain (a stored
    example at once, else generated); it runs only when the page's address asked for one,
    so an ordinary page load queues no model work. Returns that event, for a Stop button to cancel.
    """
    base = gr.Textbox(visible=False)
    how = gr.State("")

    def on_load(base_url: str, request: gr.Request) -> dict[Any, Any]:
        params = dict(getattr(request, "query_params", None) or {})
        q, kind, msg = read_query(params)
        if kind:
            logger.info("Opened from a link: %s", kind)
        out: dict[Any, Any] = {how: kind, base: base_url}
        if q is not None:
            out[question] = q
        if msg:
            out[notice] = msg
        return out

    demo.load(on_load, [base], [question, how, notice, base], js=BASE_JS, api_visibility="private",
              show_progress="hidden")
    opened = how.change(open_chain, list(open_inputs), list(open_outputs), api_visibility="private", **event_kw)
    gr.on([state.change, base.change], link_for, [state, base], [link], api_visibility="private",
          show_progress="hidden")
    return opened


def link_box() -> gr.Textbox:
    """The "copy link" affordance: the link to the chain on show, with a copy button."""
    return gr.Textbox(
        label="Link to this chain", interactive=False, buttons=["copy"], elem_id="share-link", max_lines=1,
        placeholder="A chain's link appears here once it is scored.",
    )
