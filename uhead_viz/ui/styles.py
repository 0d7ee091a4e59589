"""The page's stylesheet and the script that turns a click on a step into a selection.

Kept apart from :mod:`uhead_viz.ui.render`, which writes the HTML these rules style; the
exported chain page (:mod:`uhead_viz.ui.export`) inlines the same stylesheet.
"""

from __future__ import annotations

CSS = """
:root { --uv-radius: 10px; }
.gradio-container { max-width: 1280px !important; margin: 0 auto !important; }
.gradio-container, .gradio-container * { font-family: "Inter", "Segoe UI", system-ui, -apple-system, "Helvetica Neue",
  Arial, sans-serif; }
.uv-title h1 { font-size: 1.9rem; font-weight: 700; letter-spacing: -0.02em; margin: 0.2rem 0 0.1rem; }
.uv-title p { color: var(--body-text-color-subdued); margin: 0; font-size: 1rem; }
.uv-status { display: flex; flex-wrap: wrap; gap: .5rem; align-items: center; margin: .4rem 0 .2rem;
  color: var(--body-text-color-subdued); font-size: .9rem; }
.uv-pill { border: 1px solid var(--border-color-primary); border-radius: 999px; padding: .18rem .7rem;
  background: var(--background-fill-secondary); font-size: .86rem; }
.uv-pill-ok { border-color: #2c7bb6; }
.uv-pill-wait { border-style: dashed; }
.uv-chain { font-size: 1.04rem; line-height: 1.6; display: flex; flex-direction: column; gap: .55rem; }
.uv-question { padding: .6rem .9rem; border-radius: var(--uv-radius); background: var(--background-fill-secondary);
  color: var(--body-text-color); }
.uv-q, .uv-answer span { display: inline-block; font-size: .72rem; text-transform: uppercase; letter-spacing: .08em;
  font-weight: 700; color: var(--body-text-color-subdued); margin-right: .6rem; }
.uv-step { position: relative; display: grid; grid-template-columns: 4.6rem 1fr auto; gap: .6rem; align-items: start;
  padding: .6rem .8rem .6rem .9rem; border-radius: var(--uv-radius); cursor: pointer;
  background: var(--uv-bg, var(--background-fill-secondary));
  border-left: 6px solid var(--uv-edge, var(--border-color-primary));
  transition: background .35s ease, border-color .35s ease, box-shadow .15s ease; outline: none; }
.uv-step:hover, .uv-step:focus-visible { box-shadow: 0 2px 10px rgba(0,0,0,.10); }
.uv-step.uv-selected { box-shadow: 0 0 0 2px var(--uv-edge, #64748b); }
.uv-step.uv-writing { opacity: .62; cursor: default; }
.uv-step.uv-scoring { border-left-style: dashed; }
.uv-num { font-weight: 650; font-size: .82rem; color: var(--body-text-color-subdued); padding-top: .18rem;
  white-space: nowrap; }
.uv-body { white-space: pre-wrap; word-break: break-word; }
.uv-badge { font-variant-numeric: tabular-nums; font-weight: 700; font-size: .82rem; border-radius: 999px;
  padding: .12rem .55rem; align-self: center; }
.uv-badge.uv-wait { background: var(--background-fill-primary); color: var(--body-text-color-subdued);
  font-weight: 500; border: 1px dashed var(--border-color-primary); }
.uv-flag .uv-num::after { content: " ⚑"; color: #d7191c; }
.uv-tip { display: none; position: absolute; z-index: 30; right: .6rem; top: calc(100% - .3rem);
  background: var(--background-fill-primary); border: 1px solid var(--border-color-primary); border-radius: 8px;
  padding: .4rem .6rem; box-shadow: 0 8px 24px rgba(0,0,0,.16); font-size: .85rem; min-width: 14rem; }
.uv-step:hover .uv-tip, .uv-step:focus .uv-tip { display: block; }
.uv-tip table { border-collapse: collapse; width: 100%; margin: 0 !important; border: none !important; }
.uv-tip tr, .uv-tip td { padding: .12rem .3rem; border: none !important; background: transparent !important; }
.uv-tip td:last-child { text-align: right; font-variant-numeric: tabular-nums; font-weight: 600; }
.uv-tip tr.uv-main td { font-weight: 700; }
.uv-tip i { display: inline-block; width: .7rem; height: .7rem; border-radius: 3px; margin-right: .4rem;
  vertical-align: -1px; }
.uv-tok { border-radius: 3px; padding: 0 .5px; }
.uv-caret { display: inline-block; width: .5ch; height: 1.05em; margin-left: 1px; vertical-align: -2px;
  background: currentColor; animation: uv-blink 1s steps(1) infinite; }
@keyframes uv-blink { 50% { opacity: 0; } }
.uv-answer { padding: .55rem .9rem; font-weight: 650; border-radius: var(--uv-radius);
  border: 1px solid var(--border-color-primary); }
.uv-progress { color: var(--body-text-color-subdued); font-size: .9rem; font-style: italic; }
.uv-legend { margin-top: 1rem; max-width: 34rem; font-size: .84rem; color: var(--body-text-color-subdued); }
.uv-legend-title { margin-bottom: .3rem; font-weight: 600; color: var(--body-text-color); }
.uv-legend-bar { height: 12px; border-radius: 6px; }
.uv-legend-ticks, .uv-legend-ends { display: flex; justify-content: space-between; font-variant-numeric: tabular-nums; }
.uv-legend-ends { font-style: italic; }
.uv-legend-note { margin-top: .2rem; }
.uv-key { display: flex; flex-wrap: wrap; gap: .4rem 1.6rem; align-items: flex-start; }
.uv-key .uv-legend { flex: 1 1 20rem; }
.uv-legend-bar { position: relative; }
.uv-legend-thr { position: absolute; top: -4px; bottom: -4px; width: 3px; margin-left: -1.5px; border-radius: 2px;
  background: var(--body-text-color); box-shadow: 0 0 0 1px var(--background-fill-primary); }
.uv-legend-bar.uv-has-thr { margin-top: 1.35rem; }
.uv-legend-thr-label { position: absolute; bottom: 15px; transform: translateX(-50%); white-space: nowrap;
  font-size: .76rem; font-weight: 600; color: var(--body-text-color); background: var(--background-fill-primary);
  padding: 0 .25rem; border-radius: 4px; }
.uv-howto { flex: 1 1 16rem; max-width: 40rem; margin-top: 1rem; font-size: .86rem;
  color: var(--body-text-color-subdued); }
.uv-howto summary { cursor: pointer; font-weight: 600; color: var(--body-text-color); }
.uv-howto-body p { margin: .35rem 0 0; line-height: 1.45; }
.uv-notice { display: flex; gap: .55rem; align-items: baseline; padding: .6rem .85rem; border-radius: var(--uv-radius);
  margin: .3rem 0; font-size: .95rem; line-height: 1.45; }
.uv-notice.uv-error { background: rgba(215,25,28,.10); border: 1px solid rgba(215,25,28,.45); }
.uv-notice.uv-warn { background: rgba(253,174,97,.16); border: 1px solid rgba(253,174,97,.7); }
.uv-notice.uv-info { background: rgba(44,123,182,.08); border: 1px solid rgba(44,123,182,.35); }
.uv-notice.uv-ok { background: rgba(26,152,80,.08); border: 1px solid rgba(26,152,80,.35); }
.uv-icon { font-weight: 700; }
.uv-empty { color: var(--body-text-color-subdued); padding: 1.4rem; text-align: center;
  border: 1px dashed var(--border-color-primary); border-radius: var(--uv-radius); }
.uv-detail { padding: .7rem .9rem; border-radius: var(--uv-radius); border: 1px solid var(--border-color-primary);
  background: var(--background-fill-secondary); }
.uv-detail-head { font-size: 1rem; margin-bottom: .25rem; }
.uv-detail-text { color: var(--body-text-color-subdued); margin-bottom: .45rem; }
.uv-chips { display: flex; flex-wrap: wrap; gap: .4rem; }
.uv-chip { display: inline-block; border-radius: 999px; padding: .12rem .6rem; font-size: .84rem;
  font-variant-numeric: tabular-nums; font-weight: 600; }
.uv-chip b { color: inherit !important; }
.uv-detail p { margin: .5rem 0 0; font-size: .92rem; }
.uv-compare table, .uv-report table { width: 100%; border-collapse: collapse; font-size: .93rem; }
.uv-compare th, .uv-compare td, .uv-report th, .uv-report td { padding: .45rem .6rem;
  border-bottom: 1px solid var(--border-color-primary); text-align: left; }
.uv-compare table, .uv-report table, .uv-compare th, .uv-compare td, .uv-report th, .uv-report td {
  border-left: none !important; border-right: none !important; border-top: none !important; }
.uv-compare th, .uv-report th { font-weight: 650; color: var(--body-text-color-subdued); font-size: .82rem;
  text-transform: uppercase; letter-spacing: .04em; }
.uv-compare tr.uv-disagree { background: rgba(253,174,97,.16); }
.uv-flagcell { color: #b45309; font-weight: 600; white-space: nowrap; }
.uv-agree { color: var(--body-text-color-subdued); }
.uv-summary { color: var(--body-text-color-subdued); margin: .2rem 0 .6rem; }
.uv-stepcell { max-width: 34rem; }
.uv-hint { color: var(--body-text-color-subdued); font-size: .9rem; }
/* the tab bar sizes to the page, not to its buttons, so on a phone Gradio moves the tabs that do
   not fit into its "…" menu instead of widening the whole page */
.tab-wrapper > .tab-container { contain: inline-size; }
"""

# Clicking a step selects it (the Python side gets {"step": k}); Enter does the same.
STEP_CLICK_JS = """
element.addEventListener('click', (e) => {
  const s = e.target.closest('[data-step]');
  if (s && !s.classList.contains('uv-writing')) trigger('click', {step: Number(s.dataset.step)});
});
element.addEventListener('keydown', (e) => {
  const s = e.target.closest('[data-step]');
  if (s && e.key === 'Enter') trigger('click', {step: Number(s.dataset.step)});
});
"""
