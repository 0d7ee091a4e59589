"""End to end with the real default model: `python app.py` as `make run` starts it, driven in Chromium.

Slow (the model loads, then writes a chain on the CPU), so marked ``integration`` too. With
``UHEAD_VIZ_SCREENSHOT_DIR`` set, the Ask view is also saved there as ``screenshot-ask.png``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from browser_support import ARTIFACTS, shot, wait_idle
from proc_support import app_process, free_port

pytestmark = pytest.mark.integration

QUESTION = "Tom has 3 boxes with 12 pencils in each box. He gives away 10 pencils. How many pencils does he have left?"
LOAD_S = 900
ANSWER_S = 900


def save_ask_screenshot(page, folder: Path) -> Path:
    """Save the Ask view with its coloured chain as ``folder/screenshot-ask.png``.

    Set ``UHEAD_VIZ_SCREENSHOT_DIR`` to get it: the README shows this picture
    (``assets/screenshot-ask.png``), and only a run on the real model makes an honest one.
    """
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "screenshot-ask.png"
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(path), full_page=True)
    return path


@pytest.fixture(scope="module")
def real_app():
    port = free_port()
    env = dict(os.environ, GRADIO_SERVER_PORT=str(port), HF_HUB_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False")
    for k in ("UHEAD_VIZ_CHECKPOINTS", "UHEAD_VIZ_EXAMPLES", "UHEAD_VIZ_MODEL"):  # as `make run` would: defaults
        env.pop(k, None)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with app_process(env, log=ARTIFACTS / "real-app.log") as server:
        url = f"http://127.0.0.1:{port}/"
        server.wait_http(url, timeout=300)
        yield server, url


def test_real_model_end_to_end(browser, real_app):
    server, url = real_app
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = ctx.new_page()
    page.set_default_timeout(ANSWER_S * 1000)
    try:
        page.goto(url)
        page.wait_for_selector("#question textarea")
        server.wait_selector(page, "#uv-status .uv-pill:has-text('Model:')", LOAD_S, "loading the model")
        status = page.inner_text("#uv-status")
        assert "Qwen2.5-Coder-1.5B-Instruct" in status
        page.fill("#question textarea", QUESTION)
        t0 = time.time()
        page.click("#solve")
        # the first step coloured while the rest streams
        server.wait_selector(page, "#chain .uv-step[data-p]", ANSWER_S, "answering the first question")
        first_coloured = time.time() - t0
        server.wait_selector(page, "#chain .uv-answer", ANSWER_S, "finishing the chain")
        wait_idle(page, "#chain")
        steps = page.query_selector_all("#chain .uv-step")
        assert len(steps) >= 2
        assert all(s.get_attribute("data-p") for s in steps)
        assert "Traceback" not in page.inner_text("body")
        shot(page, "real-model-ask")
        if os.environ.get("UHEAD_VIZ_SCREENSHOT_DIR"):  # the README's picture of the Ask view
            saved = save_ask_screenshot(page, Path(os.environ["UHEAD_VIZ_SCREENSHOT_DIR"]))
            assert saved.stat().st_size > 0
        steps[0].click()
        page.get_by_role("tab", name="Why").click()
        page.wait_for_selector("#fig-attn .js-plotly-plot")
        n_layers = page.evaluate("document.querySelector('#fig-attn .js-plotly-plot').data[0].z.length")
        assert n_layers == 28  # Qwen2.5-1.5B's layers
        shot(page, "real-model-why")
        print(f"first step coloured {first_coloured:.1f} s after submit (under this machine's load)")
    finally:
        ctx.close()

    from gradio_client import Client

    from uhead_viz.ui.examples import EXAMPLES

    # an example question: answered from its stored result when `make examples` was run for this model
    r = Client(url, verbose=False).predict(EXAMPLES[0]["question"], api_name="/analyze")
    assert r["steps"] and all(r["primary"] in s["scores"] for s in r["steps"])
    assert r["model"] == "Qwen2.5-Coder-1.5B-Instruct"
