"""The app's example questions, computed ahead of time and stored as JSON under ``assets/examples/``.

Generating a chain on a CPU takes tens of seconds, so the examples' results are built once
with the real model (``make examples``, i.e. ``benchmarks/build_examples.py``) and shown at
once when an example is clicked. A stored result is used only for the model that wrote it
(same weights fingerprint and generation settings). If only the head changed since, the
stored chain is re-scored (one teacher-forced pass, seconds) instead of regenerated; for
any other model the app falls back to generating live.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from .. import settings
from ..public import shown_path
from ..scorers.combined import combine

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2] / "assets" / "examples"
DEFAULT_SETTINGS = {"max_new_tokens": 320, "temperature": 0.0, "seed": 0}

EXAMPLES: list[dict[str, str]] = [
    {
        "id": "gsm8k-natalia",
        "style": "GSM8K",
        "question": "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
        "How many clips did Natalia sell altogether in April and May?",
    },
    {
        "id": "gsm8k-bakery",
        "style": "GSM8K",
        "question": "A bakery sells muffins for $3 each and cookies for $1.50 each. On Monday it sold 24 muffins "
        "and twice as many cookies. How much money did the bakery make on Monday?",
    },
    {  # the default model slips in the last addition (605 for 595): an example of a step marked wrong
        "id": "gsm8k-treasure",
        "style": "GSM8K",
        "question": "A treasure hunter found a buried treasure chest filled with gems. There were 175 diamonds, "
        "35 fewer rubies than diamonds, and twice the number of emeralds than the rubies. How many of the gems were "
        "there in the chest?",
    },
    {
        "id": "math-divisors",
        "style": "MATH",
        "question": "What is the sum of all positive divisors of 36?",
    },
    {
        "id": "math-linear",
        "style": "MATH",
        "question": "If 3x + 7 = 25, what is the value of x^2 - 2x?",
    },
]


def questions() -> list[str]:
    return [e["question"] for e in EXAMPLES]


def example_for(question: str) -> dict[str, str] | None:
    q = " ".join(str(question or "").split())
    return next((e for e in EXAMPLES if " ".join(e["question"].split()) == q), None)


def path_for(ex_id: str, root: str | Path | None = None) -> Path:
    return Path(root or settings.examples_dir() or ROOT) / f"{ex_id}.json"


def build(engine: Any, root: str | Path | None = None, verifier: str | None = None, log=print) -> list[Path]:
    """Run every example through the app's own pipeline and store its final analysis."""
    out = []
    for ex in EXAMPLES:
        t0 = time.perf_counter()
        a = engine.run(ex["question"], verifier=verifier, **DEFAULT_SETTINGS)
        a["example"] = {"id": ex["id"], "style": ex["style"], "built_s": round(time.perf_counter() - t0, 1)}
        p = path_for(ex["id"], root)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(a, ensure_ascii=False, separators=(",", ":")) + "\n", encoding="utf-8")
        os.replace(tmp, p)
        log(f"{ex['id']}: {len(a['steps'])} steps, answer {a.get('answer')!r}, {a['example']['built_s']} s -> {p}")
        out.append(p)
    return out


def load(engine: Any, question: str, root: str | Path | None = None) -> tuple[dict[str, Any] | None, str]:
    """The stored result for an example question if it fits the loaded model, else (None, why not)."""
    ex = example_for(question)
    if ex is None:
        return None, "not an example question"
    p = path_for(ex["id"], root)
    if not p.is_file():
        return None, f"no stored result ({p.name}); run `make examples` to build them"
    try:
        a = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        return None, f"the stored result {p.name} is unreadable ({e.__class__.__name__})"
    if isinstance(a.get("head"), dict):  # stored before head paths were made relative
        a["head"]["path"] = shown_path(a["head"].get("path"))
    model = engine.model_info()
    if (a.get("model") or {}).get("fingerprint") != model["fingerprint"]:
        return None, f"it was built with {(a.get('model') or {}).get('name')}, not this model's weights"
    if {k: a.get("settings", {}).get(k) for k in DEFAULT_SETTINGS} != DEFAULT_SETTINGS:
        return None, "it was built with other generation settings"
    engine.refresh_head()
    have = (engine.head_info() or {}).get("sha256")
    built = (a.get("head") or {}).get("sha256")
    if have == built and a.get("primary") == engine.primary and (have or not engine.head):
        return a, "stored"
    # same model, same chain: only the scores are stale. Re-score the stored chain.
    fresh = engine.analyze_chain(engine.chain_of(a), kind="generated", settings=a.get("settings"))
    for key in ("example", "timing", "stop_reason"):
        if key in a:
            fresh[key] = a[key]
    v = a.get("verifier")
    if v and all("verifier" in s["scores"] for s in a["steps"]) and len(a["steps"]) == len(fresh["steps"]):
        prim = fresh["primary"]
        for s_new, s_old in zip(fresh["steps"], a["steps"]):
            pv = s_old["scores"]["verifier"]
            s_new["scores"]["verifier"] = pv
            s_new["scores"]["combined"] = round(combine(s_new["scores"][prim], pv), 5)
        fresh["verifier"] = v
    return fresh, "re-scored"
