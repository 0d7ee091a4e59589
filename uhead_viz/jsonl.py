"""Resumable JSON Lines files: read leniently, append whole lines, never leave a torn line.

Long jobs (generation, labelling, scoring) append one finished record per line, each
with one write, flushed and fsynced before the next record is worked on. A job killed
mid-write can leave a partial last line; ``ResumableWriter`` repairs that on start (by
rewriting to a temp file, fsyncing it and renaming it over the original) and reports
which ids are done, so a rerun neither loses nor repeats a finished record.

Reading never fails on a file's content with anything but ``RowError``: a line that is not
JSON (or nests too deeply, or holds a number Python refuses to convert) is reported for
that line, and lone surrogates from JSON escapes (``"\\ud800"``) are replaced, because
the tokenizer and UTF-8 output both refuse them.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import RowError
from .steps import fix_surrogates

logger = logging.getLogger(__name__)


# json raises RecursionError for deep nesting and a plain ValueError for an integer longer
# than Python's int-to-str digit limit; both are malformed input, like a JSONDecodeError.
_JSON_ERRORS = (ValueError, RecursionError)


def _why(e: BaseException) -> str:
    if isinstance(e, json.JSONDecodeError):
        return e.msg
    if isinstance(e, RecursionError):
        return "nested too deeply"
    return str(e).split(";")[0]


def _repair(value: Any) -> Any:
    """``value`` with lone surrogates in every string (keys included) replaced by U+FFFD."""
    if isinstance(value, str):
        return fix_surrogates(value)
    if isinstance(value, list):
        return [_repair(v) for v in value]
    if isinstance(value, dict):
        return {fix_surrogates(k): _repair(v) for k, v in value.items()}
    return value


_ESCAPED_SURROGATE = re.compile(r"\\u[dD][89a-fA-F]")


def _loads(text: str) -> Any:
    value = json.loads(text)
    # only a \uD800-\uDFFF escape can put a lone surrogate into parsed JSON
    return _repair(value) if _ESCAPED_SURROGATE.search(text) else value


def read_rows(path: str | Path) -> Iterator[tuple[int, dict[str, Any] | None, str | None]]:
    """Yield (line number, row or None, error or None) for a JSONL file or a JSON list.

    A JSON list that does not parse raises ``RowError`` (its rows cannot be told apart);
    in JSON Lines each bad line is reported on its own and the others are still read.
    """
    p = Path(path)
    text = p.read_text(encoding="utf-8", errors="replace")
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            rows = _loads(text)
        except _JSON_ERRORS as e:
            where = f" at line {e.lineno}" if isinstance(e, json.JSONDecodeError) else ""
            raise RowError(f"{p.name} looks like a JSON list but does not parse: {_why(e)}{where}") from e
        for i, r in enumerate(rows, start=1):
            yield (i, r, None) if isinstance(r, dict) else (i, None, "not a JSON object")
        return
    # only "\n" ends a JSON Lines record: str.splitlines() would also cut at U+2028, U+0085 or
    # a form feed, which JSON strings may hold raw (model output does; ensure_ascii=False keeps them)
    for i, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            r = _loads(line)
        except _JSON_ERRORS as e:
            yield i, None, f"not valid JSON ({_why(e)})"
            continue
        yield (i, r, None) if isinstance(r, dict) else (i, None, "not a JSON object")


# The keys a row may hold its problem under, first match wins: ``problem`` (ProcessBench,
# this package's own rows), ``question`` (GSM8K, the app), ``instruction`` (instruction sets).
PROBLEM_KEYS = ("problem", "question", "instruction")
NO_PROBLEM = "no problem text (under " + ", ".join(repr(k) for k in PROBLEM_KEYS) + ")"


def problem_of(row: dict[str, Any]) -> str | None:
    """The row's problem text, as written, under the first of ``PROBLEM_KEYS`` holding non-blank text; else None."""
    for key in PROBLEM_KEYS:
        value = row.get(key)
        if isinstance(value, str) and value.strip():
            return value
    return None


class ResumableWriter:
    """Append JSON rows to ``path``; ``done`` holds the ids already written.

    Each row is encoded in full before a byte is written, then written with one call,
    flushed and fsynced, so a kill leaves at worst one torn last line, which the next
    writer on the same path drops (see the module docstring).
    """

    def __init__(self, path: str | Path, id_key: str = "id") -> None:
        self.path = Path(path)
        self.id_key = id_key
        self.done: set[str] = set()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            good = []
            data = self.path.read_bytes()
            try:
                raw = data.decode("utf-8").split("\n")
                mangled = False
            except UnicodeDecodeError:  # not written by this class: rewrite it as valid UTF-8
                raw, mangled = data.decode("utf-8", errors="replace").split("\n"), True
            for line in raw:
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except _JSON_ERRORS:
                    logger.warning("Dropping a torn line in %s (an earlier run was interrupted)", self.path)
                    continue
                if not isinstance(row, dict):  # this writer only writes objects: not one of its records
                    logger.warning("Dropping a line of %s that is not a JSON object: %.60s", self.path, line)
                    continue
                good.append(line)
                if id_key in row:
                    self.done.add(str(row[id_key]))
            # rewrite unless the file is exactly its good rows, each ending in a newline: a dropped
            # line, a blank line, or a last line without its newline (the next row would join it)
            if mangled or raw != [*good, ""]:
                tmp = self.path.with_suffix(self.path.suffix + ".tmp")
                with open(tmp, "wb") as f:
                    f.write("".join(g + "\n" for g in good).encode("utf-8"))
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, self.path)
                _fsync_dir(self.path.parent)
        self._f = open(self.path, "ab")

    def write(self, row: dict[str, Any]) -> None:
        line = json.dumps(row, ensure_ascii=False)
        try:
            data = (line + "\n").encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate: JSON's \u escapes keep it exactly
            data = (json.dumps(row) + "\n").encode("ascii")
        self._f.write(data)
        self._f.flush()
        os.fsync(self._f.fileno())
        if self.id_key in row:
            self.done.add(str(row[self.id_key]))

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> ResumableWriter:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
