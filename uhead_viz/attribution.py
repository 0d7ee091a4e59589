"""Why the head flagged a step: gradient x input of the step's logit, by named feature group.

For step k the head's logit is differentiated with respect to every token feature it read
(tokens up to the step's end); gradient x input gives each feature's first-order share of
the logit. Summed over tokens, the columns fall into named groups following the feature
layout of ``features.py``:

* ``L{l} H{h}``: the look-back attention of layer l, head h (all distances together),
* ``top-k probs``, ``entropy``, ``log-prob``: the probability features,
* ``hidden L{l}``: a hidden state, when the head reads one.

Positive values push the step towards "wrong", negative ones towards "fine". Summed over
features instead, the same matrix says which tokens moved the score.
"""

from __future__ import annotations

from typing import Any

import torch


def grad_x_input(
    head: Any, feats: torch.Tensor, spans: list[tuple[int, int]], k: int, bodies: list[tuple[int, int]] | None = None
) -> tuple[torch.Tensor, float]:
    """``[end_k, F]`` gradient x input of step k's logit (``UHead.step_logit``, as scored), and the logit."""
    end = int(spans[k][1])
    dev = next(head.parameters()).device
    # inference-mode tensors cannot enter autograd; a clone made outside that mode can
    with torch.inference_mode(False), torch.enable_grad():
        x = feats[:end].detach().clone().to(dev).float().requires_grad_(True)
        logit = head.step_logit(x, spans, k, bodies)
        (grad,) = torch.autograd.grad(logit, x)
    return (grad * x).detach().cpu(), float(logit.detach())


def layout(head: Any, llm: Any = None) -> tuple[int, int, int, int, list[int], int]:
    """(layers, heads, window, top_k, hidden layers, hidden size) of the head's feature columns."""
    base = head.base or {}
    n_layers = int(base.get("n_layers") or llm.n_layers)
    n_heads = int(base.get("n_heads") or llm.n_heads)
    hidden = int(base.get("hidden_size") or (llm.model.config.hidden_size if llm is not None else 0))
    spec = head.spec
    return n_layers, n_heads, spec.window, spec.top_k, list(spec.hidden_layers), hidden


def group_totals(per_feature: torch.Tensor, head: Any, llm: Any = None) -> list[tuple[str, str, float]]:
    """(name, kind, value) for every feature group, from per-column totals."""
    n_layers, n_heads, window, top_k, hidden_layers, hidden = layout(head, llm)
    v = per_feature.float()
    n_attn = n_layers * n_heads * window
    out: list[tuple[str, str, float]] = []
    attn = v[:n_attn].view(n_layers, n_heads, window).sum(-1)
    for li in range(n_layers):
        for hi in range(n_heads):
            out.append((f"L{li} H{hi}", "attention", float(attn[li, hi])))
    i = n_attn
    out.append(("top-k probs", "probability", float(v[i : i + top_k].sum())))
    i += top_k
    out.append(("entropy", "probability", float(v[i])))
    out.append(("log-prob", "probability", float(v[i + 1])))
    i += 2
    for li in hidden_layers:
        out.append((f"hidden L{li}", "hidden", float(v[i : i + hidden].sum())))
        i += hidden
    return out


def explain(
    head: Any, feats: torch.Tensor, spans: list[tuple[int, int]], k: int, llm: Any = None, top: int = 15,
    bodies: list[tuple[int, int]] | None = None,
):
    """JSON-able explanation of step k: the groups that moved its logit most, per-layer and per-token totals."""
    gx, logit = grad_x_input(head, feats, spans, k, bodies)
    groups = group_totals(gx.sum(0), head, llm)
    groups.sort(key=lambda g: -abs(g[2]))
    n_layers, n_heads, window, *_ = layout(head, llm)
    per_layer = gx[:, : n_layers * n_heads * window].sum(0).view(n_layers, -1).sum(-1)
    return {
        "logit": round(logit, 5),
        "p": round(float(torch.sigmoid(torch.tensor(logit))), 5),
        "groups": [{"name": n, "kind": kind, "value": round(val, 5)} for n, kind, val in groups[:top]],
        "layers": [round(float(x), 5) for x in per_layer],
        "tokens": [round(float(x), 5) for x in gx.sum(1)],
    }
