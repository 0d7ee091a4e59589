"""Start ``app.py`` (or any server) as a user would, and never wait on it once it has died.

A fixture that only polls a URL keeps waiting its full timeout when the server crashed
after serving its first page (a native fault in the model's first forward pass, say).
Every wait here checks that the process is alive between short polls and fails at once
with the tail of its log when it is not.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import pytest

ROOT = Path(__file__).resolve().parents[1]
T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """A child process with its output in a log file, and waits that notice its death."""

    def __init__(self, cmd: list[str], env: dict[str, str], cwd: Path = ROOT, log: Path | None = None) -> None:
        if log is None:
            fd, name = tempfile.mkstemp(prefix="uhead-viz-server-", suffix=".log")
            os.close(fd)
            log = Path(name)
        self.log = log
        self._log_fh = open(log, "wb")
        self.proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=self._log_fh, stderr=subprocess.STDOUT)

    def log_tail(self, n: int = 3000) -> str:
        self._log_fh.flush()
        try:
            return self.log.read_bytes().decode(errors="replace")[-n:]
        except OSError:
            return ""

    def check_alive(self, what: str = "") -> None:
        """Fail the test now, with the log's tail, if the process has exited."""
        code = self.proc.poll()
        if code is not None:
            pytest.fail(
                f"the server process died (exit status {code}){' while ' + what if what else ''}.\n"
                f"--- last lines of {self.log} ---\n{self.log_tail()}",
                pytrace=False,
            )

    def wait_until(self, probe: Callable[[], T | None], timeout: float, what: str, every: float = 0.5) -> T:
        """Call ``probe`` until it returns something other than None; fail at once if the process dies."""
        deadline = time.monotonic() + timeout
        while True:
            self.check_alive(what)
            got = probe()
            if got is not None:
                return got
            if time.monotonic() > deadline:
                pytest.fail(f"timed out after {timeout:.0f} s {what}.\n--- log tail ---\n{self.log_tail()}")
            time.sleep(every)

    def wait_http(self, url: str, timeout: float = 300) -> str:
        """Wait until ``url`` answers 200; return its body."""

        def probe() -> str | None:
            try:
                with urllib.request.urlopen(url, timeout=5) as r:
                    if r.status == 200:
                        return r.read().decode(errors="replace")
            except OSError:
                return None
            return None

        return self.wait_until(probe, timeout, f"waiting for {url} to be served")

    def wait_selector(self, page, selector: str, timeout: float, what: str = "") -> None:
        """Playwright's ``wait_for_selector`` in short slices, checking the server between them."""

        def probe() -> bool | None:
            try:
                page.wait_for_selector(selector, timeout=1000)
                return True
            except Exception as e:  # playwright's TimeoutError; anything else is re-raised below
                if "Timeout" not in type(e).__name__:
                    raise
                return None

        self.wait_until(probe, timeout, what or f"waiting for {selector!r}", every=0)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log_fh.close()


@contextmanager
def app_process(env: dict[str, str], log: Path | None = None, args: tuple[str, ...] = ()) -> Iterator[ServerProcess]:
    """``python app.py`` in the repository root, stopped on exit."""
    server = ServerProcess([sys.executable, "app.py", *args], env, log=log)
    try:
        yield server
    finally:
        server.stop()
