"""The server fixtures fail at once, with the log, when the process they wait on has died."""

from __future__ import annotations

import os
import sys
import time

import pytest
from proc_support import ServerProcess, free_port


def test_dead_server_fails_at_once_with_log_tail():
    code = "import sys, time; print('loading the model'); sys.stdout.flush(); time.sleep(0.3); sys.exit(139)"
    server = ServerProcess([sys.executable, "-c", code], dict(os.environ))
    t0 = time.monotonic()
    try:
        with pytest.raises(pytest.fail.Exception) as err:
            server.wait_http(f"http://127.0.0.1:{free_port()}/", timeout=120)
    finally:
        server.stop()
    assert time.monotonic() - t0 < 30  # not the 120 s timeout
    msg = str(err.value)
    assert "exit status 139" in msg and "loading the model" in msg


def test_live_server_is_waited_for_until_it_answers():
    port = free_port()
    code = f"import http.server as h; h.HTTPServer(('127.0.0.1', {port}), h.SimpleHTTPRequestHandler).serve_forever()"
    server = ServerProcess([sys.executable, "-c", code], dict(os.environ))
    try:
        body = server.wait_http(f"http://127.0.0.1:{port}/", timeout=60)
    finally:
        server.stop()
    assert "<html" in body.lower() or "directory listing" in body.lower()


def test_probe_timeout_reports_what_was_awaited():
    server = ServerProcess([sys.executable, "-c", "import time; time.sleep(60)"], dict(os.environ))
    try:
        with pytest.raises(pytest.fail.Exception, match="waiting for the answer"):
            server.wait_until(lambda: None, timeout=1, what="waiting for the answer", every=0.1)
    finally:
        server.stop()
    assert server.proc.poll() is not None
