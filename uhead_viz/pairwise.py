"""Position-controlled pairwise accuracy: of two alternatives to the same step, is the wrong one scored higher?

Step PR-AUC pools every step of every chain, so a scorer that only knows "later steps are
more often wrong" or "this text reads like that author" can win it. PRM800K's raters rated
several alternative next steps for the same prefix: same problem, same earlier steps, same
position. Among those, nothing but the step's own content tells a wrong one from a fine one.
So for every such group, every (wrong, fine) pair counts 1 if the wrong step scores higher,
0.5 on a tie and 0 otherwise; the accuracy is the share over all pairs (0.5 = no better than
a coin, and exactly 0.5 for a position-only scorer such as ``step_index``).

Rows. A step belongs to the group (tree, earlier steps): ``tree`` is the row's ``tree``
field when it has one (a set builder can keep unrelated chains apart with it) and its
problem text otherwise. A step is *wrong* when its rating is -1 and *fine* when it is +1
(``ratings``, see ``labels/ratings.py``); rows without ratings fall back to their labels
(1 wrong, 0 fine), and the result says so, since a label 0 may then be a neutral rating.
Unlabelled steps never count. The same step text in the same group (a trajectory step that
also opens a branch) counts once, with its first score.

The interval is a bootstrap over trees (problems): pairs of one problem are not
independent. Only trees with at least one pair are resampled.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

import numpy as np

from .jsonl import problem_of
from .metrics import bootstrap_indices, percentile_ci

FROM_RATINGS = "ratings (-1 wrong against +1 fine; neutral 0 left out)"
FROM_LABELS = "labels (1 wrong against 0 fine; a 0 may be a neutral rating)"


def tree_of(row: dict[str, Any]) -> str:
    """The unit alternatives are grouped in and resampled by: ``tree``, else the problem text."""
    tree = row.get("tree")
    if tree is not None:
        return str(tree)
    return problem_of(row) or ""


def verdicts(row: dict[str, Any], labels: Sequence[int | None]) -> tuple[list[int | None], bool]:
    """Per step 1 (wrong), 0 (fine) or None (not counted), and whether ratings were used."""
    ratings = row.get("ratings")
    if isinstance(ratings, list) and len(ratings) >= len(labels):
        out = [
            None if lab is None or r is None or r == 0 else (1 if r < 0 else 0)
            for lab, r in zip(labels, ratings)
        ]
        return out, True
    return [None if lab is None else int(lab) for lab in labels], False


def _prefix_key(steps: Sequence[str], k: int) -> str:
    return hashlib.sha1(json.dumps(list(steps[:k]), ensure_ascii=False).encode("utf-8")).hexdigest()


def alternatives(
    rows: Sequence[dict[str, Any]], labels: Sequence[Sequence[int | None]], scores: Sequence[Sequence[float]]
) -> tuple[dict[str, dict[str, dict[str, tuple[int, float]]]], bool]:
    """{tree: {prefix key: {step text: (verdict, score)}}} and whether every counted row had ratings."""
    out: dict[str, dict[str, dict[str, tuple[int, float]]]] = {}
    all_rated = True
    for row, labs, sc in zip(rows, labels, scores):
        vs, rated = verdicts(row, labs)
        if any(v is not None for v in vs):
            all_rated &= rated
        steps = row["steps"]
        for k, v in enumerate(vs):
            if v is None:
                continue
            group = out.setdefault(tree_of(row), {}).setdefault(_prefix_key(steps, k), {})
            group.setdefault(steps[k], (v, float(sc[k])))
    return out, all_rated


def tree_counts(groups: dict[str, dict[str, tuple[int, float]]]) -> tuple[float, int, int]:
    """(wins, pairs, groups with a pair) of one tree; a tie is half a win."""
    wins, pairs, n_groups = 0.0, 0, 0
    for alts in groups.values():
        wrong = np.array([s for v, s in alts.values() if v == 1])
        fine = np.array([s for v, s in alts.values() if v == 0])
        if wrong.size and fine.size:
            diff = wrong[:, None] - fine[None, :]
            wins += float((diff > 0).sum() + 0.5 * (diff == 0).sum())
            pairs += diff.size
            n_groups += 1
    return wins, pairs, n_groups


def pairwise_accuracy(
    rows: Sequence[dict[str, Any]],
    labels: Sequence[Sequence[int | None]],
    scores: Sequence[Sequence[float]],
    rounds: int = 2000,
    seed: int = 0,
) -> dict[str, Any] | None:
    """Pairwise accuracy with a 95 % bootstrap interval over trees; None when no group has a pair."""
    per_tree, rated = alternatives(rows, labels, scores)
    counts = [tree_counts(g) for g in per_tree.values()]
    counts = [c for c in counts if c[1]]
    if not counts:
        return None
    wins = np.array([c[0] for c in counts])
    pairs = np.array([c[1] for c in counts], dtype=np.float64)
    idx = bootstrap_indices(len(counts), rounds, seed)
    draws = wins[idx].sum(axis=1) / pairs[idx].sum(axis=1)
    return {
        "accuracy": float(wins.sum() / pairs.sum()),
        "ci95": list(percentile_ci(draws)),
        "n_pairs": int(pairs.sum()),
        "n_groups": int(sum(c[2] for c in counts)),
        "n_problems": len(counts),
        "compares": FROM_RATINGS if rated else FROM_LABELS,
    }


def paired_units(
    rows: Sequence[dict[str, Any]], labels: Sequence[Sequence[int | None]], scores: Sequence[Sequence[float]]
) -> dict[str, tuple[float, int]]:
    """{tree: (wins, pairs)} for trees with a pair: the per-problem counts a paired bootstrap resamples."""
    per_tree, _ = alternatives(rows, labels, scores)
    out = {}
    for tree, groups in per_tree.items():
        w, p, _ = tree_counts(groups)
        if p:
            out[tree] = (w, p)
    return out
