"""Plotly figures behind a step's score: per-step scores, token probabilities, attention, attribution.

Every function takes an *analysis* (the dict ``engine.Engine.analyze_chain`` returns) and a
selected step, and returns a ``go.Figure``; none of them touches the model.
"""

from __future__ import annotations

import math
from typing import Any

import plotly.graph_objects as go

from ..methods import method_label
from .howto import is_probability
from .render import heat_hex, step_tokens

FONT = "Inter, Segoe UI, system-ui, -apple-system, Helvetica Neue, Arial, sans-serif"
INK = "#1f2937"
MUTED = "#6b7280"
SERIES = {"primary": "#3b4b64", "verifier": "#2c9c8f", "combined": "#e07b00"}


def _layout(fig: go.Figure, title: str, height: int = 330, **kw: Any) -> go.Figure:
    fig.update_layout(
        template="plotly_white",
        title={"text": title, "x": 0.01, "xanchor": "left", "font": {"size": 15, "color": INK}},
        font={"family": FONT, "size": 12, "color": INK},
        height=height,
        margin={"l": 56, "r": 24, "t": 56, "b": 44},
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.0, "xanchor": "right", "x": 1.0},
        hoverlabel={"font": {"family": FONT}},
        **kw,
    )
    return fig


def empty_fig(message: str, title: str = "") -> go.Figure:
    fig = go.Figure()
    fig.add_annotation(text=message, showarrow=False, font={"size": 14, "color": MUTED}, x=0.5, y=0.5,
                       xref="paper", yref="paper")
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return _layout(fig, title, height=260)


def _steps(a: dict[str, Any] | None) -> list[dict[str, Any]]:
    return list((a or {}).get("steps") or [])


def _short(text: str, n: int = 70) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 1] + "…"


def _score_axis(primary: str) -> str:
    """The score axis' title: a probability only for a calibrated method."""
    return "P(step is wrong)" if is_probability(primary) else "score (higher = less certain)"


def step_scores_fig(a: dict[str, Any] | None, selected: int | None = None) -> go.Figure:
    """Per-step bars: the head (or the baseline in its place), the verifier and the combined score."""
    steps = _steps(a)
    if not steps:
        return empty_fig("No steps to plot yet.", "Step scores")
    primary = a["primary"]
    xs = [f"Step {k + 1}" for k in range(len(steps))]
    hover = [_short(s.get("body", "")) for s in steps]
    fig = go.Figure()
    series = [("primary", primary, method_label(primary))]
    if any("verifier" in s["scores"] for s in steps):
        vlabel = (a.get("verifier") or {}).get("label") or "Verifier"
        series += [("verifier", "verifier", vlabel), ("combined", "combined", "Combined")]
    for role, key, label in series:
        ys = [s["scores"].get(key) for s in steps]
        fig.add_bar(
            x=xs, y=ys, name=label, marker_color=SERIES[role], customdata=hover,
            hovertemplate="%{x}: %{y:.3f}<br>%{customdata}<extra>" + label + "</extra>",
        )
    if is_probability(primary):  # a baseline has no validated threshold to draw
        thr = float(a.get("threshold") or 0.5)
        fig.add_hline(y=thr, line_dash="dot", line_color="#d7191c", annotation_text=f"threshold {thr:.2f}",
                      annotation_position="top left", annotation_font_color="#d7191c")
    if selected is not None and 0 <= selected < len(steps):
        fig.add_vrect(x0=selected - 0.5, x1=selected + 0.5, fillcolor="#fdae61", opacity=0.18, line_width=0,
                      layer="below")
    fig.update_yaxes(range=[0, 1.05], title=_score_axis(primary))
    return _layout(fig, "Step scores", barmode="group", bargap=0.25)


def token_trace_fig(a: dict[str, Any] | None, selected: int | None = None) -> go.Figure:
    """Token probability and entropy along the chain, step boundaries marked, the selected step shaded."""
    toks = (a or {}).get("tokens") or {}
    texts = toks.get("text") or []
    if not texts:
        return empty_fig("Token data appears once the chain is scored.", "Token probability and entropy")
    xs = list(range(len(texts)))
    shown = [t.replace("\n", "⏎") for t in texts]
    fig = go.Figure()
    fig.add_scatter(
        x=xs, y=toks["prob"], name="token probability", mode="lines+markers", line={"color": "#2c7bb6", "width": 2},
        marker={"size": 4}, customdata=shown, hovertemplate="token %{x} “%{customdata}”<br>p = %{y:.3f}<extra></extra>",
    )
    fig.add_scatter(
        x=xs, y=toks["entropy"], name="entropy (nats)", mode="lines", yaxis="y2",
        line={"color": "#e07b00", "width": 1.5, "dash": "dot"}, customdata=shown,
        hovertemplate="token %{x} “%{customdata}”<br>entropy = %{y:.2f}<extra></extra>",
    )
    for k, s in enumerate(_steps(a)):
        s0, s1 = s["span"]
        if k == selected:
            fig.add_vrect(x0=s0 - 0.5, x1=s1 - 0.5, fillcolor="#fdae61", opacity=0.2, line_width=0, layer="below")
        fig.add_vline(x=s0 - 0.5, line_color="#9ca3af", line_width=1, line_dash="dash")
        fig.add_annotation(x=(s0 + s1 - 1) / 2, y=1.02, yref="paper", text=f"S{k + 1}", showarrow=False,
                           font={"size": 11, "color": MUTED})
    fig.update_yaxes(range=[0, 1.02], title="probability")
    emax = max([float(e) for e in toks["entropy"]] + [1.0])
    fig.update_layout(yaxis2={"overlaying": "y", "side": "right", "range": [0, emax * 1.05], "title": "entropy",
                              "showgrid": False})
    fig.update_xaxes(title="token")
    return _layout(fig, "Token probability and entropy along the chain", height=340)


def attention_fig(a: dict[str, Any] | None, k: int | None, distance: str = "all", relative: bool = False) -> go.Figure:
    """Layer x head heatmap of the step's look-back attention (mean over the step's tokens).

    ``distance`` "all" sums the look-back window, "1".."w" picks one distance (1 = the
    previous token). ``relative`` subtracts the chain's mean over steps, so what is special
    about this step shows.
    """
    title = "Look-back attention, layer × head"
    att = (a or {}).get("attention") or []
    if not att or k is None or not 0 <= k < len(att):
        return empty_fig("Select a scored step.", title)

    def grid(step: list) -> list[list[float]]:
        if distance == "all":
            return [[sum(h) for h in layer] for layer in step]
        j = max(0, min(int(distance) - 1, len(step[0][0]) - 1))
        return [[h[j] for h in layer] for layer in step]

    z = grid(att[k])
    if relative and len(att) > 1:
        grids = [grid(s) for s in att]
        n = len(grids)
        z = [[z[li][hi] - sum(g[li][hi] for g in grids) / n for hi in range(len(z[0]))] for li in range(len(z))]
        m = max(1e-9, max(abs(v) for row in z for v in row))
        scale, zmin, zmax, ctitle = "RdBu_r", -m, m, "vs chain mean"
    else:
        scale, zmin, zmax, ctitle = "Purples", 0.0, max(1e-9, max(v for row in z for v in row)), "attention"
    fig = go.Figure(
        go.Heatmap(
            z=z, x=[f"H{h}" for h in range(len(z[0]))], y=[f"L{li}" for li in range(len(z))],
            colorscale=scale, zmin=zmin, zmax=zmax, colorbar={"title": {"text": ctitle}, "thickness": 12},
            hovertemplate="layer %{y}, head %{x}<br>%{z:.3f}<extra></extra>",
        )
    )
    which = "previous tokens in the window" if distance == "all" else f"the token {distance} back"
    fig.update_yaxes(autorange="reversed", title="layer")
    fig.update_xaxes(title="head")
    return _layout(fig, f"Look-back attention of step {k + 1}<br><sup>weight on {which}</sup>",
                   height=max(360, 14 * len(z) + 120))


def attribution_fig(a: dict[str, Any] | None, k: int | None, top: int = 12) -> go.Figure:
    """What moved step k's score: the head's gradient x input by feature group, or (no head) its tokens' surprise."""
    steps = _steps(a)
    if not steps or k is None or not 0 <= k < len(steps):
        return empty_fig("Select a scored step.", "What drove the score")
    att = a.get("attribution")
    if att and k < len(att) and att[k]:
        groups = list(att[k]["groups"])[:top][::-1]
        vals = [g["value"] for g in groups]
        colors = [heat_hex(0.9) if v >= 0 else heat_hex(0.05) for v in vals]
        fig = go.Figure(
            go.Bar(
                x=vals, y=[f"{g['name']} ({g['kind']})" for g in groups], orientation="h", marker_color=colors,
                hovertemplate="%{y}<br>gradient × input %{x:.3f}<extra></extra>",
            )
        )
        fig.add_vline(x=0, line_color="#9ca3af")
        fig.update_xaxes(title="contribution to the head's logit (+ towards wrong)")
        return _layout(fig, f"What moved step {k + 1}'s score<br><sup>gradient × input of the head's logit</sup>",
                       height=max(320, 26 * len(groups) + 110))
    toks = step_tokens(a, k, body_only=True)
    if not toks:
        return empty_fig("No token data for this chain.", "What drove the score")
    items = [(t["t"], float(t["p"])) for t in toks if t["t"].strip()]
    items.sort(key=lambda t: t[1])
    surprising = [t for t in items if t[1] < 0.995]  # tokens the model was sure of explain nothing
    items = (surprising or items[:3])[:top][::-1]
    surprise = [-math.log(max(p, 1e-9)) for _, p in items]
    fig = go.Figure(
        go.Bar(
            x=surprise, y=[f"“{t.strip()}” (p={p:.2f})" for t, p in items], orientation="h",
            marker_color=[heat_hex(1 - p) for _, p in items],
            hovertemplate="%{y}<br>surprise −log p = %{x:.2f}<extra></extra>",
        )
    )
    fig.update_xaxes(title="surprise, −log p (nats)")
    name = method_label(a["primary"])
    return _layout(fig, f"Least expected tokens of step {k + 1}<br><sup>they set {name}; no trained head yet</sup>",
                   height=max(300, 26 * len(items) + 110))


def compare_fig(a: dict[str, Any] | None) -> go.Figure:
    """Head (or baseline) against the verifier per step, joined by a line; disagreements ringed in red."""
    steps = _steps(a)
    if not steps:
        return empty_fig("No steps yet.", "Head vs verifier")
    primary = a["primary"]
    thr = float(a.get("threshold") or 0.5)
    xs = [k + 1 for k in range(len(steps))]
    p = [s["scores"].get(primary) for s in steps]
    fig = go.Figure()
    has_v = any("verifier" in s["scores"] for s in steps)
    if has_v:
        v = [s["scores"].get("verifier") for s in steps]
        c = [s["scores"].get("combined") for s in steps]
        for x, a0, b0 in zip(xs, p, v):
            fig.add_shape(type="line", x0=x, x1=x, y0=a0, y1=b0, line={"color": "#cbd5e1", "width": 3})
        dis = [(pp >= thr) != (vv >= 0.5) for pp, vv in zip(p, v)]
        vlabel = (a.get("verifier") or {}).get("label") or "Verifier"
        fig.add_scatter(x=xs, y=v, mode="markers", name=vlabel, marker={"size": 12, "color": SERIES["verifier"]})
        fig.add_scatter(x=xs, y=c, mode="markers", name="Combined",
                        marker={"size": 10, "symbol": "diamond", "color": SERIES["combined"]})
        fig.add_scatter(
            x=[x for x, d in zip(xs, dis) if d], y=[pp for pp, d in zip(p, dis) if d], mode="markers",
            name="disagreement",
            marker={"size": 22, "color": "rgba(0,0,0,0)", "line": {"color": "#d7191c", "width": 2}},
        )
    fig.add_scatter(x=xs, y=p, mode="markers", name=method_label(primary),
                    marker={"size": 12, "color": SERIES["primary"]})
    fig.add_hline(y=thr, line_dash="dot", line_color="#d7191c")
    fig.update_yaxes(range=[-0.03, 1.05], title=_score_axis(primary))
    fig.update_xaxes(title="step", tickmode="linear", dtick=1)
    title = f"{method_label(primary)} vs verifier, step by step" if has_v else f"{method_label(primary)} per step"
    return _layout(fig, title)
