"""Is one method really ahead of another? A paired bootstrap over problems.

Held-out sets here are small (tens of problems), so a gap of a few hundredths in PR-AUC can
be noise. Steps and alternatives of one problem are not independent, so whole problems are
resampled with replacement (``pairwise.tree_of``: a row's ``tree``, else its problem), and
every method is measured on the *same* resamples: the interval of a difference then reflects
how the two methods disagree, not how hard each draw happened to be. Reported per method:
step PR-AUC and, where the rows hold rated alternatives to the same step, pairwise accuracy,
each with a 95 % interval; and against the reference method (the first) the difference's
point value, interval and the share of resamples in which the method came out ahead.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import average_precision_score

from .metrics import bootstrap_indices, percentile_ci
from .pairwise import alternatives, tree_counts, tree_of


def _ap(y: np.ndarray, p: np.ndarray) -> float:
    if y.size == 0 or y.min() == y.max():
        return float("nan")
    return float(average_precision_score(y, p))


def paired_bootstrap(
    rows: Sequence[dict[str, Any]],
    scores: dict[str, Sequence[Sequence[float]]],
    rounds: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    """Every method of ``scores`` ({name: per-row step scores}, the first the reference) on the rows' ``labels``."""
    names = list(scores)
    problems: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        problems.setdefault(tree_of(r), []).append(i)
    units = list(problems)
    ys, ps = [], {m: [] for m in names}  # per problem: labelled steps' labels and each method's scores
    wins = {m: np.zeros(len(units)) for m in names}
    pairs = np.zeros(len(units))
    for u, key in enumerate(units):
        idx = problems[key]
        y = [int(x) for i in idx for x in rows[i]["labels"] if x is not None]
        ys.append(np.asarray(y, dtype=np.int64))
        for m in names:
            ps[m].append(
                np.asarray(
                    [float(s) for i in idx for x, s in zip(rows[i]["labels"], scores[m][i]) if x is not None],
                    dtype=np.float64,
                )
            )
            sub = [rows[i] for i in idx]
            per_tree, _ = alternatives(sub, [r["labels"] for r in sub], [scores[m][i] for i in idx])
            counts = [tree_counts(g) for g in per_tree.values()]
            wins[m][u] = sum(c[0] for c in counts)
            pairs[u] = sum(c[1] for c in counts)

    def measure(sel: np.ndarray) -> dict[str, tuple[float, float]]:
        y = np.concatenate([ys[u] for u in sel])
        out = {}
        for m in names:
            n_pairs = pairs[sel].sum()
            pw = float(wins[m][sel].sum() / n_pairs) if n_pairs else float("nan")
            out[m] = (_ap(y, np.concatenate([ps[m][u] for u in sel])), pw)
        return out

    point = measure(np.arange(len(units)))
    draws = [measure(sel) for sel in bootstrap_indices(len(units), rounds, seed)]
    ref = names[0]
    result: dict[str, Any] = {
        "n_chains": len(rows),
        "n_problems": len(units),
        "n_pairs": int(pairs.sum()),
        "rounds": rounds,
        "reference": ref,
        "methods": {},
    }
    for m in names:
        entry: dict[str, Any] = {}
        for k, key in enumerate(("pr_auc", "pairwise")):
            if k == 1 and not pairs.sum():
                continue
            vals = [d[m][k] for d in draws]
            entry[key] = point[m][k]
            entry[f"{key}_ci95"] = list(percentile_ci(vals))
            if m != ref:
                diffs = np.asarray([d[m][k] - d[ref][k] for d in draws])
                diffs = diffs[np.isfinite(diffs)]
                entry[f"{key}_minus_{ref}"] = {
                    "point": point[m][k] - point[ref][k],
                    "ci95": list(percentile_ci(diffs)),
                    "share_ahead": float((diffs > 0).mean()) if diffs.size else float("nan"),
                }
        result["methods"][m] = entry
    return result
