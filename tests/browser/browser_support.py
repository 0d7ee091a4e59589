"""Helpers shared by the browser tests (kept out of conftest.py so a test imports them by a name
no other folder's conftest can shadow)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from proc_support import free_port  # noqa: F401  (re-exported: one way to pick a port)

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
CHROMIUM = os.environ.get("UHEAD_VIZ_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
TIMEOUT_MS = 90_000


IDLE_JS = (
    "(sel) => { const t = document.querySelector(sel + ' [data-testid=status-tracker]');"
    " return !t || t.classList.contains('hide'); }"
)


def wait_idle(page, selector: str) -> None:
    """Wait until the event feeding ``selector`` has finished, not only shown its last update.

    A click that lands in between can be overwritten when the event completes."""
    page.wait_for_function(IDLE_JS, arg=selector)


def shot(page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def shot_to(page, name: str, folder: Path) -> Path:
    """A full-page screenshot under ``folder``, and a copy in ``$UHEAD_VIZ_SCREENSHOT_DIR`` when that is set."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    extra = os.environ.get("UHEAD_VIZ_SCREENSHOT_DIR")
    if extra:
        Path(extra).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, Path(extra) / path.name)
    return path
