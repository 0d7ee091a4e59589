"""The "Analyse a file" tab: score an uploaded file of chains, its table and exports, open one row."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from typing import Any

import gradio as gr
import pandas as pd

from ..engine import Engine
from ..methods import method_label
from ..public import shown_path
from . import render
from .base import HandlerBase, error_html
from .holder import model_row, model_score_file
from .howto import is_probability


def progress_html(done: int, total: int, n_ok: int, errors: list[str]) -> str:
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
    from .. import metrics

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


class FileHandlers(HandlerBase):
    def end_session(self, request: gr.Request = None) -> None:
        """The visitor closed the page: remove the session's exports."""
        self.downloads.end(getattr(request, "session_hash", None))

    def write_downloads(
        self, rows: list[dict[str, Any]], df: pd.DataFrame, report: dict | None, session: str | None = None
    ) -> list[str]:
        """The exports, in the session's own temporary folder (replacing its previous ones)."""
        d = self.downloads.fresh(session, "file")
        paths = [d / "step_scores.csv", d / "scored_chains.jsonl"]
        df.to_csv(paths[0], index=False, quoting=csv.QUOTE_NONNUMERIC)
        with open(paths[1], "w", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
        if report:
            paths.append(d / "evaluation_report.json")
            paths[-1].write_text(json.dumps(report, indent=2, default=float) + "\n", encoding="utf-8")
        return [str(p) for p in paths]

    def score_upload(self, file, request: gr.Request = None, progress=gr.Progress()) -> Iterator[dict]:  # noqa: B008 (Gradio reads the default)
        p = self.page
        if file is None:
            yield {p.file_msg: render.notice_html("Choose a JSON or JSONL file of chains first.", "warn"), p.report: ""}
            return
        path = file if isinstance(file, str) else getattr(file, "name", None) or file.get("path")
        try:
            eng = self.holder.get()
            rows: list[dict[str, Any]] = []
            errors: list[str] = []
            total = 0
            # Gradio's progress bar shows while nothing is yielded; the table comes once, complete
            for update in model_score_file(self.holder, path):
                done, total, rows, errors = update
                progress((done, total), desc="Scoring chains", unit="chains")
            if not rows:
                msg = "None of the rows could be scored. " + (errors[0] if errors else "")
                yield {p.file_msg: render.notice_html(msg, "error") + progress_html(total, total, 0, errors),
                       p.file_rows: rows, p.downloads: None, p.report: ""}
                return
            df = steps_table(rows)
            report = evaluation_report(rows, eng)
            files = self.write_downloads(rows, df, report, getattr(request, "session_hash", None))
            done_msg = render.notice_html(
                f"Scored {len(rows)} chains ({len(df)} steps). Click a row to open its chain below.", "ok"
            )
            yield {p.file_msg: done_msg + progress_html(total, total, len(rows), errors), p.table: df,
                   p.file_rows: rows, p.downloads: files, p.report: render.report_html(report)}
        except Exception as e:
            yield {p.file_msg: error_html(e), p.report: ""}

    def open_row(self, rows, mode_label, evt: gr.SelectData) -> dict:
        """A click on a table row opens that chain below the table, its step selected."""
        try:
            rv = evt.row_value or []
            chain_id, step = str(rv[0]), int(rv[1]) - 1
            row = next((r for r in rows or [] if str(r["id"]) == chain_id), None)
            if row is None:
                msg = render.notice_html("That chain is no longer loaded; score the file again.", "warn")
                return {self.page.file_chain: msg, self.page.file_detail: ""}
            self.holder.get()
            a = model_row(self.holder, row)
        except Exception as e:
            return self.failed("file", e)
        k = step if 0 <= step < len(a["steps"]) else None
        return self.shown("file", a, mode_label, k)
