"""HTML for the app: heat-coloured steps and tokens, the legend, notices, comparison tables.

One continuous colour scale runs from confident (blue) through uncertain (pale yellow) to
likely wrong (red), the reversed ColorBrewer RdYlBu ramp: it reads at a glance, keeps its
order for the common red-green colour-blindnesses, and leaves confident steps calm so the
doubtful ones stand out. Every piece of user or model text goes through ``html.escape``.
The stylesheet lives in :mod:`uhead_viz.ui.styles`.
"""

from __future__ import annotations

import html
import math
import re
from typing import Any

from ..methods import method_label
from . import howto
from .styles import CSS, STEP_CLICK_JS  # noqa: F401 (re-exported: the page's CSS and step-click script were here)

# (position, (r, g, b)) stops of the p_error scale
SCALE: list[tuple[float, tuple[int, int, int]]] = [
    (0.0, (44, 123, 182)),
    (0.25, (171, 217, 233)),
    (0.5, (255, 255, 191)),
    (0.75, (253, 174, 97)),
    (1.0, (215, 25, 28)),
]
# a second, single-hue scale for features that are not "wrongness" (attention)
FEATURE_SCALE: list[tuple[float, tuple[int, int, int]]] = [
    (0.0, (247, 244, 249)),
    (0.5, (188, 160, 215)),
    (1.0, (84, 39, 143)),
]


def esc(x: Any) -> str:
    return html.escape("" if x is None else str(x), quote=True)


def _clamp01(p: Any) -> float:
    try:
        p = float(p)
    except (TypeError, ValueError):
        return 0.0
    if not math.isfinite(p):
        return 1.0
    return min(1.0, max(0.0, p))


def heat_rgb(p: float, scale: list[tuple[float, tuple[int, int, int]]] = SCALE) -> tuple[int, int, int]:
    """The colour of ``p`` in [0, 1] on a piecewise-linear scale (continuous, no bins)."""
    p = _clamp01(p)
    for (x0, c0), (x1, c1) in zip(scale, scale[1:]):
        if p <= x1:
            t = 0.0 if x1 == x0 else (p - x0) / (x1 - x0)
            return tuple(round(a + (b - a) * t) for a, b in zip(c0, c1))  # type: ignore[return-value]
    return scale[-1][1]


def heat_hex(p: float, scale: list = SCALE) -> str:
    return "#{:02x}{:02x}{:02x}".format(*heat_rgb(p, scale))


def rgba(p: float, alpha: float, scale: list = SCALE) -> str:
    r, g, b = heat_rgb(p, scale)
    return f"rgba({r},{g},{b},{alpha:.2f})"


def ink(p: float, scale: list = SCALE) -> str:
    """Black or white text, whichever reads better on the solid colour of ``p``."""
    r, g, b = heat_rgb(p, scale)
    lum = 0.2126 * (r / 255) ** 2.2 + 0.7152 * (g / 255) ** 2.2 + 0.0722 * (b / 255) ** 2.2
    return "#111827" if lum > 0.28 else "#ffffff"


def gradient_css(scale: list = SCALE) -> str:
    stops = ", ".join(f"rgb{c} {x * 100:.0f}%" for x, c in scale)
    return f"linear-gradient(90deg, {stops})"


def verdict(p: float, threshold: float = 0.5) -> str:
    p = _clamp01(p)
    if p >= threshold:
        return "likely wrong"
    if p >= threshold / 2:
        return "uncertain"
    return "confident"


def fmt(p: Any) -> str:
    try:
        return f"{float(p):.2f}"
    except (TypeError, ValueError):
        return "n/a"


# ----- legend and notices ----------------------------------------------------------------------
def legend_html(method: str, mode: str = "step", note: str = "", threshold: float | None = None) -> str:
    """The colour key: what the colour means, for which method, and what its ends stand for.

    Only a calibrated method (``howto.is_probability``) is called a probability and gets its
    ``threshold`` marked on the bar; a baseline is called a relative score. Token attention
    is min-max scaled within the chain (``step_tokens``), so its bar runs from the chain's
    lowest to its highest value, not from 0 to 1.
    """
    ticks_at = ("0", "0.25", "0.5", "0.75", "1")
    mark = ""
    if mode == "attn":
        title = "Token colour: look-back attention (mean over layers and heads), scaled within this chain"
        left, right, grad = "the chain's lowest", "the chain's highest", gradient_css(FEATURE_SCALE)
        ticks_at = ("chain min", "", "", "", "chain max")
    elif mode == "prob":
        title = "Token colour: 1 - probability of the token the model wrote"
        left, right, grad = "expected token", "surprising token", gradient_css()
    else:
        calibrated = howto.is_probability(method)
        title = howto.step_title(method_label(method), calibrated)
        left, right = howto.step_ends(calibrated)
        grad = gradient_css()
        if calibrated and threshold is not None:
            t = _clamp01(threshold)
            mark = (
                f'<div class="uv-legend-thr" style="left:{t * 100:.1f}%" title="threshold {fmt(t)}"></div>'
                f'<div class="uv-legend-thr-label" style="left:{t * 100:.1f}%">threshold {fmt(t)} ⚑</div>'
            )
    ticks = "".join(f"<span>{t}</span>" for t in ticks_at)
    extra = f'<div class="uv-legend-note">{esc(note)}</div>' if note else ""
    return (
        f'<div class="uv-legend" role="img" aria-label="{esc(title)}">'
        f'<div class="uv-legend-title">{esc(title)}</div>'
        f'<div class="uv-legend-bar{" uv-has-thr" if mark else ""}" style="background:{grad}">{mark}</div>'
        f'<div class="uv-legend-ticks">{ticks}</div>'
        f'<div class="uv-legend-ends"><span>{esc(left)}</span><span>{esc(right)}</span></div>{extra}</div>'
    )


def key_html(method: str, mode: str = "step", threshold: float | None = None) -> str:
    """The legend with the collapsed "How to read this" panel beside it."""
    panel = howto.howto_html(method, method_label(method), threshold)
    return f'<div class="uv-key">{legend_html(method, mode, threshold=threshold)}{panel}</div>'


def notice_html(msg: str, kind: str = "error") -> str:
    icon = {"error": "⚠", "warn": "⚠", "info": "ℹ", "ok": "✓"}.get(kind, "ℹ")
    return f'<div class="uv-notice uv-{esc(kind)}" role="status"><span class="uv-icon">{icon}</span>{esc(msg)}</div>'


def placeholder_html(msg: str) -> str:
    return f'<div class="uv-empty">{esc(msg)}</div>'


# ----- the chain -------------------------------------------------------------------------------
def _score_rows(scores: dict[str, Any], primary: str) -> list[tuple[str, str, Any]]:
    order = [primary] + [m for m in ("verifier", "combined") if m in scores]
    order += [m for m in scores if m not in order]
    return [(m, method_label(m), scores[m]) for m in order if m in scores]


def _tooltip(scores: dict[str, Any], primary: str, verifier_label: str | None, label: Any = None) -> str:
    rows = []
    for m, name, v in _score_rows(scores, primary):
        if m == "verifier" and verifier_label:
            name = verifier_label
        p = _clamp01(v)
        chip = f'<i style="background:{heat_hex(p)}"></i>'
        cls = ' class="uv-main"' if m == primary else ""
        rows.append(f"<tr{cls}><td>{chip}{esc(name)}</td><td>{fmt(v)}</td></tr>")
    if label is not None:
        rows.append(f"<tr><td>human label</td><td>{'wrong' if label == 1 else 'fine'}</td></tr>")
    return f'<div class="uv-tip" role="tooltip"><table>{"".join(rows)}</table></div>'


def _token_spans(tokens: list[dict[str, Any]], mode: str) -> str:
    out = []
    for t in tokens:
        text = t.get("t", "")
        if not text:
            continue
        if mode == "attn":
            v = _clamp01(t.get("a", 0.0))
            bg = rgba(v, 0.75, FEATURE_SCALE)
            tip = f"local attention {v:.2f}"
        else:
            p = _clamp01(t.get("p", 1.0))
            bg = rgba(1.0 - p, 0.6)
            tip = f"p = {p:.3f}"
        out.append(
            f'<span class="uv-tok" style="background:{bg}" title="{esc(tip)}">{esc(text).replace(chr(10), "⏎")}</span>'
        )
    return "".join(out)


def step_tokens(analysis: dict[str, Any], k: int, body_only: bool = False) -> list[dict[str, Any]]:
    """Token dicts ``{"t", "p", "a"}`` of step k of a final analysis, with the attention feature scaled to [0, 1].

    ``body_only`` leaves out the ``Step k:`` marker's tokens (near certain, and forced for
    the first step), as the baselines do."""
    toks = analysis.get("tokens") or {}
    texts = toks.get("text") or []
    if not texts:
        return []
    a, b = analysis["steps"][k]["span"]
    att = toks.get("attn_local") or [0.0] * len(texts)
    lo, hi = (min(att), max(att)) if att else (0.0, 1.0)
    span = (hi - lo) or 1.0
    out = [{"t": texts[i], "p": toks["prob"][i], "a": (att[i] - lo) / span} for i in range(a, min(b, len(texts)))]
    if body_only:
        marker = _MARKER.match(analysis["steps"][k].get("text", ""))
        n, seen = 0, ""
        while marker and n < len(out) - 1 and len(seen + out[n]["t"]) <= len(marker.group(0)):
            seen += out[n]["t"]
            n += 1
        out = out[n:]
    return out


_MARKER = re.compile(r"^\s*(?:\*\*)?\s*Step\s*\d+\s*(?:\*\*)?\s*[:.)-]", re.IGNORECASE)


def chain_html(
    view: dict[str, Any] | None,
    mode: str = "step",
    selected: int | None = None,
    show_legend: bool = True,
) -> str:
    """The heat view of a chain: a live view (from the stream) or a final analysis."""
    if not view:
        return placeholder_html("Ask a question, pick an example, or open a chain: its steps appear here.")
    primary = view.get("primary", "uhead")
    threshold = float(view.get("threshold") or 0.5)
    vinfo = view.get("verifier") or {}
    vlabel = vinfo.get("label") if isinstance(vinfo, dict) else None
    final = not view.get("live")
    flags = howto.is_probability(primary)  # a baseline has no validated threshold to flag by
    parts = ['<div class="uv-chain">']
    q = view.get("question")
    if q:
        parts.append(f'<div class="uv-question"><span class="uv-q">Question</span>{esc(q)}</div>')
    steps = view.get("steps") or []
    for k, s in enumerate(steps):
        scores = s.get("scores")
        state = s.get("state", "done") if not final else "done"
        body = s.get("body", "")
        classes = ["uv-step", f"uv-{state}"]
        style = ""
        badge = ""
        tip = ""
        if scores and primary in scores:
            p = _clamp01(scores[primary])
            style = f' style="--uv-bg:{rgba(p, 0.24)};--uv-edge:{heat_hex(p)}"'
            badge = (
                f'<span class="uv-badge" style="background:{heat_hex(p)};color:{ink(p)}" '
                f'title="{esc(howto.score_noun(primary, method_label(primary)))}">{fmt(p)}</span>'
            )
            tip = _tooltip(scores, primary, vlabel, s.get("label"))
            if flags and p >= threshold:
                classes.append("uv-flag")
        elif state == "scoring" or (state == "done" and not scores):
            badge = '<span class="uv-badge uv-wait">scoring…</span>'
        if selected is not None and k == selected:
            classes.append("uv-selected")
        if mode in ("prob", "attn") and (s.get("tokens") or (final and view.get("tokens"))):
            toks = s.get("tokens") if s.get("tokens") else step_tokens(view, k)
            if mode == "attn" and s.get("tokens") and toks and "a" not in toks[0]:
                content = esc(body)
            else:
                content = _token_spans(toks, mode)
        else:
            content = esc(body).replace("\n", "<br>")
        caret = '<span class="uv-caret"></span>' if state == "writing" else ""
        p_attr = f' data-p="{fmt(scores[primary])}"' if scores and primary in scores else ""
        parts.append(
            f'<div class="{" ".join(classes)}" data-step="{k}"{p_attr}{style} tabindex="0">'
            f'<span class="uv-num">Step {k + 1}</span><span class="uv-body">{content}{caret}</span>{badge}{tip}</div>'
        )
    if view.get("answer") is not None:
        parts.append(f'<div class="uv-answer"><span>Answer</span>{esc(view.get("answer"))}</div>')
    if view.get("finalising"):
        parts.append(
            '<div class="uv-progress">Finalising: one teacher-forced pass scores the whole chain the way the '
            "CLI does…</div>"
        )
    for note in view.get("notes") or []:
        parts.append(notice_html(note, "info"))
    parts.append("</div>")
    if show_legend and (steps or final):
        parts.append(key_html(primary, mode, threshold))
    return "".join(parts)


def step_detail_html(analysis: dict[str, Any] | None, k: int | None) -> str:
    """The card under the chain for the selected step: every score, and what drove it."""
    if not analysis or k is None or not analysis.get("steps") or not 0 <= k < len(analysis["steps"]):
        return placeholder_html("Click a step to see all of its scores here and its plots in the “Why” tab.")
    s = analysis["steps"][k]
    primary = analysis.get("primary", "uhead")
    scores = s.get("scores") or {}
    p = _clamp01(scores.get(primary, 0.0))
    thr = float(analysis.get("threshold") or 0.5)
    vinfo = analysis.get("verifier") or {}
    chips = []
    for m, name, v in _score_rows(scores, primary):
        if m == "verifier" and vinfo.get("label"):
            name = vinfo["label"]
        q = _clamp01(v)
        chips.append(
            f'<span class="uv-chip" style="background:{heat_hex(q)};color:{ink(q)}">{esc(name)} <b>{fmt(v)}</b></span>'
        )
    why = ""
    att = analysis.get("attribution")
    if att and k < len(att) and att[k]:
        top = att[k]["groups"][:3]
        names = ", ".join(f"{esc(g['name'])} ({'+' if g['value'] >= 0 else '−'}{abs(g['value']):.2f})" for g in top)
        why = f"<p>Features that moved the head most: {names}.</p>"
    else:
        toks = step_tokens(analysis, k, body_only=True)
        if toks:
            worst = min(toks, key=lambda t: t["p"])
            why = (
                f"<p>Least expected token in this step: <code>{esc(worst['t'].strip() or worst['t'])}</code> "
                f"(p = {float(worst['p']):.3f}).</p>"
            )
    label = s.get("label")
    lab = "" if label is None else f"<p>Human label: <b>{'wrong' if label == 1 else 'fine'}</b>.</p>"
    if howto.is_probability(primary):
        call = f"<b>{esc(verdict(p, thr))}</b> by {esc(method_label(primary))}"
    else:  # a baseline's number only ranks steps: say where this one stands in its chain
        others = [_clamp01((t.get("scores") or {}).get(primary, 0.0)) for t in analysis["steps"]]
        rank = 1 + sum(1 for q in others if q > p)
        call = (f"<b>rank {rank} of {len(others)}</b> by {esc(method_label(primary))} "
                "(1 = least certain step of the chain)")
    return (
        f'<div class="uv-detail"><div class="uv-detail-head">Step {k + 1}: {call}</div>'
        f'<div class="uv-detail-text">{esc(s.get("body", ""))}</div>'
        f'<div class="uv-chips">{"".join(chips)}</div>{why}{lab}</div>'
    )


def status_html(status: dict[str, Any] | None, loading: str | None = None, error: str | None = None) -> str:
    """The model and head line at the top of the page."""
    if error:
        return notice_html(f"The model could not be loaded: {error}", "error")
    if status is None:
        return (
            f'<div class="uv-status"><span class="uv-pill uv-pill-wait">Loading {esc(loading or "the model")}…'
            "</span><span>The page works meanwhile; the first request waits for it.</span></div>"
        )
    m = status["model"]
    parts = [
        f'<span class="uv-pill">Model: <b>{esc(m["name"])}</b></span>',
        f'<span class="uv-pill">{esc(m.get("precision") or "")}</span>',
    ]
    head = status.get("head")
    if head:
        where = "/".join(str(head.get("path") or "in memory").replace("\\", "/").split("/")[-2:])
        parts.append(
            f'<span class="uv-pill uv-pill-ok" title="{esc(head.get("path"))}">UHead: <b>{esc(where)}</b> '
            f'({esc(head["mode"])} mode, threshold {fmt(head.get("threshold"))})</span>'
        )
    else:
        parts.append(f'<span class="uv-pill">Colour: <b>{esc(method_label(status["primary"]))}</b></span>')
    out = f'<div class="uv-status">{"".join(parts)}</div>'
    if not head:
        out += notice_html(
            "No trained uncertainty head was found for this model "
            f"({status.get('head_note') or 'none in checkpoints/'}). Steps are coloured by an unsupervised "
            f"baseline, {method_label(status['primary'])}, instead; a head put in checkpoints/ is picked up "
            "automatically on the next request.",
            "warn",
        )
    return out


def compare_html(analysis: dict[str, Any] | None) -> str:
    """Step-by-step table of the head (or baseline) against the verifier, disagreements marked."""
    if not analysis or not analysis.get("steps"):
        return placeholder_html("Analyse a chain first; its steps are compared here.")
    primary = analysis.get("primary", "uhead")
    vinfo = analysis.get("verifier")
    thr = float(analysis.get("threshold") or 0.5)
    has_v = bool(vinfo)
    head = (
        f"<th>Step</th><th>{esc(method_label(primary))}</th>"
        + (f"<th>{esc(vinfo['label'])}</th><th>Combined</th><th></th>" if has_v else "")
    )
    rows = []
    n_dis = 0
    for k, s in enumerate(analysis["steps"]):
        sc = s["scores"]
        p = _clamp01(sc.get(primary, 0.0))
        cells = [f'<td class="uv-stepcell"><b>{k + 1}</b> {esc(_short(s.get("body", ""), 90))}</td>', _chip_td(p)]
        cls = ""
        if has_v and "verifier" in sc:
            v = _clamp01(sc["verifier"])
            c = _clamp01(sc.get("combined", 0.0))
            disagree = (p >= thr) != (v >= 0.5)
            n_dis += disagree
            flag = (
                '<td class="uv-flagcell">disagree: '
                + (f"{esc(method_label(primary))} flags it" if p >= thr else "verifier flags it")
                + "</td>"
                if disagree
                else '<td class="uv-agree">agree</td>'
            )
            cells += [_chip_td(v), _chip_td(c), flag]
            cls = ' class="uv-disagree"' if disagree else ""
        rows.append(f"<tr{cls}>{''.join(cells)}</tr>")
    summary = (
        f'<p class="uv-summary">{n_dis} of {len(analysis["steps"])} steps disagree (head threshold {thr:.2f}, '
        f"verifier 0.5). Combined = 1 − (1 − head)(1 − verifier): a step passes only if both find it fine.</p>"
        if has_v
        else '<p class="uv-summary">No verifier scores yet: run one with the button above.</p>'
    )
    table = f'<table><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'
    return f'<div class="uv-compare">{summary}{table}</div>'


def _chip_td(p: float) -> str:
    return f'<td><span class="uv-chip" style="background:{heat_hex(p)};color:{ink(p)}">{fmt(p)}</span></td>'


def _short(text: str, n: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 1] + "…"


def report_html(report: dict[str, Any] | None) -> str:
    """The evaluation report of a labelled upload as a small table."""
    if not report:
        return ""
    rows = []
    for m, r in report["methods"].items():
        cells = "".join(f"<td>{_num(r.get(key))}</td>" for key in ("pr_auc", "roc_auc", "ece", "f1", "threshold"))
        rows.append(f"<tr><td>{esc(method_label(m))}</td>{cells}</tr>")
    return (
        f'<div class="uv-report"><p>Evaluated on {report["n_chains"]} labelled chains, {report["n_steps"]} labelled '
        f"steps ({report['n_wrong']} wrong). F1 is ProcessBench's, at the method's threshold.</p>"
        "<table><thead><tr><th>method</th><th>PR-AUC</th><th>ROC-AUC</th><th>ECE</th><th>F1</th>"
        f"<th>threshold</th></tr></thead><tbody>{''.join(rows)}</tbody></table></div>"
    )


def _num(x: Any) -> str:
    try:
        x = float(x)
    except (TypeError, ValueError):
        return "–"
    return "–" if not math.isfinite(x) else f"{x:.3f}"
