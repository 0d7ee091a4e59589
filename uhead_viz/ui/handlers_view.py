"""Handlers that only redraw: a clicked step, another colouring, the Why and Compare tabs."""

from __future__ import annotations

from typing import Any

import gradio as gr

from . import plots, render
from .base import VIEWS, HandlerBase, mode_of


class ViewHandlers(HandlerBase):
    # one method per tab: Gradio finds the event's data by the parameter's annotation, which a
    # functools.partial would hide
    def select_ask(self, a, mode_label, evt: gr.EventData) -> dict:
        return self.select_step("ask", a, mode_label, evt)

    def select_paste(self, a, mode_label, evt: gr.EventData) -> dict:
        return self.select_step("paste", a, mode_label, evt)

    def select_file(self, a, mode_label, evt: gr.EventData) -> dict:
        return self.select_step("file", a, mode_label, evt)

    def select_step(self, view: str, a, mode_label, evt: Any) -> dict:
        """A click on a step of ``view``'s chain selects it (and makes that chain the current one)."""
        data = getattr(evt, "_data", None) or {}
        try:
            k = int(data.get("step"))
        except (TypeError, ValueError):
            return gr.skip()  # one skip stands for every output (an empty dict would not)
        if not a or not a.get("steps") or not 0 <= k < len(a["steps"]):
            return gr.skip()
        p = self.page
        html, detail, _ = p.chain_parts(view)
        return {html: render.chain_html(a, mode_of(mode_label), selected=k), detail: render.step_detail_html(a, k),
                p.current: a, p.view: view, p.sel: k}

    def rerender(self, mode_label, ask_a, paste_a, file_a, view, sel) -> dict:
        """Every tab's chain in the new colouring (the selection kept where it is)."""
        mode = mode_of(mode_label)
        out: dict[Any, Any] = {}
        for name, a in zip(VIEWS, (ask_a, paste_a, file_a)):
            if a:
                html = self.page.chain_parts(name)[0]
                out[html] = render.chain_html(a, mode, selected=sel if view == name else None)
        return out or gr.skip()

    def why_views(self, a, sel, distance, relative) -> dict:
        p = self.page
        steps = (a or {}).get("steps") or []
        k = sel if isinstance(sel, int) and 0 <= sel < len(steps) else (0 if steps else None)
        choices = [(f"Step {i + 1}: {render._short(s.get('body', ''), 60)}", i) for i, s in enumerate(steps)]
        dist = "all" if distance in (None, "all") else str(distance)
        return {
            p.step_dd: gr.update(choices=choices, value=k),
            p.fig_scores: plots.step_scores_fig(a, k),
            p.fig_tokens: plots.token_trace_fig(a, k),
            p.fig_attn: plots.attention_fig(a, k, distance=dist, relative=relative),
            p.fig_attr: plots.attribution_fig(a, k),
        }

    def compare_views(self, a) -> dict:
        return {self.page.fig_cmp: plots.compare_fig(a), self.page.cmp_html: render.compare_html(a)}
