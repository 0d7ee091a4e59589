"""One chain out of the app: as JSON, and as a standalone HTML page that opens offline.

The JSON is the analysis itself (what the app holds and the stored examples are), so
nothing the view showed is lost. The page is the chain as the app draws it (coloured
steps, badges, hover tooltips, the legend and its "How to read this" panel) plus a table
of every method's score per step. It carries its own CSS and no script at all; a
Content-Security-Policy forbids loading anything, so it looks the same offline, in a
mail attachment or years later.

Every file is written by ``write_download``: where downloads go is decided there only.
"""

from __future__ import annotations

import json
import re
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..methods import method_label
from ..results import Analysis
from . import render, styles
from .render import esc, fmt


def write_download(name: str, text: str, folder: Path | None = None) -> str:
    """Write one file for the browser to download and return its path: into ``folder`` (the
    app passes the visitor's session folder, removed when the page closes), else into a fresh
    temporary folder per call, so two people exporting at once never overwrite each other's file."""
    d = folder if folder is not None else Path(tempfile.gettempdir()) / "uhead_viz_downloads" / uuid.uuid4().hex[:12]
    d.mkdir(parents=True, exist_ok=True)
    p = d / name
    p.write_text(text, encoding="utf-8")
    return str(p)


def file_stem(analysis: dict[str, Any]) -> str:
    """A readable file name for a chain: its example id, else the question's first words."""
    ex = analysis.get("example") or {}
    base = ex.get("id") or " ".join(str(analysis.get("question") or "chain").split()[:8])
    slug = re.sub(r"[^A-Za-z0-9]+", "-", base).strip("-").lower()[:48].strip("-")
    return f"uhead-viz-{slug or 'chain'}"


def chain_document(analysis: dict[str, Any]) -> dict[str, Any]:
    """The analysis as exported JSON: everything but the app's own bookkeeping (keys starting with ``_``)."""
    rec = Analysis.from_record(analysis).to_record()
    doc = {k: v for k, v in rec.items() if not k.startswith("_")}
    doc["exported_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    return doc


# The app's page takes these from the Gradio theme; a standalone page defines them itself.
PAGE_CSS = """
:root { color-scheme: light dark; --body-text-color: #1f2937; --body-text-color-subdued: #64748b;
  --background-fill-primary: #ffffff; --background-fill-secondary: #f1f5f9; --border-color-primary: #d5dbe3; }
@media (prefers-color-scheme: dark) {
  :root { --body-text-color: #e5e7eb; --body-text-color-subdued: #9ca3af; --background-fill-primary: #0f172a;
    --background-fill-secondary: #1e293b; --border-color-primary: #334155; }
}
* { box-sizing: border-box; }
body { margin: 0; background: var(--background-fill-primary); color: var(--body-text-color);
  font-family: "Inter", "Segoe UI", system-ui, -apple-system, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 960px; margin: 0 auto; padding: 1.2rem 1rem 2.5rem; }
h1 { font-size: 1.45rem; margin: 0 0 .3rem; letter-spacing: -0.01em; }
h2 { font-size: 1.05rem; margin: 1.6rem 0 .5rem; }
.uv-meta { color: var(--body-text-color-subdued); font-size: .9rem; margin-bottom: 1rem; }
.uv-meta span + span::before { content: " · "; }
.uv-scores { overflow-x: auto; }
.uv-scores table { border-collapse: collapse; font-size: .9rem; min-width: 100%; }
.uv-scores th, .uv-scores td { padding: .35rem .5rem; border-bottom: 1px solid var(--border-color-primary);
  text-align: left; vertical-align: top; }
.uv-scores th { font-size: .78rem; text-transform: uppercase; letter-spacing: .04em;
  color: var(--body-text-color-subdued); }
footer { margin-top: 2rem; color: var(--body-text-color-subdued); font-size: .82rem; }
"""

CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"


def _meta(analysis: dict[str, Any]) -> str:
    bits = []
    model = analysis.get("model") or {}
    if model.get("name"):
        bits.append(f"Model {model['name']}" + (f" ({model['precision']})" if model.get("precision") else ""))
    head = analysis.get("head")
    primary = analysis.get("primary", "uhead")
    if head:
        where = "/".join(str(head.get("path") or "in memory").replace("\\", "/").split("/")[-2:])
        bits.append(f"UHead {where}, threshold {fmt(head.get('threshold', analysis.get('threshold')))}")
    else:
        bits.append(f"no trained head: coloured by {method_label(primary)}")
    v = analysis.get("verifier") or {}
    if v.get("label"):
        bits.append(f"verifier {v['label']}")
    bits.append(f"exported {time.strftime('%Y-%m-%d %H:%M')}")
    return '<div class="uv-meta">' + "".join(f"<span>{esc(b)}</span>" for b in bits) + "</div>"


def scores_table(analysis: dict[str, Any]) -> str:
    """Every method's score per step, each on the page's colour scale, the colouring method first."""
    steps = analysis.get("steps") or []
    if not steps:
        return ""
    primary = analysis.get("primary", "uhead")
    methods = [primary] + [m for m in steps[0].get("scores") or {} if m != primary]
    vlabel = (analysis.get("verifier") or {}).get("label")
    names = [vlabel if m == "verifier" and vlabel else method_label(m) for m in methods]
    head = "".join(f"<th>{esc(n)}</th>" for n in names)
    rows = []
    for k, s in enumerate(steps):
        cells = []
        for m in methods:
            v = (s.get("scores") or {}).get(m)
            if v is None:
                cells.append("<td>–</td>")
                continue
            cells.append(render._chip_td(render._clamp01(v)))
        rows.append(f"<tr><td><b>{k + 1}</b> {esc(render._short(s.get('body', ''), 80))}</td>{''.join(cells)}</tr>")
    return (
        '<div class="uv-scores"><table><thead><tr><th>Step</th>' + head + "</tr></thead><tbody>"
        + "".join(rows) + "</tbody></table></div>"
    )


def chain_page(analysis: dict[str, Any], mode: str = "step") -> str:
    """The chain as a self-contained HTML page: inline CSS, no script, nothing fetched."""
    q = render._short(analysis.get("question") or "a chain", 80)
    view = {k: v for k, v in analysis.items() if k != "live"}
    return (
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>uhead-viz: {esc(q)}</title><style>{PAGE_CSS}{styles.CSS}</style></head>"
        f"<body><main><h1>uhead-viz</h1>{_meta(analysis)}"
        f"{render.chain_html(view, mode)}"
        f"<h2>Every score, step by step</h2>{scores_table(analysis)}"
        "<footer>Exported from uhead-viz. Hover a step (or focus it with Tab) for its scores.</footer>"
        "</main></body></html>\n"
    )


def export_chain(
    analysis: dict[str, Any] | None, mode: str = "step", folder: Path | None = None
) -> tuple[str, str] | None:
    """Write the chain as JSON and as a page; their paths, or None when there is no scored chain."""
    if not analysis or not analysis.get("steps"):
        return None
    stem = file_stem(analysis)
    doc = json.dumps(chain_document(analysis), ensure_ascii=False, indent=1) + "\n"
    return (
        write_download(f"{stem}.json", doc, folder),
        write_download(f"{stem}.html", chain_page(analysis, mode), folder),
    )


def add_download_buttons(
    state: Any,
    mode: Any,
    mode_of: Callable[[str | None], str],
    prefix: str,
    folder_for: Callable[[str | None, str], Path] | None = None,
) -> tuple[Any, Any]:
    """Two download buttons (JSON, HTML page) for the chain in ``state``, made again whenever it or
    the colouring ``mode`` changes, hidden while there is none. Call inside a Blocks layout.

    ``folder_for(session, part)`` gives the visitor's session folder for these files."""
    import gradio as gr

    with gr.Row(elem_classes="uv-export"):
        js = gr.DownloadButton("Download JSON", visible=False, size="sm", variant="secondary",
                               elem_id=f"{prefix}-dl-json")
        page = gr.DownloadButton("Download HTML page", visible=False, size="sm", variant="secondary",
                                 elem_id=f"{prefix}-dl-html")

    def update(a: dict[str, Any] | None, mode_label: str | None, request: gr.Request = None) -> tuple[Any, Any]:
        if not a or not a.get("steps"):
            paths = None
        else:
            session = getattr(request, "session_hash", None)
            folder = folder_for(session, f"chain-{prefix}") if folder_for is not None else None
            paths = export_chain(a, mode_of(mode_label), folder)
        if paths is None:
            return gr.DownloadButton(value=None, visible=False), gr.DownloadButton(value=None, visible=False)
        return gr.DownloadButton(value=paths[0], visible=True), gr.DownloadButton(value=paths[1], visible=True)

    update.__annotations__["request"] = gr.Request  # gradio is imported here only; let it see the type
    gr.on([state.change, mode.change], update, [state, mode], [js, page], api_visibility="private",
          show_progress="hidden")
    return js, page
