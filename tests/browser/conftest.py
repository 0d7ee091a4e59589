"""Browser tests: the app served on a free port, driven in headless Chromium through Playwright.

The browser is Debian's ``chromium`` (``make test`` installs it), started by Playwright with
``executable_path``; Playwright's own browser download is never used. Most tests serve the
app in this process on the tiny step-writing model of ``tests/app_support.py``, so they are
fast; ``test_real_model.py`` starts ``app.py`` itself with the default model. Each view's
screenshot is saved under ``tests/artifacts/`` (git-ignored).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from browser_support import CHROMIUM, TIMEOUT_MS, free_port, shot


def pytest_configure(config):
    config.addinivalue_line("markers", "browser: drives the app in headless Chromium (Debian's chromium)")


def pytest_collection_modifyitems(config, items):
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.browser)


@pytest.fixture(scope="session")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.skip(f"Debian's chromium is not at {CHROMIUM} (make test installs it: apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"],
        )
        yield b
        b.close()


@pytest.fixture(scope="module")
def tiny_app(tmp_path_factory, tokenizer):
    """The app on the tiny model, with stored examples built for it, served on a free port.

    Module-scoped: the environment it sets (its own checkpoints and examples folders) is
    put back as soon as the module's tests are done, before any other test runs."""
    from app_support import make_step_llm

    root = tmp_path_factory.mktemp("app")
    saved = {k: os.environ.get(k) for k in ("UHEAD_VIZ_CHECKPOINTS", "UHEAD_VIZ_EXAMPLES", "GRADIO_ANALYTICS_ENABLED")}
    os.environ["UHEAD_VIZ_CHECKPOINTS"] = str(root / "checkpoints")
    os.environ["UHEAD_VIZ_EXAMPLES"] = str(root / "examples")
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    import app
    from uhead_viz.engine import Engine
    from uhead_viz.ui import examples as ex

    eng = Engine(make_step_llm(tokenizer))
    ex.build(eng, log=lambda *_: None)
    demo = app.build(app.EngineHolder(engine=eng))
    port = free_port()
    app.launch(demo, server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        yield {"url": f"http://127.0.0.1:{port}/", "engine": eng, "root": root}
    finally:
        demo.close()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _open_page(browser, url: str):
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
    pg = ctx.new_page()
    pg.set_default_timeout(TIMEOUT_MS)
    pg.goto(url)
    pg.wait_for_selector("#question textarea")
    yield pg
    ctx.close()


@pytest.fixture(scope="module")
def page(browser, tiny_app):
    """One page for a module's tests (loading Gradio's front end is the costly part on a busy CPU)."""
    yield from _open_page(browser, tiny_app["url"])


@pytest.fixture
def fresh_page(browser, tiny_app):
    """A page of its own, for a test that needs the components in their first state."""
    yield from _open_page(browser, tiny_app["url"])


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.when == "call" and rep.failed:
        page = item.funcargs.get("page") or item.funcargs.get("fresh_page")
        if page is not None:
            try:
                shot(page, f"FAILED-{item.name}")
            except Exception:  # the page may be gone; the failure itself is what matters
                pass
