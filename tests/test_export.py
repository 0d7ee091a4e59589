"""Exporting one chain: the JSON document and the standalone HTML page (no model, no browser)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from test_render import analysis

from uhead_viz.ui import export, render


def test_page_is_standalone_and_shows_the_coloured_chain():
    a = analysis(verifier=True, evil=True)
    page = export.chain_page(a)
    assert page.startswith("<!doctype html>")
    # nothing runs and nothing is fetched: no script, no external reference, a policy that forbids both
    assert "<script" not in page.lower() and "<img" not in page.lower()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    assert "@import" not in page and "url(" not in page
    assert "default-src 'none'" in page
    # the view: coloured steps with their scores, the legend, the how-to panel, every method's score
    assert page.count('class="uv-step') == 3 and page.count("data-p=") == 3
    assert render.heat_hex(0.9) in page and "--uv-bg:rgba(" in page
    assert "uv-legend" in page and "relative score by Min token prob" in page and "How to read this" in page
    table = page[page.index('class="uv-scores"'):]
    assert "LLM judge (self)" in table and "Combined" in table and table.count("<tr>") == 4
    # user and model text stays text
    assert "&lt;script&gt;" in page and "&lt;b&gt;1&lt;/b&gt;" in page


def test_page_of_a_head_chain_marks_its_threshold():
    a = analysis(head=True)
    a["head"] = {"path": "/x/checkpoints/qwen-coder-1.5b", "threshold": 0.5}
    page = export.chain_page(a)
    assert "uv-legend-thr" in page and "probability that the step is wrong, by UHead" in page
    assert "UHead checkpoints/qwen-coder-1.5b, threshold 0.50" in page


def test_json_is_the_analysis_without_app_bookkeeping():
    a = dict(analysis(), _view="ask", example={"id": "gsm8k-natalia"})
    paths = export.export_chain(a, "prob")
    assert paths is not None
    j, h = map(Path, paths)
    assert j.name == "uhead-viz-gsm8k-natalia.json" and h.name == "uhead-viz-gsm8k-natalia.html"
    doc = json.loads(j.read_text(encoding="utf-8"))
    assert "_view" not in doc and doc["exported_at"]
    assert {k: v for k, v in doc.items() if k != "exported_at"} == json.loads(
        json.dumps({k: v for k, v in a.items() if k != "_view"})
    )
    assert 'class="uv-tok"' in h.read_text(encoding="utf-8")  # the page follows the colouring mode
    assert j.parent != h.parent  # each file in a folder of its own


def test_nothing_to_export_and_file_names():
    assert export.export_chain(None) is None
    assert export.export_chain({"question": "q", "steps": []}) is None
    assert export.file_stem({"question": "What is 17 * 23? <b>now</b>"}) == "uhead-viz-what-is-17-23-b-now-b"
    assert export.file_stem({"question": "∑∑"}) == "uhead-viz-chain"


def test_app_exports_go_to_the_visitors_session_folder(tmp_path):
    from uhead_viz.downloads import SessionDownloads

    dl = SessionDownloads(tmp_path / "dl")
    folder = dl.fresh("visitor1", "chain-ask")
    files = dl.fresh("visitor1", "file")  # a scored file's exports do not remove the chain's
    paths = export.export_chain(analysis(), "step", folder)
    assert paths is not None and all(Path(p).parent == folder for p in paths) and files.is_dir()
    dl.end("visitor1")
    assert not any(Path(p).exists() for p in paths)
