"""What every handler shares: the page's components, the model holder, and the messages.

Handlers return ``{component: value}`` dicts: a component left out keeps what it shows, so
no handler pads its answer with placeholders. They read the components from ``Page``, which
the layout fills in, and the model from the holder ``build`` was given.
"""

from __future__ import annotations

import logging
from typing import Any

from .. import allowlist
from ..downloads import SessionDownloads
from ..errors import InputError
from ..public import scrub
from . import render
from .holder import EngineHolder

logger = logging.getLogger("uhead_viz.app")

MODES = {"Step score": "step", "Token probability": "prob", "Token attention": "attn"}
NO_VERIFIER = "None"
JUDGE = "LLM judge (same model)"
PRM = "PRM (hub id from this server's list)"
OOPS = "Something went wrong ({}). The error was logged; please try again."
VIEWS = ("ask", "paste", "file")  # the tabs that show a chain; the shown chain's tab is in Page.view


class Page:
    """The components handlers read and write, set by the layout as it makes them."""

    # Ask
    question: Any
    mode: Any
    chain: Any
    detail: Any
    info: Any
    # the chain on show (any tab), which tab shows it, and its selected step
    current: Any
    view: Any
    sel: Any
    ask_state: Any
    # Why and Compare
    step_dd: Any
    fig_scores: Any
    fig_tokens: Any
    fig_attn: Any
    fig_attr: Any
    verify_msg: Any
    fig_cmp: Any
    cmp_html: Any
    # Analyse a file
    file_msg: Any
    table: Any
    file_rows: Any
    downloads: Any
    report: Any
    file_chain: Any
    file_detail: Any
    file_state: Any
    # Paste a chain
    p_chain: Any
    p_detail: Any
    paste_state: Any

    def chain_parts(self, view: str) -> tuple[Any, Any, Any]:
        """(chain HTML, step detail, analysis state) of a tab that shows a chain."""
        return {
            "ask": (self.chain, self.detail, self.ask_state),
            "paste": (self.p_chain, self.p_detail, self.paste_state),
            "file": (self.file_chain, self.file_detail, self.file_state),
        }[view]


def mode_of(label: str | None) -> str:
    return MODES.get(label or "", "step")


def verifier_name(choice: str | None, prm_id: str | None) -> str | None:
    if choice == JUDGE:
        return "judge"
    if choice == PRM:  # only ids on the server's list; checked before anything is looked up
        return "prm:" + allowlist.web_prm(prm_id or "")
    return None


def error_html(e: BaseException) -> str:
    """A message for the visitor: an InputError's own words, else the error's type only (logged in full)."""
    if isinstance(e, InputError):
        return render.notice_html(scrub(str(e)), "error")
    logger.exception("request failed", exc_info=e)
    return render.notice_html(OOPS.format(e.__class__.__name__), "error")


def info_html(a: dict[str, Any], source: str = "") -> str:
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


class HandlerBase:
    """The state every handler needs: the model holder, the page, and the sessions' download folders."""

    def __init__(self, holder: EngineHolder, page: Page, downloads: SessionDownloads) -> None:
        self.holder = holder
        self.page = page
        self.downloads = downloads

    def shown(self, view: str, a: dict[str, Any], mode_label: str | None, k: int | None = None,
              info: str | None = None) -> dict[Any, Any]:
        """A tab's update that shows the analysis ``a`` (step ``k`` selected) and makes it the current chain."""
        p = self.page
        html, detail, state = p.chain_parts(view)
        out = {
            html: render.chain_html(a, mode_of(mode_label), selected=k),
            detail: render.step_detail_html(a, k),
            state: a,
            p.current: a,
            p.view: view,
            p.sel: k,
        }
        if info is not None:
            out[p.info] = info
        return out

    def failed(self, view: str, e: BaseException) -> dict[Any, Any]:
        html, detail, _ = self.page.chain_parts(view)
        out = {html: error_html(e), detail: ""}
        if view == "ask":
            out[self.page.info] = ""
        return out
