"""Importers for human step labels (ProcessBench, PRM800K) into one row shape.

Every importer returns rows ``{"id", "problem", "steps", "labels", ...}`` with one label per
step: 0 fine, 1 wrong, None unlabelled. That is the shape the self-supervised labelers are
compared against, and ``to_processbench`` turns it back into the ProcessBench format the
evaluation reads (``label`` = index of the first wrong step, -1 if none).

**PRM800K phase-1 test** (``prm800k_phase1_test_stepwise.parquet``: 5,449 rows, 101
problems, one row per rated step). ``responses`` is an array of the earlier steps (the
prefix; empty for the first step) and ``next_response`` the rated step. What the data
shows, and how chains are rebuilt from it:

- Per problem the prefixes nest: all are prefixes of one longest prefix, the *trajectory*
  the raters walked (one per problem, up to 52 steps before the last).
- At each depth one or more alternative steps for the same prefix are shown and rated
  (1 in 1,176 of the 1,717 (problem, prefix) groups, 7 or 8 in 402, at most 15). Exactly
  one of them is taken into the next prefix: the preferred one (rated +1; 1,401 times) or,
  when the rater found none good enough, a human-written step (``is_human_response``,
  rating null; 215 times).
- At the last depth the alternatives end the solution. 97 problems have a preferred last
  step (90 rated +1 with ``is_solution`` set on 89, 7 human-written); 4 have none, 3 of
  which have nothing rated at all (a handful of unrated first steps): they give no chain.
  ``answer`` holds the final answer a step states (306 rows; the ``# Answer`` line was cut
  from the step text).
- 556 rows repeat an earlier (problem, prefix, step) triple (547 because 5 problems are
  shown twice, 9 repeated alternatives), always with the same rating: they are dropped,
  leaving 4,893 rows, 299 of them with a null rating: 225 human-written steps (222 taken)
  and 74 alternatives nobody rated.

Chains: per problem, the trajectory (taken steps, plus the preferred last step) is one
chain, and every other rated alternative at depth k gives one more chain: the first k
trajectory steps followed by that alternative. So each chain is a sequence of rated steps
whose prefix labels come from the taken steps (0, or None for human-written ones) and
whose last label is the alternative's own rating; the 77 alternatives without a rating
(74 unrated, 3 human-written but not taken) are skipped.
With the default ``neutral_as=0`` that gives 3,201 chains (98 trajectories, 3,103
branches), 47,122 steps, 1,694 of them wrong (each the last step of its branch), 7,237
unlabelled. ``neutral_as=1`` makes 2,511 steps wrong.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..errors import RowError
from ..jsonl import read_rows
from .base import first_error_labels

logger = logging.getLogger(__name__)

PRM800K_SOURCE = "prm800k-phase1-test"
_PRM_COLUMNS = ("instruction", "responses", "next_response", "rating", "is_human_response", "is_preferred_response")


def _check_processbench(row: dict[str, Any]) -> str | None:
    """Why a ProcessBench row is malformed, or None if it is fine."""
    missing = [k for k in ("id", "problem", "steps", "label") if row.get(k) is None]
    if missing:
        return f"missing {', '.join(repr(k) for k in missing)}"
    if not isinstance(row["problem"], str) or not row["problem"].strip():
        return "'problem' must be non-empty text"
    steps = row["steps"]
    if not isinstance(steps, list) or not steps or not all(isinstance(s, str) for s in steps):
        return "'steps' must be a non-empty list of strings"
    if not all(s.strip() for s in steps):
        return "'steps' holds an empty step"
    label = row["label"]
    if not isinstance(label, int) or isinstance(label, bool):
        return f"'label' must be an integer, not {label!r}"
    if not -1 <= label < len(steps):
        return f"'label' {label} is out of range for {len(steps)} steps (-1 means all correct)"
    return None


def processbench_rows(path_or_rows: str | Path | Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """ProcessBench rows (a JSON list or JSONL file, or the rows themselves) as labelled rows.

    ``label`` k becomes labels 0 before step k, 1 at k and None after it (ProcessBench does
    not judge steps after the first error); -1 becomes all 0. Other fields (``generator``,
    ``final_answer_correct``...) are kept. Malformed rows and repeated ids are logged by
    id and line and skipped, so one bad row never stops an import.
    """
    if isinstance(path_or_rows, (str, Path)):
        name = Path(path_or_rows).name
        try:
            numbered = list(read_rows(path_or_rows))
        except RowError as e:
            logger.error("Cannot import %s: %s", name, e)
            return []
    else:
        name = "rows"
        numbered = [
            (i, r, None) if isinstance(r, dict) else (i, None, "not a JSON object")
            for i, r in enumerate(path_or_rows, start=1)
        ]
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    skipped = 0
    for line, row, err in numbered:
        if row is not None:
            err = _check_processbench(row)
            if err is None and str(row["id"]) in seen:
                err = "repeats an earlier id"
        if err is not None:
            rid = row.get("id") if isinstance(row, dict) else None
            logger.warning("Skipping ProcessBench row %s (%s line %d): %s", rid, name, line, err)
            skipped += 1
            continue
        assert row is not None
        seen.add(str(row["id"]))
        labels = first_error_labels(row["label"], len(row["steps"]))
        extra = {key: v for key, v in row.items() if key not in ("id", "problem", "steps", "label", "labels")}
        out.append({"id": row["id"], "problem": row["problem"], "steps": list(row["steps"]), "labels": labels, **extra})
    logger.info("ProcessBench %s: %d rows imported, %d skipped", name, len(out), skipped)
    return out


def _rating_label(rating: Any, neutral_as: int | None) -> int | None:
    if rating is None or (isinstance(rating, float) and math.isnan(rating)):
        return None
    r = int(rating)
    return 1 if r < 0 else 0 if r > 0 else neutral_as


def _short_hash(text: str, n: int) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:n]


def _steps_of(value: Any) -> list[str]:
    """The earlier steps of a row: an array/list of strings (as in this file) or newline-joined text."""
    if value is None:
        return []
    if isinstance(value, str):
        return [s for s in value.split("\n") if s.strip()]
    return [str(s) for s in list(value)]


def prm800k_rows(
    parquet_path: str | Path, neutral_as: int | None = 0, id_prefix: str = "prm800k-p1t", source: str = PRM800K_SOURCE
) -> list[dict[str, Any]]:
    """PRM800K phase-1 stepwise rows rebuilt into labelled chains (see the module docstring).

    Ratings map -1 -> 1 (wrong), +1 -> 0, 0 (neutral, "reasonable but not helpful") ->
    ``neutral_as`` (0, 1 or None), null (human-written steps, unrated ones) -> None. Ids are
    stable across runs: ``<id_prefix>-<problem hash>-main`` for a trajectory and
    ``<id_prefix>-<problem hash>-<depth>-<step hash>`` for a branch (``id_prefix`` and ``source``
    tell the phase-1 train file's rows from the test file's).
    """
    if neutral_as not in (0, 1, None):
        raise ValueError(f"neutral_as must be 0, 1 or None, not {neutral_as!r}")
    import pandas as pd  # only this importer needs pandas; keep the package import light

    df = pd.read_parquet(parquet_path)
    missing = [c for c in _PRM_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{Path(parquet_path).name} lacks column(s) {', '.join(missing)}")
    has_answer = "answer" in df.columns
    problems: dict[str, dict[tuple[tuple[str, ...], str], dict[str, Any]]] = {}
    dropped = 0
    for rec in df.to_dict("records"):
        prefix = tuple(_steps_of(rec["responses"]))
        key = (prefix, str(rec["next_response"]))
        rows = problems.setdefault(str(rec["instruction"]), {})
        if key in rows:
            dropped += 1
            continue
        answer = rec.get("answer") if has_answer else None
        rows[key] = {
            "depth": len(prefix),
            "step": key[1],
            "label": _rating_label(rec["rating"], neutral_as),
            "rated": _rating_label(rec["rating"], 0) is not None,
            "preferred": bool(rec["is_preferred_response"]),
            "answer": None if answer is None or (isinstance(answer, float) and math.isnan(answer)) else str(answer),
        }
    out: list[dict[str, Any]] = []
    n_unrated = n_bad = 0
    for problem, rows in problems.items():
        pid = f"{id_prefix}-{_short_hash(problem, 10)}"
        trajectory = max((p for p, _ in rows), key=len)
        if any(p != trajectory[: len(p)] for p, _ in rows):
            logger.warning("PRM800K problem %s: prefixes do not nest into one trajectory; skipped", pid)
            n_bad += 1
            continue
        depth = len(trajectory)
        taken: list[dict[str, Any] | None] = [rows.get((trajectory[:k], trajectory[k])) for k in range(depth)]
        if any(t is None for t in taken):
            logger.warning("PRM800K problem %s: a trajectory step has no row of its own; skipped", pid)
            n_bad += 1
            continue
        traj_labels = [t["label"] for t in taken if t is not None]
        last = next((r for (p, _), r in rows.items() if len(p) == depth and r["preferred"]), None)
        main_steps, main_labels, main_answer = list(trajectory), list(traj_labels), None
        if last is not None:
            main_steps.append(last["step"])
            main_labels.append(last["label"])
            main_answer = last["answer"]
        if main_steps:
            out.append(_prm_row(f"{pid}-main", problem, main_steps, main_labels, main_answer, source))
        for (prefix, step), r in rows.items():
            k = len(prefix)
            if r is last or (k < depth and step == trajectory[k]):
                continue
            if not r["rated"]:
                n_unrated += 1
                continue
            rid = f"{pid}-{k:02d}-{_short_hash(step, 8)}"
            out.append(
                _prm_row(rid, problem, list(prefix) + [step], traj_labels[:k] + [r["label"]], r["answer"], source)
            )
    n_steps = sum(len(r["steps"]) for r in out)
    n_wrong = sum(lab == 1 for r in out for lab in r["labels"])
    logger.info(
        "PRM800K %s: %d problems, %d chains, %d steps, %d wrong steps (%d repeated rows dropped, "
        "%d unrated alternatives skipped, %d problems skipped)",
        Path(parquet_path).name,
        len(problems) - n_bad,
        len(out),
        n_steps,
        n_wrong,
        dropped,
        n_unrated,
        n_bad,
    )
    return out


def _prm_row(
    rid: str, problem: str, steps: list[str], labels: list[int | None], answer: str | None, source: str
) -> dict[str, Any]:
    return {"id": rid, "problem": problem, "steps": steps, "labels": labels, "source": source, "answer": answer}


def to_processbench(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Labelled rows in ProcessBench format: ``label`` = index of the first 1, else -1.

    All steps are kept (nothing is truncated after the first error); other fields pass
    through. A row whose labels are all None says nothing about its steps and is skipped
    (logged), as is one whose labels do not match its steps.
    """
    out = []
    for row in rows:
        labels, steps = row.get("labels"), row.get("steps")
        rid = row.get("id")
        if not isinstance(labels, list) or not isinstance(steps, list) or len(labels) != len(steps):
            logger.warning("Skipping row %s: 'labels' must be a list with one label per step", rid)
            continue
        if all(lab is None for lab in labels):
            logger.warning("Skipping row %s: none of its steps is labelled", rid)
            continue
        label = next((i for i, lab in enumerate(labels) if lab == 1), -1)
        extra = {k: v for k, v in row.items() if k not in ("id", "problem", "steps", "labels", "label")}
        out.append({"id": rid, "problem": row.get("problem"), "steps": list(steps), "label": label, **extra})
    return out
