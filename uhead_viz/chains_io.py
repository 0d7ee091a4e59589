"""Chains that come from outside: steps pasted into the page, and uploaded files of rows.

Both are refused with a message a person can act on (``InputError``) when they cannot be
scored, and both are bounded: a pasted chain by its steps and characters, an upload by its
bytes and rows (``UHEAD_VIZ_MAX_UPLOAD_MB``, ``UHEAD_VIZ_MAX_ROWS``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from . import settings
from .errors import InputError, RowError
from .jsonl import read_rows
from .labels.base import first_error_labels
from .steps import STEP_RE, clean_text, split_text

MAX_PASTE_STEPS = 60
MAX_PASTE_CHARS = 20_000
MAX_DATASET_ROWS = settings.max_rows()  # read once: the app is built with these limits
MAX_UPLOAD_BYTES = settings.max_upload_bytes()


def parse_steps(text: str) -> tuple[list[str], str | None]:
    """Steps written elsewhere: ``Step k:`` lines (continuation lines join their step), else
    paragraphs when blank lines separate them, else one step per line. An ``Answer:`` line
    ends the steps and gives the answer."""
    if not isinstance(text, str) or not text.strip():
        raise InputError("Paste at least one step.")
    if len(text) > MAX_PASTE_CHARS:
        raise InputError(f"The steps are {len(text):,} characters long; the limit is {MAX_PASTE_CHARS:,}.")
    text = clean_text(text).replace("\r\n", "\n").replace("\r", "\n")
    lines = text.split("\n")
    if any(STEP_RE.match(ln) for ln in lines):
        regions, answer, _ = split_text(text)
        steps = [r.text.strip() for r in regions if r.text.strip()]
    else:
        regions, answer, astart = split_text(text)
        body = text[:astart]
        if "\n\n" in body.strip():
            steps = [p.strip() for p in body.split("\n\n") if p.strip()]
        else:
            steps = [ln.strip() for ln in body.split("\n") if ln.strip()]
    if not steps:
        raise InputError("No steps found: write one step per line, or start each with 'Step k:'.")
    if len(steps) > MAX_PASTE_STEPS:
        raise InputError(f"{len(steps)} steps is more than the {MAX_PASTE_STEPS} a pasted chain may have.")
    return steps, answer


def row_labels(row: dict[str, Any], n_steps: int) -> list[int | None] | None:
    """Per-step labels of a row (1 = wrong), from ``labels`` or ProcessBench's ``label``; None if absent."""
    labels = row.get("labels")
    if isinstance(labels, list) and len(labels) == n_steps:
        out: list[int | None] = []
        for y in labels:
            if y is None:
                out.append(None)
            elif isinstance(y, bool) or isinstance(y, (int, float)):
                out.append(int(bool(y)))
            else:
                return None
        return out
    k = row.get("label")
    if isinstance(k, int) and not isinstance(k, bool) and -1 <= k < n_steps:
        return first_error_labels(k, n_steps)
    return None


def read_dataset(path: str | Path) -> tuple[list[tuple[int, dict[str, Any]]], list[str]]:
    """(line, row) pairs of a JSON list or JSONL upload, and a message per unreadable line.

    Raises InputError with a message for a person when nothing at all can be read.
    """
    p = Path(path)
    try:
        size = p.stat().st_size
    except OSError as e:
        raise InputError("The uploaded file could not be read.") from e
    if size == 0:
        raise InputError("The file is empty. Upload a JSON list or JSON Lines file of chains.")
    if size > MAX_UPLOAD_BYTES:
        raise InputError(
            f"The file is {size:,} bytes ({size / 2**20:.1f} MB); the limit is {MAX_UPLOAD_BYTES:,} bytes "
            f"({MAX_UPLOAD_BYTES / 2**20:g} MB). Split it into parts."
        )
    head = p.read_bytes()[:4096]
    if b"\x00" in head:
        raise InputError(
            f"{p.name} is not a text file. Upload chains as JSON (a list of objects) or JSON Lines "
            "(one object per line)."
        )
    rows: list[tuple[int, dict[str, Any]]] = []
    errors: list[str] = []
    try:
        for line, row, err in read_rows(p):
            if err or row is None:
                errors.append(f"line {line}: {err}")
            else:
                rows.append((line, row))
    except RowError as e:
        raise InputError(str(e)) from e
    if not rows:
        first = f" (first problem: {errors[0]})" if errors else ""
        raise InputError(
            "No chains could be read from the file: it is not JSON or JSON Lines with one object per chain"
            f"{first}. Each chain needs a 'problem' and a list of 'steps'."
        )
    if len(rows) > MAX_DATASET_ROWS:
        errors.append(f"only the first {MAX_DATASET_ROWS} of {len(rows)} rows are scored")
        rows = rows[:MAX_DATASET_ROWS]
    return rows, errors
