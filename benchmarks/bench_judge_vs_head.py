"""Cost per chain of the uncertainty head next to the LLM judge, on the same chains in one run.

    python benchmarks/bench_judge_vs_head.py [--model NAME] [--head FOLDER] [--chains chains.jsonl] [--limit 5]

The head's cost is what it adds once the shared capture pass exists: feature extraction
plus the head pass (the ``uhead`` scorer given a cached capture). The judge's cost is the
``judge`` scorer: its own prompts over the same chain (one shared prefix per chain, one
question per step), reading nothing from the capture. The capture pass is timed on its own
and reported too, since a deployment that generates the chain gets it almost for free (the
internals are recorded while generating) but one scoring chains written elsewhere does not.
Target: the head at least 50x cheaper than the judge.

Chains come from --chains (rows from ``generate``, or {problem, steps}), else GSM8K
reference solutions, teacher-forced. Without a trained head the head is an untrained one of
the default size, which costs the same.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
# uhead_viz is imported inside main: it is only importable after the line above.

TARGET = 50.0


def main() -> int:
    from bench_uhead import bench_chains, bench_head

    from uhead_viz.llm import load_llm
    from uhead_viz.scorers import InternalsCache, get_scorer

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None)
    p.add_argument("--head", default=None, help="head folder (default: a matching one in checkpoints/, else untrained)")
    p.add_argument("--chains", default=None, help="JSONL of chains (default: GSM8K reference solutions)")
    p.add_argument("--limit", type=int, default=5, help="number of chains")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    llm = load_llm(args.model)
    head, where = bench_head(llm, args.head)
    chains = bench_chains(llm, args.chains, args.limit)
    if not chains:
        sys.stdout.write("no chains to time\n")
        return 1

    cache = InternalsCache(llm)
    uhead = get_scorer("uhead", llm, head=head, cache=cache)
    judge = get_scorer("judge", llm, cache=cache)
    cache.get(chains[0])
    uhead.score(chains[:1])  # warm-up of the head (allocations); the judge is timed cold on every chain
    cache.clear()

    rows = []
    for c in chains:
        t0 = time.perf_counter()
        cache.get(c)
        t1 = time.perf_counter()
        uhead.score([c])
        t2 = time.perf_counter()
        judge.score([c])
        t3 = time.perf_counter()
        rows.append(
            {"tokens": len(c.ids), "steps": len(c.steps), "capture_s": t1 - t0, "head_s": t2 - t1, "judge_s": t3 - t2}
        )
        sys.stdout.write(
            f"chain {len(rows)}: {len(c.steps)} steps, {len(c.ids)} tokens: capture {t1 - t0:.3f} s, "
            f"features+head {t2 - t1:.4f} s, judge {t3 - t2:.2f} s\n"
        )
        sys.stdout.flush()

    def mean(key: str) -> float:
        return statistics.mean(r[key] for r in rows)

    ratio = mean("judge_s") / mean("head_s")
    ratio_with_capture = mean("judge_s") / (mean("head_s") + mean("capture_s"))
    summary = {
        "model": llm.name,
        "precision": llm.precision,
        "threads": torch.get_num_threads(),
        "head": where,
        "head_mode": head.config.mode,
        "chains": len(rows),
        "mean_steps": round(mean("steps"), 2),
        "mean_chain_tokens": round(mean("tokens"), 1),
        "capture_s_per_chain": round(mean("capture_s"), 4),
        "head_s_per_chain": round(mean("head_s"), 5),
        "judge_s_per_chain": round(mean("judge_s"), 3),
        "judge_over_head": round(ratio, 1),
        "judge_over_head_plus_capture": round(ratio_with_capture, 2),
        "target_judge_over_head": TARGET,
        "target_met": ratio >= TARGET,
    }
    sys.stdout.write(
        f"head (features + head pass, given the capture): {summary['head_s_per_chain']:.4f} s/chain; "
        f"judge: {summary['judge_s_per_chain']:.2f} s/chain -> the head is {ratio:.0f}x cheaper "
        f"(target {TARGET:.0f}x: {'met' if ratio >= TARGET else 'NOT met'}); counting the capture pass too: "
        f"{ratio_with_capture:.1f}x\n"
    )
    sys.stdout.write(json.dumps(summary) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
