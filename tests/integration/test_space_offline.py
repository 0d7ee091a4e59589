"""What a Hugging Face Space does, offline: install ``requirements.txt`` only, run ``python app.py``.

A fresh venv (no system site-packages) gets ``requirements.txt`` through the installer
``make`` uses (it leaves out the PyTorch CPU index where that does not answer, as here);
then ``app.py`` starts with an empty model cache, so the packs are assembled, checked and
converted on the way, and ``/analyze`` through ``gradio_client`` must return steps scored by
the trained head: the head fits the packed weights. The server is polled while the process
is checked to be alive, so a crash fails at once with the log's tail. Minutes: the venv,
the packs' download where they are not cached, the conversion, one short chain.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
QUESTION = "A box holds 6 red pens and twice as many blue pens. How many pens are in the box?"
INSTALL_TIMEOUT_S = 3600
START_TIMEOUT_S = 300
ANSWER_TIMEOUT_S = 2400


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tail(path: Path, n: int = 4000) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")[-n:]
    except OSError:
        return "(no log)"


def space_env(tmp: Path, port: int) -> dict[str, str]:
    """This machine's environment less anything of this project's, as a Space would start it."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("UHEAD_VIZ_") and k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
    env.update(
        UHEAD_VIZ_CACHE=str(tmp / "model-cache"),  # empty: the packs are converted on the way
        GRADIO_SERVER_PORT=str(port),
        GRADIO_ANALYTICS_ENABLED="False",
        HF_HUB_OFFLINE="1",
        OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"),
    )
    return env


def wait_alive(proc: subprocess.Popen, log: Path, until, timeout_s: float, what: str):
    """Poll ``until()`` (a value or None) while the server process lives; fail at once if it dies."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"app.py exited with {proc.returncode} while {what}:\n{tail(log)}")
        got = until()
        if got is not None:
            return got
        time.sleep(2)
    pytest.fail(f"timed out after {timeout_s} s while {what}:\n{tail(log)}")


def test_space_installs_requirements_only_and_scores_with_the_head(tmp_path):
    t0 = time.time()
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    inst = subprocess.run(
        [str(py), str(ROOT / "scripts" / "pip_install.py"), str(ROOT / "requirements.txt")],
        cwd=tmp_path, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S,
    )
    assert inst.returncode == 0, (inst.stdout + inst.stderr)[-4000:]
    freeze = subprocess.run([str(py), "-m", "pip", "freeze"], capture_output=True, text=True, check=True).stdout
    assert "pytest" not in freeze and "torch==2.13.0" in freeze  # the runtime set only
    t_install = time.time() - t0

    port = free_port()
    log = tmp_path / "app.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(py), "app.py"], cwd=ROOT, env=space_env(tmp_path, port),
                                stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:

        def page():
            try:
                with urllib.request.urlopen(url, timeout=5) as r:
                    return r.status
            except OSError:
                return None

        assert wait_alive(proc, log, page, START_TIMEOUT_S, "starting the server") == 200
        from gradio_client import Client

        job = Client(url, verbose=False).submit(QUESTION, 96, 0.0, "", api_name="/analyze")
        wait_alive(proc, log, lambda: True if job.done() else None, ANSWER_TIMEOUT_S,
                   "loading the model (first use: converting the packs) and answering /analyze")
        r = job.result()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
    assert "error" not in r, f"{r}\n{tail(log)}"
    assert r["model"] == "Qwen2.5-Coder-1.5B-Instruct"
    assert r["primary"] == "uhead" and r["head"] == "checkpoints/qwen-coder-1.5b", r
    assert r["steps"] and all(0.0 <= s["scores"]["uhead"] <= 1.0 for s in r["steps"])
    text = json.dumps(r)
    assert str(tmp_path) not in text and str(ROOT) not in text
    assert any((tmp_path / "model-cache" / "models").iterdir()), "the packs were converted into the empty cache"
    print(f"\nspace test: install {t_install:.0f} s, total {time.time() - t0:.0f} s, {len(r['steps'])} steps")
