"""What an analysis holds: the final pass's per-step, per-token record of one scored chain.

An *analysis* is a plain JSON-able dict, so it can sit in a ``gr.State``, be stored as
a cached example and be returned by the API. This module builds one from a chain the
engine has scored, merges a verifier's scores into it, and bounds the settings a request
may ask for; :class:`uhead_viz.engine.Engine` holds the model and the lock around it.
"""

from __future__ import annotations

import math
from typing import Any

from . import attribution
from .errors import InputError
from .features import token_features
from .internals import restrict
from .public import scrub
from .scorers.combined import combine
from .steps import Chain, body_spans, step_body, token_char_offsets

ANALYSIS_VERSION = 1
MIN_NEW_TOKENS, MAX_NEW_TOKENS = 8, 2048  # what one request may ask the app to write


def _r(x: float, nd: int = 5) -> float:
    x = float(x)
    return round(x, nd) if math.isfinite(x) else 0.0


def build_analysis(
    engine: Any, chain: Chain, kind: str = "generated", settings: dict | None = None, extra: dict | None = None
) -> dict[str, Any]:
    """Score a chain with every method of ``engine`` (an Engine, which holds its lock) and keep what the views need.

    ``engine`` is typed loosely because this module sits below :mod:`uhead_viz.engine`.
    """
    methods = engine.methods()
    a: dict[str, Any] = {
        "version": ANALYSIS_VERSION,
        "kind": kind,
        "question": chain.problem,
        "model": engine.model_info(),
        "head": engine.head_info(),
        "head_note": scrub(engine.hs.note),
        "primary": engine.primary,
        "threshold": _r(engine.threshold),
        "methods": methods,
        "settings": settings or {},
        "answer": chain.answer,
        "stop_reason": chain.meta.get("stop_reason"),
        "verifier": None,
        "row": {
            "problem": chain.problem,
            "steps": list(chain.steps),
            "answer": chain.answer,
            "text": chain.text,
            "ids": list(chain.ids),
            "spans": [list(s) for s in chain.spans],
            "model": engine.llm.name,
        },
        "steps": [],
        "tokens": {"text": [], "prob": [], "entropy": [], "attn_local": []},
        "attention": [],
        "attribution": None,
        **(extra or {}),
    }
    if not chain.spans or not chain.ids:
        a["notes"] = ["The model wrote no steps to score."]
        return a
    scorers = engine.scorers(methods)
    per = {m: s.score([chain])[0] for m, s in scorers.items()}
    x = engine.cache.get(chain)
    tok = engine.llm.tokenizer
    dtext = tok.decode(chain.ids, skip_special_tokens=False)
    offs = token_char_offsets(tok, chain.ids)
    probs = x.token_logprob.float().exp().tolist()
    a["tokens"] = {
        "text": [dtext[s:e] for s, e in offs],
        "prob": [_r(p, 4) for p in probs],
        "entropy": [_r(e, 4) for e in x.entropy.float().tolist()],
        "attn_local": [_r(v, 4) for v in x.attn.sum(-1).mean(dim=(1, 2)).tolist()],
    }
    for k, (s, e) in enumerate(chain.spans):
        a["steps"].append(
            {
                "index": k,
                "text": chain.steps[k],
                "body": step_body(chain.steps[k]),
                "span": [int(s), int(e)],
                "scores": {m: _r(per[m][k]) for m in methods},
            }
        )
        band = x.attn[s:e].mean(0)  # [L, H, w]
        a["attention"].append([[[_r(v, 4) for v in hd] for hd in layer] for layer in band.tolist()])
    if engine.head is not None:
        feats = token_features(restrict(x, engine.head.spec), engine.head.spec)
        bodies = body_spans(tok, chain) if engine.head.config.pool_body else None
        a["attribution"] = [
            attribution.explain(engine.head, feats, chain.spans, k, engine.llm, bodies=bodies)
            for k in range(len(chain.spans))
        ]
    return a

def with_verifier(
    analysis: dict[str, Any], ps: list[float], name: str, label: str, seconds: float
) -> dict[str, Any]:
    """A copy of ``analysis`` with the verifier's score ``ps`` and the combined score on each step."""
    if len(ps) != len(analysis["steps"]):
        raise ValueError(f"the verifier gave {len(ps)} scores for {len(analysis['steps'])} steps")
    out = dict(analysis)
    out["steps"] = [dict(s, scores=dict(s["scores"])) for s in analysis["steps"]]
    prim = analysis["primary"]
    for s, p in zip(out["steps"], ps):
        s["scores"]["verifier"] = _r(p)
        s["scores"]["combined"] = _r(combine(s["scores"][prim], p))
    out["verifier"] = {"name": name, "label": label, "seconds": _r(seconds, 2)}
    return out


def request_settings(max_new_tokens: Any, temperature: Any) -> tuple[int, float, list[str]]:
    """The generation settings a request may use, and a note for each one moved into range.

    Out-of-range values are clamped rather than refused (a slider or a script may overshoot),
    and the notes go into the analysis so the caller sees what was used; values that are
    not numbers at all are refused with InputError.
    """
    try:
        tokens = float(max_new_tokens)
        temp = float(temperature)
    except (TypeError, ValueError) as e:
        raise InputError("max_new_tokens and temperature must be numbers.") from e
    notes: list[str] = []
    used_tokens = int(min(max(tokens, MIN_NEW_TOKENS), MAX_NEW_TOKENS)) if not math.isnan(tokens) else 320
    if used_tokens != tokens:
        notes.append(f"max_new_tokens {max_new_tokens} is not a whole number in {MIN_NEW_TOKENS}-{MAX_NEW_TOKENS}: "
                     f"used {used_tokens}.")
    used_temp = min(max(temp, 0.0), 2.0) if not math.isnan(temp) else 0.0
    if used_temp != temp:
        notes.append(f"temperature {temperature} is not in 0-2: used {used_temp}.")
    return used_tokens, used_temp, notes
