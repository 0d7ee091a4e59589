"""HTML rendering and plotly figures, on hand-made analyses (no model)."""

from __future__ import annotations

import math

import plotly.graph_objects as go
import pytest

from uhead_viz.ui import plots, render


def analysis(n_steps=3, verifier=False, head=False, evil=False):
    bodies = [f"{k} + {k} = {2 * k}" for k in range(1, n_steps + 1)]
    if evil:
        bodies[0] = '<script>alert("x")</script> & <img src=x onerror=alert(1)>'
    texts, probs, spans, steps, att = [], [], [], [], []
    for k, b in enumerate(bodies):
        toks = [f"Step {k + 1}:", f" {b}", "\n"]
        s0 = len(texts)
        texts += toks
        probs += [0.99, 0.2 + 0.3 * k, 0.9]
        spans.append([s0, len(texts)])
        p = [0.1, 0.55, 0.9][k % 3]
        sc = {"uhead" if head else "minprob": p, "maxprob": p / 2}
        if verifier:
            v = [0.8, 0.5, 0.1][k % 3]
            sc["verifier"] = v
            sc["combined"] = 1 - (1 - p) * (1 - v)
        steps.append({"index": k, "text": f"Step {k + 1}: {b}", "body": b, "span": spans[-1], "scores": sc})
        att.append([[[0.1 * (li + 1), 0.05, 0.0] for hi in range(4)] for li in range(2)])
    a = {
        "question": "What is <b>1</b> + 1?",
        "primary": "uhead" if head else "minprob",
        "threshold": 0.5,
        "steps": steps,
        "answer": "2 <i>",
        "tokens": {"text": texts, "prob": probs, "entropy": [1 - p for p in probs], "attn_local": [0.3] * len(texts)},
        "attention": att,
        "attribution": None,
        "verifier": {"name": "judge", "label": "LLM judge (self)", "seconds": 1.0} if verifier else None,
    }
    if head:
        a["attribution"] = [
            {
                "logit": 0.1,
                "p": 0.5,
                "groups": [
                    {"name": "L1 H2", "kind": "attention", "value": 0.4},
                    {"name": "entropy", "kind": "probability", "value": -0.2},
                ],
                "layers": [0.1, 0.2],
                "tokens": [0.0] * sp[1],
            }
            for sp in spans
        ]
    return a


def test_scale_endpoints_and_stops():
    assert render.heat_rgb(0.0) == (44, 123, 182)
    assert render.heat_rgb(1.0) == (215, 25, 28)
    assert render.heat_rgb(0.5) == (255, 255, 191)
    assert render.heat_hex(0.25) == "#abd9e9"


def test_scale_is_continuous():
    prev = render.heat_rgb(0.0)
    for i in range(1, 1001):
        c = render.heat_rgb(i / 1000)
        assert max(abs(a - b) for a, b in zip(c, prev)) <= 2
        prev = c


@pytest.mark.parametrize("bad,expected", [(float("nan"), 1.0), (None, 0.0), (-3, 0.0), (7, 1.0), ("x", 0.0)])
def test_scale_clamps_bad_values(bad, expected):
    assert render.heat_rgb(bad) == render.heat_rgb(expected)


def test_text_on_solid_colour_reads():
    assert render.ink(1.0) == "#ffffff"
    assert render.ink(0.0) == "#ffffff"
    assert render.ink(0.5) == "#111827"


def test_chain_escapes_all_user_and_model_text():
    html = render.chain_html(analysis(evil=True))
    assert "<script>" not in html and "<img" not in html and "<b>1</b>" not in html and "<i>" not in html
    assert "&lt;script&gt;" in html and "&lt;b&gt;1&lt;/b&gt;" in html
    assert render.step_detail_html(analysis(evil=True), 0).count("<script>") == 0
    assert "<script>" not in render.compare_html(analysis(evil=True, verifier=True))


def test_chain_colours_each_step_and_flags_likely_wrong():
    a = analysis(head=True)
    a["threshold"] = 0.6277
    html = render.chain_html(a, selected=1)
    assert html.count('class="uv-step') == 3
    assert html.count("uv-flag") == 1  # only 0.9 passes the head's threshold
    assert 'data-step="1"' in html and "uv-selected" in html
    assert render.heat_hex(0.9) in html
    legend = html[html.index('class="uv-legend"'):]
    assert "probability that the step is wrong, by UHead" in legend and "likely wrong" in legend
    # the head's threshold is marked on the bar, where it lies on the 0-1 scale
    assert 'class="uv-legend-thr" style="left:62.8%"' in legend and "threshold 0.63" in legend
    assert 'role="tooltip"' in html
    assert "How to read this" in legend and "threshold, 0.63" in legend


def test_baseline_legend_says_relative_score_not_probability():
    html = render.chain_html(analysis(), selected=1)
    legend = html[html.index('class="uv-legend"'):]
    assert "relative score by Min token prob" in legend and "not a calibrated probability" in legend
    assert "probability that the step is wrong" not in legend
    assert "uv-legend-thr" not in legend and "uv-flag" not in html  # no validated threshold to mark or flag by
    assert "ranks steps" in legend and "How to read this" in legend
    assert "P(wrong)" not in html.split('class="uv-tip"')[0]  # the badge's title calls it a relative score
    detail = render.step_detail_html(analysis(), 2)
    assert "rank 1 of 3" in detail and "likely wrong" not in detail


def test_attention_legend_says_it_is_scaled_within_the_chain():
    legend = render.legend_html("minprob", mode="attn")
    assert "scaled within this chain" in legend and "chain min" in legend and "chain max" in legend
    assert "<span>0.5</span>" not in legend


def test_live_view_states():
    view = {
        "live": True,
        "primary": "uhead",
        "steps": [
            {"index": 0, "body": "a = 1", "scores": {"uhead": 0.2}, "state": "done"},
            {"index": 1, "body": "b = 2", "scores": None, "state": "scoring"},
            {"index": 2, "body": "c =", "scores": None, "state": "writing"},
        ],
    }
    html = render.chain_html(view)
    assert "uv-done" in html and "scoring…" in html and "uv-caret" in html and "uv-writing" in html
    assert html.count('class="uv-badge"') == 1


def test_token_modes():
    a = analysis()
    prob = render.chain_html(a, mode="prob")
    assert prob.count('class="uv-tok"') == 9 and "p = 0.200" in prob
    assert "surprising token" in prob
    attn = render.chain_html(a, mode="attn")
    assert "local attention" in attn and "look-back attention" in attn


def test_detail_compare_status_and_report():
    a = analysis(verifier=True, head=True)
    d = render.step_detail_html(a, 2)
    assert "Step 3" in d and "LLM judge (self)" in d and "L1 H2" in d
    assert "Click a step" in render.step_detail_html(a, None)
    c = render.compare_html(a)
    assert c.count("uv-disagree") == 2  # steps 1 and 3 are on opposite sides
    assert "2 of 3 steps disagree" in c
    assert "No verifier scores yet" in render.compare_html(analysis())
    s = render.status_html({"model": {"name": "M", "precision": "int8"}, "head": None, "primary": "minprob",
                            "head_note": "no head checkpoint in checkpoints"})
    assert "No trained uncertainty head" in s and "Min token prob" in s
    assert "Loading" in render.status_html(None, loading="M")
    rep = render.report_html({"n_chains": 2, "n_steps": 5, "n_wrong": 1,
                              "methods": {"minprob": {"pr_auc": 0.5, "roc_auc": float("nan"), "ece": 0.1, "f1": 0.4,
                                                      "threshold": 0.3}}})
    assert "PR-AUC" in rep and "0.500" in rep and "–" in rep


def test_empty_states():
    assert "Ask a question" in render.chain_html(None)
    for fig in (plots.step_scores_fig(None), plots.token_trace_fig(None), plots.attention_fig(None, 0),
                plots.attribution_fig(None, 0), plots.compare_fig(None)):
        assert isinstance(fig, go.Figure) and len(fig.data) == 0 and fig.layout.annotations


def test_figures():
    a = analysis(verifier=True)
    f = plots.step_scores_fig(a, 1)
    assert [t.name for t in f.data] == ["Min token prob", "LLM judge (self)", "Combined"]
    assert list(f.data[0].y) == [0.1, 0.55, 0.9]
    t = plots.token_trace_fig(a, 0)
    assert len(t.data) == 2 and len(t.data[0].x) == 9
    assert sum(1 for s in t.layout.shapes if s.type == "line") == 3  # one boundary per step
    h = plots.attention_fig(a, 0)
    assert h.data[0].type == "heatmap" and len(h.data[0].z) == 2 and len(h.data[0].z[0]) == 4
    assert h.data[0].z[1][0] == pytest.approx(0.25)
    h1 = plots.attention_fig(a, 0, distance="2")
    assert h1.data[0].z[0][0] == pytest.approx(0.05)
    rel = plots.attention_fig(a, 0, relative=True)
    assert all(math.isclose(v, 0.0, abs_tol=1e-12) for row in rel.data[0].z for v in row)  # all steps alike
    drivers = plots.attribution_fig(a, 1)
    assert drivers.data[0].orientation == "h" and "no trained head" in drivers.layout.title.text
    with_head = plots.attribution_fig(analysis(head=True), 0)
    assert list(with_head.data[0].x) == [-0.2, 0.4]
    cmp = plots.compare_fig(a)
    names = [t.name for t in cmp.data]
    assert "disagreement" in names and len(cmp.data[names.index("disagreement")].x) == 2


def test_step_tokens_can_leave_out_the_step_marker():
    a = analysis()
    assert [t["t"] for t in render.step_tokens(a, 0)] == ["Step 1:", " 1 + 1 = 2", "\n"]
    assert [t["t"] for t in render.step_tokens(a, 0, body_only=True)] == [" 1 + 1 = 2", "\n"]
