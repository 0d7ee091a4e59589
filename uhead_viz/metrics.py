"""Step-level metrics for "find the wrong step": PR-AUC, ROC-AUC, calibration, ProcessBench F1.

Wrong steps are the positive class throughout (label 1), as in the paper: a verifier is
useful when it ranks the rare wrong steps above the many fine ones, which PR-AUC measures
and ROC-AUC hides. Every function takes plain lists or arrays and skips unlabelled steps
(None), so callers can pass a chain's labels as they are stored.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score


def _flat(labels: Sequence, scores: Sequence) -> tuple[np.ndarray, np.ndarray]:
    """Labelled (y, p) pairs as arrays; accepts flat lists or per-chain lists of lists."""
    if len(labels) != len(scores):
        raise ValueError(f"{len(labels)} labels but {len(scores)} scores")
    ys: list[int] = []
    ps: list[float] = []
    for y, p in zip(labels, scores):
        if isinstance(y, (list, tuple)):
            yy, pp = _flat(y, p)
            ys += yy.tolist()
            ps += pp.tolist()
        elif y is not None and p is not None and not (isinstance(p, float) and math.isnan(p)):
            ys.append(int(y))
            ps.append(float(p))
    return np.asarray(ys, dtype=np.int64), np.asarray(ps, dtype=np.float64)


def pr_auc(labels: Sequence, scores: Sequence) -> float:
    """Average precision with wrong steps (1) as positives; NaN when a class is missing."""
    y, p = _flat(labels, scores)
    if y.size == 0 or y.min() == y.max():
        return float("nan")
    return float(average_precision_score(y, p))


def roc_auc(labels: Sequence, scores: Sequence) -> float:
    """Area under the ROC curve; NaN when a class is missing."""
    y, p = _flat(labels, scores)
    if y.size == 0 or y.min() == y.max():
        return float("nan")
    return float(roc_auc_score(y, p))


def ece(labels: Sequence, scores: Sequence, bins: int = 10) -> float:
    """Expected calibration error of p_error over equal-width bins (0 is perfectly calibrated)."""
    y, p = _flat(labels, scores)
    if y.size == 0:
        return float("nan")
    idx = np.minimum((p * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        m = idx == b
        if m.any():
            total += m.sum() / y.size * abs(p[m].mean() - y[m].mean())
    return float(total)


def first_error(labels: Sequence[int | None]) -> int:
    """Index of the first step labelled wrong, else -1 (ProcessBench's ``label``)."""
    return next((i for i, y in enumerate(labels) if y == 1), -1)


def predicted_first_error(scores: Sequence[float], threshold: float) -> int:
    """The first step whose p_error exceeds ``threshold``, else -1."""
    return next((i for i, p in enumerate(scores) if p > threshold), -1)


def processbench(gold_first: Sequence[int], scores: Sequence[Sequence[float]], threshold: float) -> dict[str, float]:
    """ProcessBench accuracies: on chains with an error, was the first error found exactly;
    on chains without one, was none predicted; F1 is their harmonic mean."""
    if len(gold_first) != len(scores):
        raise ValueError(f"{len(gold_first)} chains but {len(scores)} score lists")
    err = [predicted_first_error(s, threshold) == g for g, s in zip(gold_first, scores) if g != -1]
    ok = [predicted_first_error(s, threshold) == -1 for g, s in zip(gold_first, scores) if g == -1]
    ea = float(np.mean(err)) if err else float("nan")
    ca = float(np.mean(ok)) if ok else float("nan")
    f1 = 2 * ea * ca / (ea + ca) if err and ok and ea + ca > 0 else (0.0 if err and ok else float("nan"))
    return {"error_acc": ea, "correct_acc": ca, "f1": f1}


def best_threshold(gold_first: Sequence[int], scores: Sequence[Sequence[float]]) -> tuple[float, float]:
    """The threshold (among the observed scores) that maximizes ProcessBench F1: (threshold, F1).

    Chosen on validation data and stored with a head, so the app's "first likely wrong
    step" uses a cut that was measured rather than 0.5.
    """
    grid = threshold_grid(scores)
    if not grid:
        return 0.5, float("nan")
    f1 = f1_over_thresholds(gold_first, scores, grid)
    best = (0.5, -1.0)
    for t, v in zip(grid, f1.tolist()):  # the first of equal maxima, as a scan in grid order finds it
        if not math.isnan(v) and v > best[1]:
            best = (float(t), v)
    return best if best[1] >= 0 else (0.5, float("nan"))


def best_threshold_by_group(
    gold_first: Sequence[int], scores: Sequence[Sequence[float]], groups: Sequence[str]
) -> tuple[float, float]:
    """The threshold that maximizes the mean over groups (sources) of each group's ProcessBench F1:
    (threshold, mean F1). Groups without both kinds of chain are left out; with none left, the
    pooled ``best_threshold``.

    Pooled, the threshold suits whichever source has the most validation chains; a head that
    meets several authors' text should flag a step at a cut that holds for each of them.
    """
    grid = threshold_grid(scores)
    by: dict[str, list[int]] = {}
    for i, g in enumerate(groups):
        by.setdefault(g, []).append(i)
    rows = [f1_over_thresholds([gold_first[i] for i in ix], [scores[i] for i in ix], grid) for ix in by.values()]
    rows = [r for r in rows if not np.isnan(r).all()]
    if not grid or not rows:
        return best_threshold(gold_first, scores)
    mean = np.mean(rows, axis=0)
    j = int(np.argmax(mean))  # the first of equal maxima
    return float(grid[j]), float(mean[j])


def summary(labels: Sequence[Sequence[int | None]], scores: Sequence[Sequence[float]], threshold: float) -> dict:
    """All step metrics for one method on one labelled set of chains."""
    gold = [first_error(lab) for lab in labels]
    return {
        "pr_auc": pr_auc(labels, scores),
        "roc_auc": roc_auc(labels, scores),
        "ece": ece(labels, scores),
        **processbench(gold, scores, threshold),
    }


def f1_over_thresholds(
    gold_first: Sequence[int], scores: Sequence[Sequence[float]], thresholds: Sequence[float]
) -> np.ndarray:
    """ProcessBench F1 at each threshold, as ``processbench`` computes it, for a whole grid at once.

    The predicted first error is the first step whose p_error exceeds t, so a chain with its
    first error at g is found exactly when every earlier step is <= t < p_g, and a chain
    without one when all its steps are <= t: two interval tests per chain, not a scan per t.
    NaN where a class of chains is missing.
    """
    if len(gold_first) != len(scores):
        raise ValueError(f"{len(gold_first)} chains but {len(scores)} score lists")
    t = np.asarray(thresholds, dtype=np.float64)
    lo, hi, top = [], [], []
    for g, s in zip(gold_first, scores):
        s = [float(x) for x in s]
        if g == -1:
            top.append(max(s) if s else -math.inf)
        elif 0 <= g < len(s):
            lo.append(max(s[:g]) if g else -math.inf)
            hi.append(s[g])
        else:  # the first error lies past the scored steps: never found exactly
            lo.append(math.inf)
            hi.append(-math.inf)
    if not lo or not top:
        return np.full(t.shape, np.nan)
    lo_a, hi_a, top_a = np.asarray(lo)[:, None], np.asarray(hi)[:, None], np.asarray(top)[:, None]
    ea = ((lo_a <= t) & (t < hi_a)).mean(axis=0)
    ca = (top_a <= t).mean(axis=0)
    denom = ea + ca
    return np.where(denom > 0, 2 * ea * ca / np.where(denom > 0, denom, 1.0), 0.0)


def threshold_grid(scores: Sequence[Sequence[float]], max_points: int = 400) -> list[float]:
    """Candidate thresholds: below the lowest score, midpoints between observed scores, the highest."""
    cands = sorted({round(float(p), 6) for s in scores for p in s})
    if not cands:
        return []
    grid = [cands[0] - 1e-6] + [(a + b) / 2 for a, b in zip(cands, cands[1:])] + [cands[-1]]
    if len(grid) > max_points:
        grid = [grid[int(i)] for i in np.linspace(0, len(grid) - 1, max_points)]
    return grid


def bootstrap_indices(n_units: int, rounds: int = 2000, seed: int = 0) -> np.ndarray:
    """``rounds`` resamples (with replacement) of ``n_units`` units, e.g. problems: shape (rounds, n_units).

    Units are what is independent (a problem's steps and alternatives are not), and two methods
    compared on the same draws make a paired bootstrap.
    """
    return np.random.default_rng(seed).integers(0, n_units, size=(rounds, n_units))


def percentile_ci(values: Sequence[float], level: float = 0.95) -> tuple[float, float]:
    """The central ``level`` interval of bootstrap values; NaN draws (a resample without a class) are dropped."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return float("nan"), float("nan")
    a = (1 - level) / 2 * 100
    return float(np.percentile(v, a)), float(np.percentile(v, 100 - a))
