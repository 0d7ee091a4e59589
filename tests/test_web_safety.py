"""The web surface: PRM allow-list, no server paths in answers, per-session downloads, the fair model
lock, and no request left waiting on a loader or generation thread that died."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import gradio as gr
import pytest
import torch
from app_support import installed_engine, last, page_handlers

from uhead_viz import allowlist
from uhead_viz.capture import CaptureSpec
from uhead_viz.downloads import SessionDownloads
from uhead_viz.engine import _next_event
from uhead_viz.errors import InputError
from uhead_viz.modellock import ModelLock
from uhead_viz.public import REPO, scrub, shown_path
from uhead_viz.scorers import SCORERS
from uhead_viz.uhead import UHead, save_head
from uhead_viz.ui import holder as holder_mod
from uhead_viz.ui.base import NO_VERIFIER, PRM, error_html
from uhead_viz.ui.holder import EngineHolder

Q = "Natalia sold 48 clips in April and half as many in May. How many clips did she sell?"
HOME = os.path.expanduser("~")


def server_paths(text: str, *extra: Path) -> list[str]:
    """The server's own absolute locations that appear in ``text``."""
    roots = [str(REPO), HOME, "/tmp/", *(str(p) for p in extra)]
    return [r for r in roots if r and r in text]


@pytest.fixture
def engine(tokenizer, tmp_path):
    with installed_engine(tokenizer, tmp_path) as eng:
        yield eng


@pytest.fixture
def ui(engine):
    return page_handlers(engine)


@pytest.fixture
def spy_prm_lookup(monkeypatch):
    """Record any attempt to resolve a PRM (a folder on disk or a hub download)."""
    from uhead_viz.scorers import prm

    calls: list[str] = []

    def resolve(model_id, trust_remote_code=False):
        calls.append(model_id)
        raise AssertionError("a refused PRM must not be looked up")

    monkeypatch.setattr(prm, "resolve_folder", resolve)
    return calls


# ----- allow-list ---------------------------------------------------------------------------------
@pytest.mark.parametrize("verifier", ["prm:/etc", "prm:~/.cache", "prm:../checkpoints", "prm:./x/y",
                                      "prm:skywork:/etc", "prm:C:\\models\\prm", "prm:" + str(REPO)])
def test_api_refuses_a_path_without_reading_it(engine, ui, spy_prm_lookup, verifier):
    r = ui.analyze(Q, max_new_tokens=80, verifier=verifier)
    assert set(r) == {"error", "steps"} and r["steps"] == []
    assert "not accepted here" in r["error"]
    assert not server_paths(r["error"]) and "/etc" not in r["error"] and ".cache" not in r["error"]
    assert spy_prm_lookup == [] and engine._verifiers == {}
    assert verifier not in SCORERS


def test_api_refuses_an_unlisted_hub_id(engine, ui, spy_prm_lookup, monkeypatch):
    monkeypatch.setenv(allowlist.ENV, "Skywork/Skywork-o1-Open-PRM-Qwen-2.5-1.5B")
    r = ui.analyze(Q, max_new_tokens=80, verifier="prm:someone/any-model")
    assert "not on this server's list" in r["error"] and "Skywork/Skywork-o1-Open-PRM-Qwen-2.5-1.5B" in r["error"]
    assert r["steps"] == [] and spy_prm_lookup == [] and engine._verifiers == {}


def test_api_refuses_a_verifier_of_another_kind(engine, ui, spy_prm_lookup):
    r = ui.analyze(Q, max_new_tokens=80, verifier="combined:prm:/etc")
    assert "verifier must be" in r["error"] and not server_paths(r["error"]) and "/etc" not in r["error"]


def test_prm_box_refuses_paths_and_unlisted_ids(engine, ui, spy_prm_lookup):
    p = ui.page
    a = last(ui.ask(Q, 80, 0.0, NO_VERIFIER, "", False, "Step score"))[p.ask_state]
    for box in ("/etc", "~/.cache", "../../", "nobody/unlisted"):
        msg = ui.run_verifier(a, "ask", PRM, box, "Step score", None)[p.verify_msg]
        assert "uv-error" in msg and not server_paths(msg)
    html = last(ui.ask(Q, 80, 0.0, PRM, "~/.cache", True, "Step score"))[p.chain]
    assert "not accepted here" in html and not server_paths(html)
    assert spy_prm_lookup == [] and engine._verifiers == {}


def test_allow_list_from_env_or_file():
    assert "Skywork/Skywork-o1-Open-PRM-Qwen-2.5-1.5B" in allowlist.allowed_prms()  # prm_allowlist.txt
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(allowlist.ENV, " owner/prm-1.5b , /srv/models/prm, ../x/y ,")
        assert allowlist.allowed_prms() == ["owner/prm-1.5b"]  # a listed path is ignored, not trusted
        assert allowlist.web_verifier("prm:owner/prm-1.5b") == "prm:owner/prm-1.5b"
        assert allowlist.web_verifier("prm:skywork: owner/prm-1.5b") == "prm:skywork:owner/prm-1.5b"
        assert allowlist.web_verifier(" judge ") == "judge" and allowlist.web_verifier("") is None
        with pytest.raises(InputError, match="not accepted here"):
            allowlist.web_verifier("prm:/srv/models/prm")
        mp.setenv(allowlist.ENV, "")
        with pytest.raises(InputError, match="offers no PRM"):
            allowlist.web_verifier("prm:owner/prm-1.5b")


# ----- no server paths ----------------------------------------------------------------------------
def test_analyze_names_the_head_without_its_server_path(engine, ui, tmp_path):
    torch.manual_seed(0)
    head = UHead.for_llm(engine.llm, CaptureSpec(window=4, top_k=3), d_model=16, n_layers=1, n_heads=2, d_ff=32)
    save_head(head.eval(), tmp_path / "checkpoints" / "tiny-head")
    assert engine.refresh_head(force=True) and engine.head is not None
    r = ui.analyze(Q, max_new_tokens=80)
    assert r["primary"] == "uhead" and r["head"] == "tiny-head"
    assert not server_paths(json.dumps(r), tmp_path)
    status = ui.holder.status_html()
    assert "tiny-head" in status and not server_paths(status, tmp_path)


def test_no_head_note_names_no_server_folder(engine, ui, tmp_path):
    r = ui.analyze(Q, max_new_tokens=80)
    assert r["head"] is None
    status = ui.holder.status_html()
    assert not server_paths(status, tmp_path) and not server_paths(json.dumps(engine.status()), tmp_path)


def test_stored_examples_hold_no_server_path():
    for f in sorted((REPO / "assets" / "examples").glob("*.json")):
        text = f.read_text(encoding="utf-8")
        assert not server_paths(text), f.name
        assert json.loads(text)["head"]["path"] in (None, "checkpoints/qwen-coder-1.5b")


def test_shown_path_and_scrub():
    assert shown_path(REPO / "checkpoints" / "qwen-coder-1.5b") == "checkpoints/qwen-coder-1.5b"
    assert shown_path("/srv/secret/heads/h7") == "h7"
    assert scrub("no head in /srv/secret/checkpoints or ~/.cache/x.") == "no head in checkpoints or x."
    assert scrub("48 / 2 = 24, 1/2, owner/name, https://example.org/a/b") == (
        "48 / 2 = 24, 1/2, owner/name, https://example.org/a/b"
    )


def test_a_failed_model_load_is_reported_at_once_without_paths(monkeypatch):
    def fail(name, device=None):
        raise OSError(f"no file {HOME}/.cache/uhead_viz/models/x/config.json")

    monkeypatch.setattr(holder_mod, "load_llm", fail)
    holder = EngineHolder(name="qwen-coder-1.5b")
    t0 = time.perf_counter()
    with pytest.raises(InputError) as e:
        holder.get()  # starts the loader itself
    assert time.perf_counter() - t0 < 10
    assert "config.json" in str(e.value) and HOME + "/" not in error_html(e.value)
    assert HOME + "/" not in holder.status_html()


def test_a_dead_loader_thread_is_reported_not_waited_on():
    holder = EngineHolder(name="qwen-coder-1.5b")
    holder._thread = threading.Thread(target=lambda: None)  # a loader that ended without a word
    holder._thread.start()
    holder._thread.join()
    t0 = time.perf_counter()
    with pytest.raises(InputError, match="stopped without a result"):
        holder.get()
    assert time.perf_counter() - t0 < 5


def test_a_dead_generation_thread_is_reported_not_waited_on():
    import queue

    events: queue.Queue = queue.Queue()
    th = threading.Thread(target=lambda: events.put({"x": 1}))  # one event, never the end marker
    th.start()
    th.join()
    assert _next_event(events, th, poll_s=0.05) == {"x": 1}
    with pytest.raises(RuntimeError, match="stopped without a result"):
        _next_event(events, th, poll_s=0.05)


# ----- downloads ----------------------------------------------------------------------------------
def test_session_downloads_are_separate_replaced_and_removed(tmp_path):
    dl = SessionDownloads(tmp_path / "dl", max_age_s=60)
    a, b = dl.fresh("sess-a"), dl.fresh("../sess-b")
    (a / "x.csv").write_text("1")
    (b / "y.csv").write_text("2")
    assert a.parent == b.parent == tmp_path / "dl"  # "../" cannot leave the root
    assert sorted(dl.sessions()) == ["___sess-b", "sess-a"]
    a2 = dl.fresh("sess-a")
    assert a2 == a and list(a2.iterdir()) == []  # the session's previous exports are gone
    dl.end("sess-a")
    assert not a.exists() and b.exists()
    os.utime(b, (time.time() - 120, time.time() - 120))
    assert dl.expire() == 1 and not b.exists()


def test_score_upload_writes_exports_per_session_and_unload_removes_them(engine, tmp_path):
    ui = page_handlers(engine, downloads=SessionDownloads(tmp_path / "dl"))
    f = tmp_path / "rows.jsonl"
    f.write_text(json.dumps({"id": "a", "problem": Q, "steps": ["48 / 2 = 24", "48 + 24 = 72"]}) + "\n")
    req = gr.Request(session_hash="visitor1")
    files = last(ui.score_upload(str(f), req))[ui.page.downloads]
    d = tmp_path / "dl" / "visitor1"
    assert files and all(Path(p).parent == d / "file" for p in files)  # the file's exports, beside a chain's
    rows = [json.loads(ln) for ln in Path(files[1]).read_text().splitlines()]
    assert not server_paths(json.dumps(rows), tmp_path)
    ui.end_session(req)
    assert not d.exists()


# ----- the fair lock ------------------------------------------------------------------------------
def _wait_until(cond, timeout=10.0):
    t0 = time.perf_counter()
    while not cond():
        assert time.perf_counter() - t0 < timeout, "timed out"
        time.sleep(0.005)


def test_a_waiting_request_goes_before_the_background_jobs_next_piece():
    lock, order = ModelLock(), []
    lock.acquire(background=True)  # the file job is scoring a chain

    def job_next_chain():
        with lock.background():
            order.append("chain")

    def question():
        with lock:
            order.append("question")

    bg = threading.Thread(target=job_next_chain)
    bg.start()
    _wait_until(lambda: lock.waiting(background=True) == 1)
    fg = threading.Thread(target=question)
    fg.start()
    _wait_until(lambda: lock.waiting() == 1)
    lock.release()  # the chain in progress ends
    bg.join(10)
    fg.join(10)
    assert order == ["question", "chain"]


def test_foreground_requests_are_served_in_arrival_order():
    lock, order = ModelLock(), []
    lock.acquire()
    threads = []
    for i in range(4):
        t = threading.Thread(target=lambda i=i: (lock.acquire(), order.append(i), lock.release()))
        t.start()
        threads.append(t)
        _wait_until(lambda n=i + 1: lock.waiting() == n)
    lock.release()
    for t in threads:
        t.join(10)
    assert order == [0, 1, 2, 3]


def test_lock_timeout_and_release_errors():
    lock = ModelLock()
    assert lock.acquire(timeout=0.01)
    assert not lock.acquire(timeout=0.01) and not lock.acquire(blocking=False, background=True)
    assert lock.waiting() == 0
    lock.release()
    with pytest.raises(RuntimeError):
        lock.release()


def test_a_pasted_chain_goes_between_the_chains_of_a_scored_file(engine, tmp_path):
    f = tmp_path / "rows.jsonl"
    f.write_text("".join(json.dumps({"id": f"r{i}", "problem": Q, "steps": ["48 / 2 = 24", "48 + 24 = 72"]}) + "\n"
                         for i in range(4)))
    order: list[str] = []
    engine.lock.acquire()  # a question is running

    def file_job():
        for done, _total, _rows, _errors in engine.score_file(f):
            if done:
                order.append(f"chain{done}")

    def paste():
        engine.analyze_pasted(Q, "48 / 2 = 24\n48 + 24 = 72", "72")
        order.append("paste")

    fj = threading.Thread(target=file_job)
    fj.start()
    _wait_until(lambda: engine.lock.waiting(background=True) == 1)
    pj = threading.Thread(target=paste)
    pj.start()
    _wait_until(lambda: engine.lock.waiting() == 1)
    engine.lock.release()
    fj.join(60)
    pj.join(60)
    assert order[0] == "paste" and order[1:] == ["chain1", "chain2", "chain3", "chain4"]
