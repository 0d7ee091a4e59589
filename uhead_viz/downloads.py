"""Download files (a scored file's exports), one temporary folder per visitor's session.

Exports hold what a visitor uploaded, so they must neither pile up on the server nor sit
where another session could be handed them. Each session writes into its own folder under
one root made for this process; scoring another file replaces the session's previous
exports; the folder is removed when the session ends (the page's unload event), and any
folder older than ``max_age_s`` is removed on the next write, for sessions that vanish
without an unload. The root itself goes when the process exits.
"""

from __future__ import annotations

import atexit
import re
import shutil
import tempfile
import threading
import time
from pathlib import Path

_SAFE = re.compile(r"[^A-Za-z0-9_-]")


class SessionDownloads:
    """Per-session temporary folders for download files, cleaned up when the session ends."""

    def __init__(self, root: str | Path | None = None, max_age_s: float = 6 * 3600) -> None:
        self._root = Path(root) if root is not None else None
        self.max_age_s = max_age_s
        self._lock = threading.Lock()

    @property
    def root(self) -> Path:
        with self._lock:
            if self._root is None:
                self._root = Path(tempfile.mkdtemp(prefix="uhead_viz_downloads_"))
                atexit.register(shutil.rmtree, self._root, True)
            self._root.mkdir(parents=True, exist_ok=True)
            return self._root

    def _dir(self, session: str | None) -> Path:
        key = _SAFE.sub("_", str(session or "local"))[:64] or "local"
        return self.root / key

    def fresh(self, session: str | None, part: str = "") -> Path:
        """An empty folder for this session's new exports of one kind (``part``: a scored file's
        tables, one chain's pages); that kind's previous exports are removed, the others kept."""
        self.expire()
        d = self._dir(session) / _SAFE.sub("_", part) if part else self._dir(session)
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
        return d

    def end(self, session: str | None) -> None:
        """The session is over: remove its folder."""
        shutil.rmtree(self._dir(session), ignore_errors=True)

    def expire(self, now: float | None = None) -> int:
        """Remove session folders older than ``max_age_s``; returns how many."""
        now = time.time() if now is None else now
        n = 0
        for d in self.root.iterdir():
            try:
                if d.is_dir() and now - d.stat().st_mtime > self.max_age_s:
                    shutil.rmtree(d, ignore_errors=True)
                    n += 1
            except OSError:
                continue
        return n

    def sessions(self) -> list[str]:
        return sorted(d.name for d in self.root.iterdir() if d.is_dir())
