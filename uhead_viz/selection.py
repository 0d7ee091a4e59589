"""Choosing between heads on named validation sets, by measures a position or author detector cannot win.

The pooled held-out questions of every training source reward a head that tells the
sources apart (the reference solutions are all fine, the small model's chains mostly
wrong) and one that scores a step's position. So heads are compared per named set, on
two measures:

- pairwise accuracy among rated alternatives to the same step (``pairwise.py``): same
  problem, earlier steps and position, so only the step's content can separate them;
- step PR-AUC, per set, never pooled across sets.

The rule: rank the candidates on each (set, measure) that some candidate has a value for
(1 = best; equal values share their mean rank; a missing value ranks last); the best mean
rank wins, ties broken by mean pairwise accuracy and then mean PR-AUC. The trivial
baselines (``scorers/trivial.py``) are measured on the same rows as a reference, and each
candidate is marked by whether it beats all of them on every measure.
"""

from __future__ import annotations

import glob
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import metrics
from .jsonl import problem_of, read_rows
from .pairwise import pairwise_accuracy

MEASURES = ("pairwise", "pr_auc")
TRIVIAL = ("step_index", "chars_so_far", "is_last_step")


def parse_set(spec: str) -> tuple[str, list[Path]]:
    """``NAME=PATH[,PATH...]`` (globs allowed) -> (name, files); ValueError when malformed or empty."""
    name, sep, paths = spec.partition("=")
    if not sep or not name or not paths:
        raise ValueError(f"bad --set {spec!r}: use NAME=PATH (comma-separated paths and globs allowed)")
    files: list[Path] = []
    for pat in paths.split(","):
        hits = sorted(glob.glob(pat)) if any(c in pat for c in "*?[") else [pat]
        files += [Path(h) for h in hits if Path(h).is_file()]
    if not files:
        raise ValueError(f"--set {name}: no file matches {paths}")
    return name, files


def read_set(files: Sequence[Path]) -> list[dict[str, Any]]:
    """Labelled rows of a set (malformed lines and rows without labels are left out)."""
    out = []
    for path in files:
        for _, row, err in read_rows(path):
            if err or row is None:
                continue
            if isinstance(row.get("labels"), list) and isinstance(row.get("steps"), list):
                out.append(row)
    return out


def held_out(rows: list[dict[str, Any]], fraction: float) -> list[dict[str, Any]]:
    """Only rows whose problem ``train`` puts in its validation split (so no head trained on them)."""
    from .train import is_val

    return [r for r in rows if is_val(problem_of(r) or "", fraction)]


def trivial_scores(rows: Sequence[dict[str, Any]], method: str) -> list[list[float]]:
    """A trivial baseline's scores of the rows, from their text alone."""
    from .scorers import get_scorer
    from .scorers.trivial import text_chain

    return get_scorer(method, None).score([text_chain(r) for r in rows])


def set_metrics(
    rows: Sequence[dict[str, Any]], scores: Sequence[Sequence[float]], rounds: int = 2000, seed: int = 0
) -> dict[str, Any]:
    """One candidate on one set: PR-AUC, ROC-AUC, pairwise accuracy (with its interval), counts."""
    labels = [r["labels"] for r in rows]
    n_wrong = sum(x == 1 for ls in labels for x in ls)
    fine = [s for ls, ss in zip(labels, scores) for x, s in zip(ls, ss) if x == 0]
    pw = pairwise_accuracy(rows, labels, scores, rounds, seed)
    return {
        "pr_auc": metrics.pr_auc(labels, scores) if n_wrong else None,
        "roc_auc": metrics.roc_auc(labels, scores) if n_wrong else None,
        "pairwise": pw["accuracy"] if pw else None,
        "pairwise_ci95": pw["ci95"] if pw else None,
        "n_pairs": pw["n_pairs"] if pw else 0,
        "n_chains": len(rows),
        "wrong_steps": n_wrong,
        "mean_score_of_fine_steps": sum(fine) / len(fine) if fine else None,
    }


def _ranks(values: list[float | None]) -> list[float]:
    """1 = highest; equal values share their mean rank; None ranks after every value."""
    key = [(-v if v is not None else float("inf")) for v in values]
    order = sorted(range(len(values)), key=lambda i: key[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and key[order[j + 1]] == key[order[i]]:
            j += 1
        for k in order[i : j + 1]:
            ranks[k] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def _mean(xs: list[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def rank(
    results: dict[str, dict[str, dict[str, Any]]], reference: dict[str, dict[str, dict[str, Any]]] | None = None
) -> list[dict[str, Any]]:
    """Candidates ({name: {set: set_metrics}}) in selection order, best first, with the figures behind it."""
    names = list(results)
    sets = sorted({s for r in results.values() for s in r})
    criteria = [
        (s, m) for s in sets for m in MEASURES if any(results[n].get(s, {}).get(m) is not None for n in names)
    ]
    ranks = {n: [] for n in names}
    for s, m in criteria:
        for n, r in zip(names, _ranks([results[n].get(s, {}).get(m) for n in names])):
            ranks[n].append(r)
    out = []
    for n in names:
        per = results[n]
        mean_pw = _mean([v["pairwise"] for v in per.values() if v.get("pairwise") is not None])
        mean_pr = _mean([v["pr_auc"] for v in per.values() if v.get("pr_auc") is not None])
        entry: dict[str, Any] = {
            "name": n, "mean_rank": _mean(ranks[n]), "mean_pairwise": mean_pw, "mean_pr_auc": mean_pr
        }
        if reference:
            entry["beats_trivial"] = all(
                per.get(s, {}).get(m) is not None
                and all(
                    ref.get(s, {}).get(m) is None or per[s][m] > ref[s][m] for ref in reference.values()
                )
                for s, m in criteria
            )
        out.append(entry)
    out.sort(
        key=lambda e: (
            e["mean_rank"] if e["mean_rank"] is not None else float("inf"),
            -(e["mean_pairwise"] if e["mean_pairwise"] is not None else -1.0),
            -(e["mean_pr_auc"] if e["mean_pr_auc"] is not None else -1.0),
        )
    )
    return out
