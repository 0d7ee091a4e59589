"""How quickly the app shows a chain: first step after submit, and each step's colour after its text.

    .venv/bin/python benchmarks/bench_app.py [--model NAME] [--n 3] [--max-new-tokens 320]

Loads the model (the default unless ``--model``/``UHEAD_VIZ_MODEL``) and the head the app
would use, warms it as the app does, then runs each question through the app's streaming
path (``Engine.stream`` and the HTML renderer, exactly what the page receives) and times:

* first step: submit -> the first update that shows step 1's text (target 2 s);
* colour latency: for every step, the moment its text is complete (its newline has been
  written) -> the first update where it is coloured (target 0.5 s). A last step that the
  chain ends without an ``Answer:`` line is coloured by the final pass; it is listed apart;
* the final teacher-forced pass and, with ``--verifier judge``, the verifier.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from uhead_viz.engine import Engine  # noqa: E402
from uhead_viz.llm import load_llm  # noqa: E402
from uhead_viz.steps import split_text  # noqa: E402
from uhead_viz.ui import render  # noqa: E402

QUESTIONS = [
    "A bakery sells muffins for $3 each and cookies for $1.50 each. On Monday it sold 24 muffins and twice as many "
    "cookies. How much money did the bakery make on Monday?",
    "Tom reads 12 pages of a book every day. The book has 180 pages and he has already read for 5 days. How many "
    "more days does he need to finish the book?",
    "A garden has 4 rows of 15 tulips and 3 rows of 12 roses. Half of all the flowers are cut for a market. How "
    "many flowers are left in the garden?",
]


def complete_times(raw_by_time: list[tuple[float, str]], n_steps: int) -> list[float | None]:
    """For each step, the first time its text was followed by a newline."""
    out: list[float | None] = [None] * n_steps
    for t, raw in raw_by_time:
        regions, _, _ = split_text(raw)
        for k, r in enumerate(regions[:n_steps]):
            if out[k] is None and r.end < len(raw) and raw[r.end] == "\n":
                out[k] = t
    return out


def run_one(eng: Engine, q: str, max_new_tokens: int, verifier: str | None) -> dict:
    t0 = time.perf_counter()
    first_step = None
    raws: list[tuple[float, str]] = []
    coloured: dict[int, float] = {}
    final_t = verified_t = None
    analysis = None
    for ev in eng.stream(q, max_new_tokens=max_new_tokens, verifier=verifier):
        now = time.perf_counter() - t0
        if ev["phase"] == "stream":
            view = ev["view"]
            render.chain_html(view)  # what the page receives, rendered as the app does
            if first_step is None and view["steps"] and view["steps"][0]["body"].strip():
                first_step = now
            if not view.get("finalising"):
                raws.append((now, view["raw"]))
            for s in view["steps"]:
                if s["scores"] is not None and s["index"] not in coloured:
                    coloured[s["index"]] = now
        elif ev["phase"] == "final":
            final_t, analysis = now, ev["analysis"]
        else:
            verified_t, analysis = now, ev["analysis"]
    n = len(analysis["steps"])
    done = complete_times(raws, n)
    lat = [coloured[k] - done[k] for k in range(n) if k in coloured and done[k] is not None]
    prim = analysis["primary"]
    live = analysis.get("live_scores") or []
    diff = [abs(live[k][prim] - analysis["steps"][k]["scores"][prim]) for k in range(min(len(live), n))]
    return {
        "steps": n,
        "tokens": len(analysis["row"]["ids"]),
        "first_step_s": first_step,
        "colour_latency_s": lat,
        "live_coloured": len(coloured),
        "generate_s": analysis["timing"]["generate_s"],
        "final_pass_s": analysis["timing"]["final_s"],
        "final_at_s": final_t,
        "verifier_s": (verified_t - final_t) if verified_t and final_t else None,
        "answer": analysis["answer"],
        "live_vs_final": max(diff) if diff else None,
        "primary": prim,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None)
    ap.add_argument("--n", type=int, default=3)
    ap.add_argument("--max-new-tokens", type=int, default=320)
    ap.add_argument("--verifier", default=None, help="judge, or prm:<hub id>; default none")
    args = ap.parse_args()
    t0 = time.perf_counter()
    eng = Engine(load_llm(args.model))
    t_load = time.perf_counter() - t0
    eng.warm()
    t_warm = time.perf_counter() - t0 - t_load
    print(f"model {eng.llm.name} ({eng.llm.precision}); head: {eng.hs.path or 'none (' + eng.hs.note + ')'}; "
          f"colour: {eng.primary}")
    print(f"load {t_load:.1f} s, warm-up (template KV cache) {t_warm:.1f} s")
    firsts, lats = [], []
    for i, q in enumerate(QUESTIONS[: args.n]):
        r = run_one(eng, q, args.max_new_tokens, args.verifier)
        firsts.append(r["first_step_s"])
        lats += r["colour_latency_s"]
        lat = ", ".join(f"{x:.2f}" for x in r["colour_latency_s"])
        print(
            f"[{i + 1}] {r['steps']} steps, {r['tokens']} tokens, answer {r['answer']!r}: first step "
            f"{r['first_step_s']:.2f} s; colour after text, per step: [{lat}] s "
            f"({r['live_coloured']}/{r['steps']} coloured live); generation {r['generate_s']:.1f} s, "
            f"final pass {r['final_pass_s']:.1f} s"
            + (f", verifier {r['verifier_s']:.1f} s" if r["verifier_s"] is not None else "")
            + (f"; live vs final {r['primary']} max |diff| {r['live_vs_final']:.4f}" if r["live_vs_final"] is not None
               else "")
        )
    print(
        f"first step after submit: max {max(firsts):.2f} s, median {statistics.median(firsts):.2f} s (target 2 s: "
        f"{'met' if max(firsts) <= 2 else 'MISSED'})"
    )
    if lats:
        print(
            f"step colour after its text: max {max(lats):.2f} s, median {statistics.median(lats):.2f} s over "
            f"{len(lats)} steps (target 0.5 s: {'met' if max(lats) <= 0.5 else 'MISSED'})"
        )


if __name__ == "__main__":
    main()
