"""Exported pages, shareable links, a phone-width view and the dark theme, in headless Chromium.

The app is the tiny step-writing model's (the ``tiny_app`` fixture); each view's screenshot
goes under pytest's tmp folder, and to ``$UHEAD_VIZ_SCREENSHOT_DIR`` when that is set.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator
from urllib.parse import quote

import pytest
from browser_support import TIMEOUT_MS, shot_to, wait_idle

from uhead_viz.ui import render
from uhead_viz.ui.examples import EXAMPLES

EXAMPLE = EXAMPLES[0]
N_STEPS = 3  # the tiny model's script


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    return tmp_path_factory.mktemp("screenshots")


@contextlib.contextmanager
def opened(browser, url: str, **context) -> Iterator:
    ctx = browser.new_context(**{"viewport": {"width": 1400, "height": 1000}, **context})
    page = ctx.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    try:
        page.goto(url)
        yield page
    finally:
        ctx.close()


def wait_scored_chain(page, n: int = N_STEPS) -> None:
    page.wait_for_function(
        "(n) => document.querySelectorAll('#chain .uv-step[data-p]').length === n"
        " && document.querySelector('#chain .uv-answer') && !document.querySelector('#chain .uv-progress')",
        arg=n,
    )
    wait_idle(page, "#chain")


def link_value(page) -> str:
    page.wait_for_function("() => document.querySelector('#share-link textarea, #share-link input').value !== ''")
    return page.eval_on_selector("#share-link textarea, #share-link input", "e => e.value")


def no_horizontal_overflow(page) -> None:
    widths = page.evaluate(
        "() => ({doc: document.documentElement.scrollWidth, body: document.body.scrollWidth,"
        " view: window.innerWidth})"
    )
    assert widths["doc"] <= widths["view"] and widths["body"] <= widths["view"], widths


def test_the_html_export_opens_offline_and_shows_the_coloured_chain(browser, tiny_app, shots, tmp_path):
    with opened(browser, tiny_app["url"]) as page:
        page.fill("#question textarea", "Natalia sold 48 clips in April and half as many in May. How many? (export)")
        page.click("#solve")
        wait_scored_chain(page)
        page.wait_for_selector("#ask-dl-html", state="visible")
        with page.expect_download() as dl:
            page.click("#ask-dl-html")
        html_path = tmp_path / dl.value.suggested_filename
        dl.value.save_as(html_path)
        with page.expect_download() as dl:
            page.click("#ask-dl-json")
        json_path = tmp_path / dl.value.suggested_filename
        dl.value.save_as(json_path)
    assert html_path.suffix == ".html" and json_path.suffix == ".json"
    doc = json.loads(json_path.read_text(encoding="utf-8"))
    assert len(doc["steps"]) == N_STEPS and "(export)" in doc["question"] and "_view" not in doc
    assert "<script" not in html_path.read_text(encoding="utf-8").lower()

    with opened(browser, "about:blank", offline=True, viewport={"width": 1000, "height": 900}) as page:
        requests: list[str] = []
        page.on("request", lambda r: requests.append(r.url))
        page.goto(html_path.as_uri())
        steps = page.query_selector_all(".uv-step[data-p]")
        assert len(steps) == N_STEPS
        for s in steps:  # each step on the colour of its own score
            edge = _rgb(s.evaluate("e => getComputedStyle(e).borderLeftColor"))
            want = render.heat_rgb(float(s.get_attribute("data-p")))  # data-p is rounded to 2 places
            assert max(abs(a - b) for a, b in zip(edge, want)) <= 6, (edge, want)
            assert s.evaluate("e => getComputedStyle(e).backgroundColor").startswith("rgba(")
        badges = [float(b.inner_text()) for b in page.query_selector_all(".uv-step .uv-badge")]
        assert badges == [float(s.get_attribute("data-p")) for s in steps]
        assert "relative score" in page.inner_text(".uv-legend")
        assert page.query_selector_all(".uv-scores tbody tr") and "(export)" in page.inner_text(".uv-question")
        steps[0].hover()
        page.wait_for_selector(".uv-step[data-step='0'] .uv-tip", state="visible")
        page.click(".uv-howto summary")
        assert page.is_visible(".uv-howto-body")
        assert requests == [html_path.as_uri()]  # the page alone: nothing else was asked for
        shot_to(page, "export-html", shots)


def test_example_link_opens_the_stored_example_at_once(browser, tiny_app, shots):
    url = f"{tiny_app['url']}?example={EXAMPLE['id']}"
    with opened(browser, url) as page:
        page.wait_for_selector("#ask-info:has-text('Stored result')", timeout=30_000)
        wait_scored_chain(page)
        assert page.input_value("#question textarea") == EXAMPLE["question"]
        assert link_value(page) == url  # the link to this chain is the one that opened it
        shot_to(page, "link-example", shots)


def test_unknown_example_link_says_which_exist(browser, tiny_app):
    with opened(browser, f"{tiny_app['url']}?example=nope") as page:
        page.wait_for_selector("#ask-info .uv-warn:has-text('nope')")
        assert EXAMPLE["id"] in page.inner_text("#ask-info")
        assert not page.query_selector("#chain .uv-step")


def test_question_link_fills_in_the_question_and_runs_it(browser, tiny_app, shots):
    question = "Tom has 3 boxes of 12 pencils & gives 10 away. How many are left? (link)"
    with opened(browser, f"{tiny_app['url']}?q={quote(question, safe='')}") as page:
        wait_scored_chain(page)
        assert page.input_value("#question textarea") == question
        assert question in page.inner_text("#chain .uv-question")
        link = link_value(page)
        assert link.startswith(tiny_app["url"] + "?q=") and quote(question, safe="") in link
        shot_to(page, "link-question", shots)


def test_phone_width_has_no_horizontal_overflow(browser, tiny_app, shots):
    url = f"{tiny_app['url']}?example={EXAMPLE['id']}"
    phone = {"viewport": {"width": 390, "height": 844}, "device_scale_factor": 2, "is_mobile": True,
             "has_touch": True}
    with opened(browser, url, **phone) as page:
        wait_scored_chain(page)
        page.click("#chain .uv-howto summary")
        page.wait_for_selector("#chain .uv-howto-body", state="visible")
        page.wait_for_selector("#ask-dl-html", state="visible")
        no_horizontal_overflow(page)
        shot_to(page, "phone-ask", shots)
        page.click("#chain .uv-step[data-step='1']")
        for name, ready in (("Why", "#fig-attn .js-plotly-plot"), ("Compare", "#fig-compare .js-plotly-plot"),
                            ("Analyse a file", "#score-file"), ("Paste a chain", "#paste-go"), ("API", "pre")):
            open_tab(page, name)
            page.wait_for_selector(ready, state="visible")
            no_horizontal_overflow(page)
            if name == "Why":
                shot_to(page, "phone-why", shots)


def open_tab(page, name: str) -> None:
    """Click a tab, through Gradio's "…" menu when it does not fit in the bar."""
    tab = page.get_by_role("tab", name=name)
    if tab.count() and tab.is_visible():
        tab.click()
    else:
        page.click(".overflow-menu > button")
        page.click(f".overflow-dropdown button:has-text('{name}')")
    page.wait_for_selector(f"[role=tab][aria-selected=true]:has-text('{name}')")


def _rgb(css: str) -> tuple[float, ...]:
    return tuple(float(x) for x in re.findall(r"[\d.]+", css))


def _luminance(rgb: tuple[float, ...]) -> float:
    def lin(c: float) -> float:
        c /= 255
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = rgb[:3]
    return 0.2126 * lin(r) + 0.7152 * lin(g) + 0.0722 * lin(b)


def _contrast(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    hi, lo = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


# the colour an element's text is drawn on: its own background and its ancestors', composited
EFFECTIVE_BG_JS = """(el) => {
  const layers = [];
  for (let e = el; e; e = e.parentElement) layers.push(getComputedStyle(e).backgroundColor);
  let out = [255, 255, 255];
  for (const c of layers.reverse()) {
    const v = c.match(/[\\d.]+/g).map(Number);
    const a = v.length > 3 ? v[3] : 1;
    out = out.map((x, i) => a * v[i] + (1 - a) * x);
  }
  return out;
}"""


def test_dark_theme_keeps_the_chain_readable(browser, tiny_app, shots):
    with opened(browser, f"{tiny_app['url']}?__theme=dark&example={EXAMPLE['id']}") as page:
        wait_scored_chain(page)
        assert page.evaluate("document.body.classList.contains('dark')")
        chain_bg = tuple(page.eval_on_selector("#chain", EFFECTIVE_BG_JS))
        assert _luminance(chain_bg) < 0.1  # a dark page under the chain
        for s in page.query_selector_all("#chain .uv-step"):
            bg = tuple(s.evaluate(EFFECTIVE_BG_JS))
            fg = _rgb(s.eval_on_selector(".uv-body", "e => getComputedStyle(e).color"))
            assert _contrast(fg, bg) >= 4.5, (fg, bg)  # WCAG AA for body text
        for sel in ("#chain .uv-legend-title", "#chain .uv-howto summary", "#chain .uv-question"):
            fg = _rgb(page.eval_on_selector(sel, "e => getComputedStyle(e).color"))
            assert _contrast(fg, tuple(page.eval_on_selector(sel, EFFECTIVE_BG_JS))) >= 4.5, sel
        page.click("#chain .uv-howto summary")
        shot_to(page, "dark-ask", shots)
