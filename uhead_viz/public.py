"""What the web may see of the server's file system: nothing absolute.

A head's location, a model folder or an error message would otherwise carry absolute
paths (``/home/...``, ``/root/.cache/...``) into API results, the status line and the
stored examples, telling a visitor how the server is laid out. ``shown_path`` gives the
repository-relative path of a file inside the repository, else only its name; ``scrub``
does the same to every absolute path inside a message.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# an absolute (or ~) path token, not inside a word or URL, so "48/2", "owner/name" and URLs stay
_ABS = re.compile(r"(?<![\w.~/:])(?:~|/)[^\s'\"`()<>,;]*[^\s'\"`()<>,;.:]")


def shown_path(path: str | os.PathLike | None) -> str | None:
    """``path`` relative to the repository if it lies inside it, else its last component."""
    if path is None or str(path) == "":
        return None
    p = Path(os.path.expanduser(str(path)))
    if not p.is_absolute():
        return p.as_posix()
    try:
        p = p.resolve()
    except OSError:
        pass
    try:
        return p.relative_to(REPO).as_posix() or "."
    except ValueError:
        return p.name or "."


def scrub(text: str) -> str:
    """``text`` with every absolute or home-relative path replaced by its ``shown_path``."""
    if not text:
        return text

    def one(m: re.Match) -> str:
        tok = m.group(0)
        if tok in ("/", "~"):
            return tok
        return shown_path(tok) or tok

    return _ABS.sub(one, str(text))
