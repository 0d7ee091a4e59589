"""Install a requirements file, leaving out package indexes this machine cannot reach.

``requirements.txt`` names the PyTorch CPU index (``--extra-index-url``) so that a Hugging
Face Space, whose default index serves the CUDA build of torch, installs the CPU wheel.
Where that index is unreachable (only PyPI is), pip would retry it for minutes before
giving up, so each index line is probed first with a short timeout; an unreachable one is
dropped from a flattened copy of the file (``-r`` includes followed), and pip installs
from the copy. Standard library only: it runs before anything is installed.

    python scripts/pip_install.py requirements-dev.txt [extra pip arguments]
"""

from __future__ import annotations

import logging
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

logger = logging.getLogger("pip_install")

INDEX_OPTIONS = ("--extra-index-url", "--index-url", "-i")
PROBE_TIMEOUT_S = 5.0


def index_url(line: str) -> str | None:
    """The URL of an index option line (``--extra-index-url URL`` or ``--extra-index-url=URL``), else None."""
    s = line.strip()
    for opt in INDEX_OPTIONS:
        if s.startswith(opt + "=") or s.startswith(opt + " "):
            return s[len(opt) :].lstrip("= ").strip() or None
    return None


def reachable(url: str, timeout: float = PROBE_TIMEOUT_S) -> bool:
    """Whether the index answers at all within ``timeout`` seconds (any HTTP answer counts)."""
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/", timeout=timeout):
            return True
    except urllib.error.HTTPError:
        return True  # it answered
    except (OSError, ValueError):
        return False


def flatten(path: Path, seen: set[Path] | None = None) -> list[str]:
    """The file's lines with every ``-r``/``--requirement`` include inlined (relative to the including file)."""
    seen = seen if seen is not None else set()
    path = path.resolve()
    if path in seen:
        return []
    seen.add(path)
    out: list[str] = []
    for raw in path.read_text(encoding="utf-8").splitlines():
        s = raw.strip()
        for opt in ("-r", "--requirement"):
            if s.startswith(opt + " ") or s.startswith(opt + "="):
                out += flatten(path.parent / s[len(opt) :].lstrip("= ").strip(), seen)
                break
        else:
            out.append(raw)
    return out


def usable_lines(path: Path, probe=reachable) -> tuple[list[str], list[str]]:
    """(lines to install from, index URLs left out because they did not answer)."""
    kept, dropped = [], []
    for line in flatten(path):
        url = index_url(line)
        if url is not None and not probe(url):
            dropped.append(url)
            continue
        kept.append(line)
    return kept, dropped


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    req, extra = Path(argv[0]), argv[1:]
    lines, dropped = usable_lines(req)
    for url in dropped:
        logger.info("%s is unreachable: installing %s without it (PyPI only)", url, req)
    with tempfile.TemporaryDirectory(prefix="reqs-") as d:
        copy = Path(d) / req.name
        copy.write_text("\n".join(lines) + "\n", encoding="utf-8")
        cmd = [sys.executable, "-m", "pip", "install", "-q", "-r", str(copy), *extra]
        return subprocess.call(cmd)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
