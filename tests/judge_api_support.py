"""A real local HTTP server that fakes an OpenAI-compatible chat-completions judge.

Shared by the API judge tests (``tests/test_api_judge.py``) and the robustness suite. The
server runs in a thread on 127.0.0.1 (port 0). Each request takes the first matching
``rules`` entry (a substring of the request's messages and a behaviour, applied every time,
or ``times`` times),
else pops the next ``script`` entry, else answers like a judge: a critique to the first call
and the verdict list to the second. A behaviour may set a status, a delay, a raw body, reply
text or headers.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

CRITIQUE = "Step 1: correct, 48 / 2 = 24.\nStep 2: incorrect, 48 + 24 is 72, not 70.\nStep 3: correct.\nStep 4: fine."
VERDICTS = json.dumps([{"step": i, "correct": ok} for i, ok in enumerate([True, False, True, True], start=1)])


class FakeAPI:
    """Scripted chat-completions behaviour plus a record of every request received."""

    def __init__(self) -> None:
        self.script: list[dict[str, Any]] = []
        self.rules: list[tuple[str, dict[str, Any]]] = []
        self.requests: list[dict[str, Any]] = []
        self.verdicts = VERDICTS
        self.lock = threading.Lock()
        self.base_url = ""

    def next_action(self, record: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            self.requests.append({**record, "t": time.monotonic()})
            text = json.dumps(record["body"].get("messages", []), ensure_ascii=False)
            for needle, act in self.rules:
                if needle in text and act.get("times", 1) > 0:
                    if "times" in act:
                        act["times"] -= 1
                    return act
            return self.script.pop(0) if self.script else {}

    def reply_text(self, body: dict[str, Any]) -> str:
        last = body["messages"][-1]["content"]
        if "JSON list" not in last:
            return CRITIQUE
        if self.verdicts is not None:
            return self.verdicts
        n = int(last.split("exactly ", 1)[1].split()[0])  # the verdict prompt says how many steps
        return json.dumps([{"step": i, "correct": i != 2} for i in range(1, n + 1)])


class Handler(BaseHTTPRequestHandler):
    server: Any

    def do_POST(self) -> None:  # noqa: N802 (the name http.server calls)
        api: FakeAPI = self.server.api
        raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = json.loads(raw)
        act = api.next_action({"path": self.path, "headers": dict(self.headers.items()), "body": body})
        try:
            if "sleep" in act:
                time.sleep(act["sleep"])
            status = act.get("status", 200)
            if "raw" in act:
                payload = act["raw"]
            elif status != 200:
                payload = json.dumps({"error": {"message": f"scripted {status}"}})
            else:
                content = act.get("content", api.reply_text(body))
                choice = {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
                payload = json.dumps({"object": "chat.completion", "model": body["model"], "choices": [choice]})
            data = payload.encode("utf-8")
            self.send_response(status)
            for k, v in act.get("headers", {}).items():
                self.send_header(k, v)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout test)
            pass

    def log_message(self, *args: Any) -> None:
        pass


class Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # a handler still sleeping after a client timeout must not hold up teardown


@contextmanager
def serve() -> Iterator[FakeAPI]:
    """Run a fake judge server for the block; yields its FakeAPI (``base_url`` set)."""
    fake = FakeAPI()
    server = Server(("127.0.0.1", 0), Handler)
    server.api = fake
    fake.base_url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


JUDGE_ENV_VARS = [
    "UHEAD_VIZ_JUDGE_BASE_URL",
    "UHEAD_VIZ_JUDGE_MODEL",
    "UHEAD_VIZ_JUDGE_API_KEY",
    "OPENAI_BASE_URL",
    "OPENAI_API_KEY",
    "UHEAD_VIZ_JUDGE_TIMEOUT",
    "UHEAD_VIZ_JUDGE_ATTEMPTS",
    "UHEAD_VIZ_JUDGE_BACKOFF",
]


def isolate_judge_env(monkeypatch) -> None:
    """Clear the judge's settings and any proxy, so a test reaches only its local fake server."""
    for var in JUDGE_ENV_VARS + ["http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"]:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
