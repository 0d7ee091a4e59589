"""The evaluation report: per-method metrics in one dict, written as JSON, Markdown and HTML.

``build_report`` turns the score cache's entries into the report (metrics per method, the
shared capture's time, the threshold policy); ``markdown_table`` is what the command
prints; ``write_html`` is a page with the table and the figures (``figures``: PR curves
and a reliability diagram), plotly.js inline so it opens offline. The items are
``evaluate.Item`` (labels, gold first error, id, row), read by attribute only, so this
module sits below ``evaluate`` and imports nothing of it.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

from .thresholds import Policy, ValThresholds, best_on_data, describe, policy_name, threshold_for

logger = logging.getLogger(__name__)

CAPTURE = "capture"  # the score cache's entry for the forward pass every internals method shares


def _num(x: Any) -> Any:
    if isinstance(x, float):
        return None if not math.isfinite(x) else round(x, 6)
    if isinstance(x, dict):
        return {k: _num(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_num(v) for v in x]
    return x


def method_report(
    items: list[Any], scores: list[list[float]], seconds: list[float], threshold: tuple[float, str], label: str
) -> dict[str, Any]:
    from .metrics import ece, pr_auc, processbench, roc_auc

    labels = [it.labels for it in items]
    pb = [(it.gold, s) for it, s in zip(items, scores) if it.gold is not None]
    acc = processbench([g for g, _ in pb], [s for _, s in pb], threshold[0]) if pb else {}
    return {
        "label": label,
        "pr_auc": pr_auc(labels, scores),
        "roc_auc": roc_auc(labels, scores),
        "f1": acc.get("f1", float("nan")),
        "error_acc": acc.get("error_acc", float("nan")),
        "correct_acc": acc.get("correct_acc", float("nan")),
        "ece": ece(labels, scores),
        "seconds_per_chain": sum(seconds) / len(seconds) if seconds else float("nan"),
        "threshold": threshold[0],
        "threshold_from": threshold[1],
    }


def build_report(
    dataset: str,
    fmt: str,
    items: list[Any],
    done: dict[str, dict[str, dict[str, Any]]],
    scorers: dict[str, Any],
    policy: Policy,
    skipped: list[dict[str, Any]],
    extra: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], dict[str, list[list[float]]], list[Any]]:
    """The report dict, plus each method's scores and the items they cover (for the figures)."""
    from .pairwise import pairwise_accuracy

    ok = [it for it in items if it.id in done and all(m in done[it.id] for m in scorers)]
    methods: dict[str, Any] = {}
    per_method: dict[str, list[list[float]]] = {}
    gold = [it.gold for it in ok]
    for m, s in scorers.items():
        sc = [done[it.id][m]["scores"] for it in ok]
        secs = [float(done[it.id][m]["seconds"]) for it in ok]
        pb_gold = [g for g in gold if g is not None]
        pb_scores = [x for g, x in zip(gold, sc) if g is not None]
        t = threshold_for(m, s, policy, pb_gold, pb_scores)
        methods[m] = method_report(ok, sc, secs, t, getattr(s, "label", m))
        methods[m]["f1_best"] = best_on_data(pb_gold, pb_scores)  # this data as validation for another run
        pw = pairwise_accuracy([it.row for it in ok], [it.labels for it in ok], sc)
        if pw is not None:  # rows hold rated alternatives to the same step (see pairwise.py)
            methods[m]["pairwise"] = pw
        per_method[m] = sc
    cap = [float(done[it.id][CAPTURE]["seconds"]) for it in ok if CAPTURE in done[it.id]]
    shared = [m for m, s in scorers.items() if s.needs_internals]
    report: dict[str, Any] = {
        "dataset": dataset,
        "format": fmt,
        "n_chains": len(ok),
        "n_steps": sum(len(it.labels) for it in ok),
        "n_labelled_steps": sum(x is not None for it in ok for x in it.labels),
        "n_wrong_steps": sum(x == 1 for it in ok for x in it.labels),
        "n_chains_with_error": sum(it.gold is not None and it.gold >= 0 for it in ok),
        "n_chains_without_error": sum(it.gold == -1 for it in ok),
        "methods": methods,
        "capture": {
            "seconds_per_chain": sum(cap) / len(cap) if cap else float("nan"),
            "shared_by": shared,
            "note": "one teacher-forced forward pass per chain, read by every method in shared_by; its time is "
            "counted here once and not in those methods' seconds_per_chain",
        },
        "threshold_policy": policy_name(policy),
        **({"thresholds_from": policy.source} if isinstance(policy, ValThresholds) else {}),
        "skipped": skipped,
        **(extra or {}),
    }
    if policy == "best":
        report["notes"] = ["thresholds were chosen to maximize F1 on this data: F1 and accuracies are optimistic"]
    return _num(report), per_method, ok


def _fmt(x: Any, digits: int = 3) -> str:
    return "n/a" if x is None else (f"{x:.{digits}f}" if isinstance(x, float) else str(x))


def markdown_table(report: dict[str, Any]) -> str:
    head = "| method | PR-AUC | ROC-AUC | F1 | error acc | correct acc | ECE | threshold | s/chain |"
    lines = [
        f"{report['dataset']}: {report['n_chains']} chains, {report['n_steps']} steps "
        f"({report['n_wrong_steps']} wrong)",
        "",
        head,
        "|" + "---|" * 9,
    ]
    pairwise = any("pairwise" in r for r in report["methods"].values())
    if pairwise:
        lines[2] += " pairwise [95 % CI] |"
        lines[3] += "---|"
    for m, r in report["methods"].items():
        cells = [r["pr_auc"], r["roc_auc"], r["f1"], r["error_acc"], r["correct_acc"], r["ece"], r["threshold"]]
        lines.append(f"| {m} | " + " | ".join(_fmt(c) for c in cells) + f" | {_fmt(r['seconds_per_chain'], 4)} |")
        if pairwise:
            pw = r.get("pairwise")
            lines[-1] += f" {pw['accuracy']:.3f} [{pw['ci95'][0]:.3f}, {pw['ci95'][1]:.3f}] |" if pw else " |"
    cap = report["capture"]
    if cap["shared_by"]:
        lines.append(f"| (capture, shared) | | | | | | | | {_fmt(cap['seconds_per_chain'], 4)} |")
    lines += ["", describe(report["methods"])]
    if report["skipped"]:
        lines += ["", f"{len(report['skipped'])} rows skipped (listed in the report)."]
    return "\n".join(lines) + "\n"


def figures(items: list[Any], per_method: dict[str, list[list[float]]], bins: int = 10) -> list[Any]:
    """Plotly figures: precision-recall curves and a reliability diagram, one trace per method."""
    import numpy as np
    import plotly.graph_objects as go
    from sklearn.metrics import precision_recall_curve

    from .metrics import _flat

    labels = [it.labels for it in items]
    pr = go.Figure()
    rel = go.Figure()
    rel.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="perfect", line={"dash": "dot", "color": "grey"}))
    for m, scores in per_method.items():
        y, p = _flat(labels, scores)
        if y.size and y.min() != y.max():
            prec, rec, _ = precision_recall_curve(y, p)
            pr.add_trace(go.Scatter(x=rec, y=prec, mode="lines", name=m, line={"shape": "hv"}))
        if y.size:
            idx = np.minimum((p * bins).astype(int), bins - 1)
            xs, ys, ns = [], [], []
            for b in range(bins):
                sel = idx == b
                if sel.any():
                    xs.append(float(p[sel].mean()))
                    ys.append(float(y[sel].mean()))
                    ns.append(int(sel.sum()))
            rel.add_trace(go.Scatter(x=xs, y=ys, mode="lines+markers", name=m, text=[f"{n} steps" for n in ns]))
    y_all, _ = _flat(labels, next(iter(per_method.values()))) if per_method else (np.zeros(0), None)
    if y_all.size:
        pr.add_hline(y=float(y_all.mean()), line_dash="dot", line_color="grey", annotation_text="share of wrong steps")
    pr.update_layout(title="Precision-recall, wrong steps positive", xaxis_title="recall", yaxis_title="precision")
    pr.update_xaxes(range=[0, 1])
    pr.update_yaxes(range=[0, 1.02])
    rel.update_layout(
        title=f"Reliability ({bins} equal-width bins)", xaxis_title="mean p_error", yaxis_title="fraction wrong"
    )
    rel.update_xaxes(range=[0, 1])
    rel.update_yaxes(range=[0, 1])
    return [pr, rel]


def write_html(path: Path, report: dict[str, Any], figs: list[Any]) -> None:
    """One self-contained page: the table and the figures, plotly.js inline (works offline)."""
    import html

    rows = []
    for m, r in report["methods"].items():
        cells = [r["pr_auc"], r["roc_auc"], r["f1"], r["error_acc"], r["correct_acc"], r["ece"], r["threshold"]]
        tds = "".join(f"<td>{_fmt(c)}</td>" for c in cells) + f"<td>{_fmt(r['seconds_per_chain'], 4)}</td>"
        rows.append(f"<tr><td>{html.escape(m)}</td>{tds}</tr>")
    cap = report["capture"]
    if cap["shared_by"]:
        rows.append(f"<tr><td>(capture, shared)</td>{'<td></td>' * 7}<td>{_fmt(cap['seconds_per_chain'], 4)}</td></tr>")
    head = "".join(
        f"<th>{h}</th>"
        for h in ["method", "PR-AUC", "ROC-AUC", "F1", "error acc", "correct acc", "ECE", "threshold", "s/chain"]
    )
    divs = [f.to_html(full_html=False, include_plotlyjs=(i == 0)) for i, f in enumerate(figs)]
    title = html.escape(f"uhead-viz evaluation: {report['dataset']}")
    page = f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font-family:sans-serif;margin:2em}} td,th{{padding:.2em .6em;text-align:right}}
td:first-child{{text-align:left}} table{{border-collapse:collapse}} tr:nth-child(even){{background:#f4f4f4}}</style>
</head><body>
<h1>{title}</h1>
<p>{report["n_chains"]} chains, {report["n_steps"]} steps, {report["n_wrong_steps"]} wrong; thresholds:
{html.escape(report["threshold_policy"])}; {len(report["skipped"])} rows skipped.</p>
<table><tr>{head}</tr>{"".join(rows)}</table>
{"".join(divs)}
</body></html>
"""
    path.write_text(page, encoding="utf-8")


def write_report(out: Path, report: dict[str, Any], items: list[Any], per_method: dict[str, list[list[float]]]) -> None:
    """The report as JSON at ``out`` and, when any chain was scored, its HTML page beside it."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    if items:
        try:
            write_html(out.with_suffix(".html"), report, figures(items, per_method))
        except ImportError as e:  # plotly is optional for headless runs; the JSON report is what counts
            logger.warning("No HTML report (%s); the JSON report is complete.", e)
