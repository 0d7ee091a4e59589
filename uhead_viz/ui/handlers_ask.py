"""The Ask and Paste tabs, and the verifier: the handlers that put a new chain on the page."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import closing
from typing import Any

from ..errors import InputError
from ..llm import clean_question
from . import examples as ex
from . import render
from .base import NO_VERIFIER, VIEWS, HandlerBase, error_html, info_html, mode_of, verifier_name
from .holder import model_example, model_paste, model_stream, model_verify

logger = logging.getLogger("uhead_viz.app")


class AskHandlers(HandlerBase):
    def ask(self, question, max_tokens, temperature, verifier, prm_id, auto_verify, mode_label) -> Iterator[dict]:
        """Stream the chain; each step is coloured as soon as it is complete."""
        p = self.page
        mode = mode_of(mode_label)
        try:
            q = clean_question(question or "")
            vname = verifier_name(verifier, prm_id) if auto_verify else None
            self.holder.get()  # a model that failed to load is reported before anything else
            # the old chain's state is dropped, so a click during streaming cannot bring it back
            yield {p.chain: render.chain_html({"question": q, "steps": [], "live": True}), p.detail: "",
                   p.ask_state: None, p.info: ""}
            final = None
            try:
                # closed explicitly: Stop (a cancel) closes it, which ends generation at once
                with closing(model_stream(self.holder, q, max_tokens, temperature, vname)) as st:
                    for ev in st:
                        if ev["phase"] == "stream":
                            yield {p.chain: render.chain_html(ev["view"], mode)}
                        else:
                            final = ev["analysis"]
                            yield self.shown("ask", final, mode_label, info=info_html(final))
            except InputError as e:  # a verifier that cannot run: the chain itself is fine
                if final is None:
                    raise
                yield {p.info: info_html(final) + render.notice_html(str(e), "warn")}
        except Exception as e:
            yield self.failed("ask", e)

    def show_example(self, question, mode_label) -> Iterator[dict]:
        """An example's stored result at once when it fits the loaded model; else generated live."""
        try:
            self.holder.get()
            a, why = model_example(self.holder, question)
            if a is not None:
                yield self.shown("ask", a, mode_label, info=info_html(a, why))
                return
            logger.info("Example generated live: %s", why)
        except Exception as e:
            yield self.failed("ask", e)
            return
        yield from self.ask(question, ex.DEFAULT_SETTINGS["max_new_tokens"], 0.0, NO_VERIFIER, "", False, mode_label)

    def paste(self, problem, steps, answer, mode_label) -> dict:
        try:
            clean_question(problem or "")
            self.holder.get()
            a = model_paste(self.holder, problem, steps, answer)
        except Exception as e:
            return self.failed("paste", e)
        return self.shown("paste", a, mode_label)

    def run_verifier(self, current, view, verifier, prm_id, mode_label, sel) -> dict:
        """Add a verifier's scores to the chain on show, in the tab that shows it."""
        p = self.page
        if not current or not current.get("steps"):
            return {p.verify_msg: render.notice_html("Analyse a chain first.", "warn")}
        try:
            name = verifier_name(verifier, prm_id)
            if name is None:
                return {p.verify_msg: render.notice_html("Choose a verifier first.", "warn")}
            self.holder.get()
            a = model_verify(self.holder, current, name)
        except Exception as e:
            return {p.verify_msg: error_html(e)}
        out: dict[Any, Any] = {p.current: a}
        if view in VIEWS:
            html, _, state = p.chain_parts(view)
            out[state] = a
            out[html] = render.chain_html(a, mode_of(mode_label), selected=sel)
        msg = f"Verified with {a['verifier']['label']} in {a['verifier']['seconds']:.1f} s."
        out[p.verify_msg] = render.notice_html(msg, "ok")
        return out
