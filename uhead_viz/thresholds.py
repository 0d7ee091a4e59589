"""Which threshold each method's ProcessBench F1 is measured at, and where it came from.

F1 (first error found exactly / no error flagged) depends on a cut: the first step whose
p_error exceeds it is the predicted first error. Methods are only comparable when each cut
was chosen the same honest way, on other data. The policies:

- ``validation``: each method's F1-maximising threshold on a validation set, applied to
  this one (``evaluate --thresholds-from VAL``, VAL an earlier report or a labelled file
  that is evaluated first). Every report records each method's best cut on its own data
  (``f1_best``) for exactly this use.
- ``default``: the head's stored threshold (chosen on its training run's validation
  questions) and a fixed 0.5 for every other method, which is not tuned at all: the report
  says so per method.
- ``best``: the cut that maximises F1 on this very data (optimistic).
- a number: the same cut for every method.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import InputError

DEFAULT_THRESHOLD = 0.5
FIXED = "fixed 0.5 (not chosen on validation data)"
STORED = "the head's stored threshold (chosen on its training validation)"
BEST_HERE = "best F1 on this data (optimistic)"
GIVEN = "given (--threshold)"


@dataclass
class ValThresholds:
    """Per-method cuts chosen on a validation set (``source``: its report)."""

    source: str
    thresholds: dict[str, float] = field(default_factory=dict)


Policy = str | float | ValThresholds


def parse_policy(text: str) -> str | float:
    """``--threshold``: default, best or a number in [0, 1]."""
    if text in ("default", "best"):
        return text
    try:
        t = float(text)
    except ValueError:
        raise InputError(f"--threshold must be default, best or a number in [0, 1], not {text!r}.") from None
    if not 0.0 <= t <= 1.0:
        raise InputError(f"--threshold {t} is outside [0, 1].")
    return t


def policy_name(policy: Policy) -> str:
    if isinstance(policy, ValThresholds):
        return "validation"
    return "best" if policy == "best" else ("given" if isinstance(policy, float) else "default")


def best_on_data(gold: list[int], scores: list[list[float]]) -> dict[str, float]:
    """This data's F1-maximising cut and that F1: what a later run reads as validation."""
    from .metrics import best_threshold

    if not gold:
        return {"threshold": float("nan"), "f1": float("nan")}
    t, f1 = best_threshold(gold, scores)
    return {"threshold": t, "f1": f1}


def threshold_for(
    method: str, scorer: Any, policy: Policy, gold: list[int], scores: list[list[float]]
) -> tuple[float, str]:
    """(threshold, where it came from) for one method under ``policy``."""
    if isinstance(policy, float):
        return policy, GIVEN
    if policy == "best":
        from .metrics import best_threshold

        return best_threshold(gold, scores)[0], BEST_HERE
    if isinstance(policy, ValThresholds):
        t = policy.thresholds.get(method)
        if t is not None:
            return t, f"best F1 on validation ({policy.source})"
        fallback, how = threshold_for(method, scorer, "default", gold, scores)
        return fallback, f"{how}; {method} is not in {policy.source}"
    head = getattr(scorer, "head", None)
    if method == "uhead" and head is not None:
        return float(head.threshold), STORED
    return DEFAULT_THRESHOLD, FIXED


def read_report_thresholds(path: str | Path) -> ValThresholds | None:
    """The per-method ``f1_best`` cuts of an evaluate report, or None when ``path`` is not a report.

    InputError for a report that predates ``f1_best`` or records no cut at all.
    """
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None  # JSONL, or a file that is no report: the caller treats it as data
    if not isinstance(data, dict) or not isinstance(data.get("methods"), dict):
        return None
    cuts = {}
    for m, r in data["methods"].items():
        best = r.get("f1_best") if isinstance(r, dict) else None
        t = best.get("threshold") if isinstance(best, dict) else None
        if isinstance(t, (int, float)) and math.isfinite(t):
            cuts[m] = float(t)
    if not cuts:
        raise InputError(
            f"{p} is an evaluate report without per-method best thresholds (f1_best): it was written before "
            "they were recorded, or its data has no chain with a known first error. Evaluate the validation set again."
        )
    return ValThresholds(str(p), cuts)


def from_validation(path: str | Path, run_val: Callable[[Path], dict[str, Any]]) -> ValThresholds:
    """Cuts from ``path``: read from it when it is a report, else from ``run_val(path)``'s report."""
    found = read_report_thresholds(path)
    if found is not None:
        return found
    report = run_val(Path(path))
    cuts = {
        m: float(r["f1_best"]["threshold"])
        for m, r in report["methods"].items()
        if isinstance(r.get("f1_best"), dict) and isinstance(r["f1_best"].get("threshold"), (int, float))
    }
    return ValThresholds(str(path), cuts)


def describe(methods: dict[str, dict[str, Any]]) -> str:
    """One line per distinct origin: which threshold each method's F1 used."""
    by_from: dict[str, list[str]] = {}
    for m, r in methods.items():
        t = r.get("threshold")
        by_from.setdefault(str(r.get("threshold_from")), []).append(f"{m} {t:.3f}" if isinstance(t, float) else m)
    return "\n".join(f"F1 thresholds, {how}: {', '.join(ms)}" for how, ms in by_from.items())
