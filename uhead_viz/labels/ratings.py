"""PRM800K's raw step ratings (-1, 0, +1) attached to chain rows built from its stepwise parquet.

Labels fold the neutral rating (0, "reasonable but not clearly helpful") into fine or wrong;
the position-controlled pairwise metric (``uhead_viz/pairwise.py``) compares the steps rated
-1 with those rated +1 at the same point of a solution, so it needs the rating itself. Rows
are matched by their text (problem, earlier steps, step), not by id, so any set rebuilt from
a stepwise parquet (test or train, whatever its ids) gets its ratings, and files written
before this field existed can be annotated in place (``benchmarks/add_ratings.py``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ..jsonl import problem_of
from .human import _steps_of

RatingKey = tuple[str, tuple[str, ...], str]


def rating_table(parquet_path: str | Path) -> dict[RatingKey, int | None]:
    """(problem, earlier steps, step) -> rating (-1, 0, 1; None where nobody rated the step)."""
    import pandas as pd

    df = pd.read_parquet(parquet_path, columns=["instruction", "responses", "next_response", "rating"])
    out: dict[RatingKey, int | None] = {}
    for problem, prefix, step, rating in zip(df["instruction"], df["responses"], df["next_response"], df["rating"]):
        r = None if rating is None or (isinstance(rating, float) and math.isnan(rating)) else int(rating)
        out.setdefault((str(problem), tuple(_steps_of(prefix)), str(step)), r)  # repeats carry the same rating
    return out


def add_ratings(row: dict[str, Any], table: dict[RatingKey, int | None]) -> dict[str, Any]:
    """The row with ``ratings``: each labelled step's rating, None where the step is unlabelled or unrated.

    Steps the row leaves unlabelled (a branch's prefix, already rated in its trajectory's row)
    stay unrated here too, so each rated step counts once, as in the labels.
    """
    steps, labels = row["steps"], row.get("labels") or [None] * len(row["steps"])
    problem = problem_of(row) or ""
    ratings = [
        None if lab is None else table.get((problem, tuple(steps[:k]), steps[k]))
        for k, lab in enumerate(labels)
    ]
    return {**row, "ratings": ratings}
