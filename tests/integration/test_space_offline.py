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
import subprocess
import sys
import time
from pathlib import Path

import pytest
from proc_support import ServerProcess, free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
QUESTION = "A box holds 6 red pens and twice as many blue pens. How many pens are in the box?"
INSTALL_TIMEOUT_S = 3600
START_TIMEOUT_S = 300
ANSWER_TIMEOUT_S = 2400


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
    server = ServerProcess([str(py), "app.py"], space_env(tmp_path, port), log=tmp_path / "app.log")
    try:
        server.wait_http(f"http://127.0.0.1:{port}/", timeout=START_TIMEOUT_S)
        from gradio_client import Client

        job = Client(f"http://127.0.0.1:{port}/", verbose=False).submit(QUESTION, 96, 0.0, "", api_name="/analyze")
        server.wait_until(lambda: True if job.done() else None, ANSWER_TIMEOUT_S,
                          "loading the model (first use: converting the packs) and answering /analyze", every=2)
        r = job.result()
    finally:
        server.stop()
    assert "error" not in r, f"{r}\n{server.log_tail()}"
    assert r["model"] == "Qwen2.5-Coder-1.5B-Instruct"
    assert r["primary"] == "uhead" and r["head"] == "checkpoints/qwen-coder-1.5b", r
    assert r["steps"] and all(0.0 <= s["scores"]["uhead"] <= 1.0 for s in r["steps"])
    text = json.dumps(r)
    assert str(tmp_path) not in text and str(ROOT) not in text
    assert any((tmp_path / "model-cache" / "models").iterdir()), "the packs were converted into the empty cache"
    print(f"\nspace test: install {t_install:.0f} s, total {time.time() - t0:.0f} s, {len(r['steps'])} steps")
