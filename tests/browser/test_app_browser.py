"""The app in a real browser, on the tiny step-writing model: every view, and bad input on the page."""

from __future__ import annotations

import json

from browser_support import shot, wait_idle

Q = "Natalia sold 48 clips in April and half as many in May. How many clips did she sell?"


_asked = [0]


def ask(page, question: str = Q) -> str:
    """Ask a question made unique, so a wait cannot be satisfied by the previous test's chain."""
    tab(page, "Ask")
    _asked[0] += 1
    question = f"{question} (#{_asked[0]})" if question.strip() else question
    page.fill("#question textarea", question)
    page.click("#solve")
    return question


def tab(page, name: str) -> None:
    page.get_by_role("tab", name=name).click()


def wait_chain(page, question: str, n_steps: int = 3) -> None:
    page.wait_for_function(
        "([q, n]) => { const h = document.querySelector('#chain .uv-question');"
        " return h && h.innerText.includes(q.slice(-6)) && document.querySelector('#chain .uv-answer') &&"
        " document.querySelectorAll('#chain .uv-step[data-p]').length === n &&"
        " !document.querySelector('#chain .uv-progress'); }",
        arg=[question, n_steps],
    )
    wait_idle(page, "#chain")


def assert_no_traceback(page) -> None:
    body = page.inner_text("body")
    assert "Traceback" not in body and 'File "' not in body


def test_ask_streams_a_coloured_chain_with_scores_on_hover(page):
    page.click("#mode label:has-text('Step score')")
    q = ask(page, Q + " <script>window.pwned = 1</script> ${1+1}")
    wait_chain(page, q)
    steps = page.query_selector_all("#chain .uv-step")
    assert len(steps) == 3
    for s in steps:
        style = s.get_attribute("style") or ""
        assert "--uv-bg:rgba(" in style and "--uv-edge:#" in style
        assert 0.0 <= float(s.get_attribute("data-p")) <= 1.0
    # the question is shown as text, never run
    assert page.evaluate("window.pwned") is None
    assert "<script>window.pwned = 1</script> ${1+1}" in page.inner_text("#chain .uv-question")
    # the legend and the model/head status are on the page
    legend = page.inner_text("#chain .uv-legend")  # no head here: a baseline, named a relative score
    assert "relative score" in legend and "probability that the step is wrong" not in legend
    assert "No trained uncertainty head" in page.inner_text("#uv-status")
    steps[1].hover()
    tip = page.wait_for_selector("#chain .uv-step[data-step='1'] .uv-tip", state="visible")
    assert "Min token prob" in tip.inner_text()
    shot(page, "ask")
    assert_no_traceback(page)


def test_token_colouring_toggle(page):
    wait_chain(page, ask(page))
    page.click("#mode label:has-text('Token probability')")
    page.wait_for_selector("#chain .uv-tok")
    assert "surprising token" in page.inner_text("#chain .uv-legend")
    shot(page, "ask-tokens")
    page.click("#mode label:has-text('Token attention')")
    page.wait_for_function("document.querySelector('#chain .uv-legend').innerText.includes('look-back attention')")
    page.click("#mode label:has-text('Step score')")
    page.wait_for_selector("#chain .uv-tok", state="detached")


def test_click_a_step_then_open_its_plots(page):
    page.click("#mode label:has-text('Step score')")
    wait_chain(page, ask(page))
    page.click("#chain .uv-step[data-step='1']")
    page.wait_for_selector("#chain .uv-step.uv-selected[data-step='1']")
    assert "Step 2" in page.inner_text("#detail")
    tab(page, "Why")
    for fig in ("#fig-scores", "#fig-tokens", "#fig-attn", "#fig-attr"):
        page.wait_for_selector(f"{fig} .js-plotly-plot")
    page.wait_for_selector("#fig-attn .heatmaplayer, #fig-attn .hm")
    assert "step 2" in page.inner_text("#fig-attn").lower()
    shot(page, "why")


def test_compare_with_the_llm_judge(page):
    wait_chain(page, ask(page))
    page.click("#verifier-acc .label-wrap")
    page.click("#verifier input")
    page.click("[role=option]:has-text('LLM judge')")
    tab(page, "Compare")
    page.click("#verify")
    page.wait_for_selector("#compare-table th:has-text('Combined')")
    text = page.inner_text("#compare-table")
    assert "disagree" in text or "agree" in text
    page.wait_for_selector("#fig-compare .js-plotly-plot")
    shot(page, "compare")


def test_example_shows_its_stored_result_at_once(page):
    tab(page, "Ask")
    page.click("text=GSM8K: Natalia sold clips")
    page.wait_for_selector("#ask-info:has-text('Stored result')", timeout=20_000)
    assert len(page.query_selector_all("#chain .uv-step[data-p]")) == 3


def test_upload_a_file_and_browse_the_table(page, tmp_path):
    rows = [
        {"id": "pb-1", "problem": Q, "steps": ["48 / 2 = 24 clips in May.", "48 + 24 = 72 clips."], "label": -1},
        {"id": "broken", "problem": Q, "steps": "not a list"},
        {"id": "pb-2", "problem": Q, "steps": ["48 / 2 = 20 clips in May.", "48 + 20 = 68 clips."], "label": 0},
    ]
    f = tmp_path / "chains.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    tab(page, "Analyse a file")
    page.set_input_files("#upload input[type=file]", str(f))
    page.wait_for_selector("#upload :text('chains.jsonl')")
    page.click("#score-file")
    page.wait_for_selector("#file-msg .uv-ok")
    wait_idle(page, "#table")
    msg = page.inner_text("#file-msg")
    assert "Scored 2 chains" in msg and "broken" in msg and "'steps' must be a non-empty list" in msg
    table = page.inner_text("#table .virtual-body")
    assert "pb-1" in table and "pb-2" in table and "wrong" in table
    assert "PR-AUC" in page.inner_text("#report")
    downloads = page.inner_text("#downloads")
    assert "step_scores" in downloads and "scored_chains" in downloads and "evaluation_report" in downloads
    page.locator("#table .body-cell:has-text('pb-2')").first.click()
    page.wait_for_selector("#file-chain .uv-step[data-p]")
    assert "48 + 20 = 68" in page.inner_text("#file-chain")
    shot(page, "file")
    assert_no_traceback(page)


def test_paste_a_chain(page):
    tab(page, "Paste a chain")
    page.fill("#paste-problem textarea", Q)
    page.fill("#paste-steps textarea", "Step 1: 48 / 2 = 24 clips in May.\nStep 2: 48 + 24 = 72 clips.")
    page.fill("#paste-answer input, #paste-answer textarea", "72")
    page.click("#paste-go")
    page.wait_for_selector("#paste-chain .uv-step[data-p]")
    assert len(page.query_selector_all("#paste-chain .uv-step")) == 2
    page.click("#paste-chain .uv-step[data-step='0']")
    page.wait_for_selector("#paste-detail .uv-detail")
    shot(page, "paste")


def test_bad_input_gets_a_clear_message(fresh_page, tmp_path):
    page = fresh_page
    ask(page, "   ")
    page.wait_for_selector("#chain .uv-error:has-text('The question is empty')")
    page.evaluate(
        "() => { const t = document.querySelector('#question textarea'); t.value = 'x'.repeat(100000);"
        " t.dispatchEvent(new Event('input', {bubbles: true})); }"
    )
    page.click("#solve")
    page.wait_for_selector("#chain .uv-error:has-text('100,000 characters')")
    shot(page, "error-question")
    assert_no_traceback(page)
    f = tmp_path / "notes.txt"
    f.write_text("Dear diary,\nthis is not JSON at all.\n")
    tab(page, "Analyse a file")
    page.set_input_files("#upload input[type=file]", str(f))
    page.wait_for_selector("#upload :text('notes.txt')")
    page.click("#score-file")
    page.wait_for_selector("#file-msg .uv-error:has-text('No chains could be read')")
    shot(page, "error-upload")
    assert_no_traceback(page)
    tab(page, "Paste a chain")
    page.fill("#paste-problem textarea", Q)
    page.click("#paste-go")
    page.wait_for_selector("#paste-chain .uv-error:has-text('Paste at least one step')")
    assert_no_traceback(page)
