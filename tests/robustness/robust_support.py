"""Helpers for the robustness tests: a network guard, a peak-RSS sampler, the artefact file.

A module of its own (not the folder's conftest) so test files can import it by a name that
no other conftest in the tree shadows.
"""

from __future__ import annotations

import json
import os
import re
import socket
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from proc_support import free_port  # noqa: F401  (re-exported: one way to pick a port)

ROOT = Path(__file__).resolve().parents[2]
ARTIFACT = ROOT / "tests" / "artifacts" / "robustness.json"
_artifact_lock = threading.Lock()


# ----- the artefact file ---------------------------------------------------------------------------
def record(section: str, data: Any) -> None:
    """Put ``data`` under ``section`` of tests/artifacts/robustness.json (other sections are kept).

    The figures docs/robustness.md quotes come from this file, so each test writes what it measured
    the moment it has it, and a run of one test refreshes only its own section.
    """
    with _artifact_lock:
        try:
            doc = json.loads(ARTIFACT.read_text(encoding="utf-8"))
            if not isinstance(doc, dict):
                doc = {}
        except (OSError, ValueError):
            doc = {}
        doc[section] = data
        doc["_about"] = (
            "Written by tests/robustness (python -m pytest tests/robustness). Figures are measured on the "
            "machine that ran them; 'bad_inputs' lists each input tried and the response it got."
        )
        ARTIFACT.parent.mkdir(parents=True, exist_ok=True)
        tmp = ARTIFACT.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(doc, indent=2, ensure_ascii=False, sort_keys=True) + "\n", encoding="utf-8")
        os.replace(tmp, ARTIFACT)


class BadInputLog:
    """Every bad input a test tried and the response it got, merged into the artefact's list."""

    def __init__(self) -> None:
        self.items: list[dict[str, str]] = []

    def add(self, surface: str, what: str, response: object) -> None:
        text = re.sub(r"/tmp/pytest-of-[^/]+/pytest-\d+/[^/\s]+/", "<tmp>/", " ".join(str(response).split()))
        self.items.append({"surface": surface, "input": what, "response": text[:400]})

    def write(self) -> None:
        if not self.items:
            return
        try:
            old = json.loads(ARTIFACT.read_text(encoding="utf-8")).get("bad_inputs") or []
        except (OSError, ValueError, AttributeError):
            old = []
        merged = {(it["surface"], it["input"]): it for it in old + self.items}
        record("bad_inputs", sorted(merged.values(), key=lambda x: (x["surface"], x["input"])))


# ----- peak memory ---------------------------------------------------------------------------------
def rss_bytes(pid: int | None = None) -> int:
    """Resident set size of a process (this one by default): psutil if present, else /proc."""
    try:
        import psutil

        return int(psutil.Process(pid or os.getpid()).memory_info().rss)
    except ImportError:
        with open(f"/proc/{pid or 'self'}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    raise RuntimeError("cannot read the resident set size")


class PeakRSS:
    """Samples a process's RSS in a thread while the block runs; ``peak`` and ``start`` in bytes."""

    def __init__(self, pid: int | None = None, every: float = 0.05) -> None:
        self.pid = pid
        self.every = every
        self.start = 0
        self.peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes(self.pid))
            self._stop.wait(self.every)

    def __enter__(self) -> PeakRSS:
        self.start = self.peak = rss_bytes(self.pid)
        self._thread = threading.Thread(target=self._run, daemon=True, name="rss-sampler")
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.peak = max(self.peak, rss_bytes(self.pid))


def gib(n: int) -> float:
    return round(n / 2**30, 2)


# ----- the network guard ---------------------------------------------------------------------------
def _is_local(host: Any) -> bool:
    if host is None:
        return True
    h = host.decode() if isinstance(host, bytes) else str(host)
    return h in ("localhost", "::1", "0.0.0.0", "") or h.startswith("127.") or h.startswith("::ffff:127.")


class NetGuard:
    """Refuse (and record) every connection and name lookup that leaves this machine.

    Loopback keeps working, so a Gradio app served on 127.0.0.1 and its client still talk.
    Unix sockets are left alone. ``attempts`` lists (what, where, a short stack) per refusal;
    refusals whose call stack passes through a path in ``not_ours`` (a client library the
    test drives the app with) are refused too but listed in ``others`` instead.
    """

    def __init__(self, not_ours: tuple[str, ...] = ()) -> None:
        self.attempts: list[tuple[str, str, str]] = []
        self.others: list[tuple[str, str, str]] = []
        self.not_ours = not_ours
        self._saved: dict[str, Any] = {}

    def _refuse(self, what: str, where: Any) -> None:
        frames = traceback.format_stack()[:-2]
        stack = "".join(frames[-12:])
        theirs = any(p in f for f in frames for p in self.not_ours)
        (self.others if theirs else self.attempts).append((what, repr(where), stack))
        raise OSError(f"network access blocked by the robustness test: {what} {where!r}")

    def __enter__(self) -> NetGuard:
        guard = self
        real_connect = socket.socket.connect
        real_connect_ex = socket.socket.connect_ex
        real_sendto = socket.socket.sendto
        real_getaddrinfo = socket.getaddrinfo
        real_create = socket.create_connection
        self._saved = {
            "connect": real_connect,
            "connect_ex": real_connect_ex,
            "sendto": real_sendto,
            "getaddrinfo": real_getaddrinfo,
            "create_connection": real_create,
        }

        def inet(sock: socket.socket) -> bool:
            return sock.family in (socket.AF_INET, socket.AF_INET6)

        def connect(sock: socket.socket, address: Any) -> Any:
            if inet(sock) and not _is_local(address[0]):
                guard._refuse("connect", address)
            return real_connect(sock, address)

        def connect_ex(sock: socket.socket, address: Any) -> Any:
            if inet(sock) and not _is_local(address[0]):
                guard._refuse("connect_ex", address)
            return real_connect_ex(sock, address)

        def sendto(sock: socket.socket, data: Any, *args: Any) -> Any:
            address = args[-1]
            if inet(sock) and not _is_local(address[0]):
                guard._refuse("sendto", address)
            return real_sendto(sock, data, *args)

        def getaddrinfo(host: Any, *args: Any, **kw: Any) -> Any:
            if not _is_local(host):
                guard._refuse("getaddrinfo", host)
            return real_getaddrinfo(host, *args, **kw)

        def create_connection(address: Any, *args: Any, **kw: Any) -> Any:
            if not _is_local(address[0]):
                guard._refuse("create_connection", address)
            return real_create(address, *args, **kw)

        socket.socket.connect = connect  # type: ignore[method-assign]
        socket.socket.connect_ex = connect_ex  # type: ignore[method-assign]
        socket.socket.sendto = sendto  # type: ignore[method-assign]
        socket.getaddrinfo = getaddrinfo  # type: ignore[assignment]
        socket.create_connection = create_connection  # type: ignore[assignment]
        return self

    def __exit__(self, *exc: Any) -> None:
        socket.socket.connect = self._saved["connect"]  # type: ignore[method-assign]
        socket.socket.connect_ex = self._saved["connect_ex"]  # type: ignore[method-assign]
        socket.socket.sendto = self._saved["sendto"]  # type: ignore[method-assign]
        socket.getaddrinfo = self._saved["getaddrinfo"]  # type: ignore[assignment]
        socket.create_connection = self._saved["create_connection"]  # type: ignore[assignment]

    def report(self) -> str:
        return "\n".join(f"{w} {where}\n{stack}" for w, where, stack in self.attempts)


# ----- misc ----------------------------------------------------------------------------------------
def wait_for(predicate: Any, timeout: float, every: float = 0.01) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` seconds pass; its last value."""
    end = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() > end:
            return False
        time.sleep(every)
