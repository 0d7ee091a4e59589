"""Resumable JSON Lines files: read leniently, append whole lines, never leave a torn line.

Long jobs (generation, labelling, scoring) append one finished record per line. A job
killed mid-write can leave a partial last line; ``ResumableWriter`` repairs that on
start (by rewriting to a temp file and renaming) and reports which ids are done.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


class RowError(ValueError):
    pass


def read_rows(path: str | Path) -> Iterator[tuple[int, dict[str, Any] | None, str | None]]:
    """Yield (line number, row or None, error or None) for a JSONL file or a JSON list."""
    p = Path(path)
    text = p.read_text(encoding="utf-8", errors="replace")
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as e:
            raise RowError(f"{p.name} looks like a JSON list but does not parse: {e.msg} at line {e.lineno}") from e
        for i, r in enumerate(rows, start=1):
            yield (i, r, None) if isinstance(r, dict) else (i, None, "not a JSON object")
        return
    for i, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            r = json.loads(line)
        except json.JSONDecodeError as e:
            yield i, None, f"not valid JSON ({e.msg})"
            continue
        yield (i, r, None) if isinstance(r, dict) else (i, None, "not a JSON object")


class ResumableWriter:
    """Append JSON rows to ``path``; ``done`` holds the ids already written."""

    def __init__(self, path: str | Path, id_key: str = "id") -> None:
        self.path = Path(path)
        self.id_key = id_key
        self.done: set[str] = set()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            good = []
            raw = self.path.read_bytes().decode("utf-8", errors="replace").split("\n")
            for line in raw:
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    logger.warning("Dropping a torn line in %s (an earlier run was interrupted)", self.path)
                    continue
                good.append(line)
                if id_key in row:
                    self.done.add(str(row[id_key]))
            # also rewrite when the last line lacks its newline, or the next row would join it
            if len(good) != sum(1 for x in raw if x.strip()) or raw[-1] != "":
                tmp = self.path.with_suffix(self.path.suffix + ".tmp")
                tmp.write_text("".join(g + "\n" for g in good), encoding="utf-8")
                os.replace(tmp, self.path)
        self._f = open(self.path, "a", encoding="utf-8")

    def write(self, row: dict[str, Any]) -> None:
        self._f.write(json.dumps(row, ensure_ascii=False) + "\n")
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
