"""Is one method's step PR-AUC (or pairwise accuracy) really above another's? A paired bootstrap over problems.

Held-out sets here are small, so a gap of a few hundredths can be noise. Whole problems are
resampled with replacement, every method on the same resamples (``uhead_viz/compare.py``):
per method PR-AUC and, where the rows hold rated alternatives to the same step, pairwise
accuracy, each with a 95 % interval, and for each method against the first one the
difference's interval and how often it came out ahead.

A method is read from ``evaluate``'s score cache (``<report>.scores.jsonl``) as
``LABEL=CACHE:METHOD`` or ``LABEL=CACHE:METHOD@BY`` (BY picks one producer, e.g. a head's
fingerprint suffix, when a cache holds several), or named bare as one of the trivial
baselines (``step_index``, ``chars_so_far``, ``is_last_step``), computed from the rows:

    python benchmarks/bootstrap_compare.py --data data/eval/prm800k_p1t_fresh20.jsonl \\
        uhead=runs/b.scores.jsonl:uhead seqprob=runs/b.scores.jsonl:seqprob step_index chars_so_far
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from uhead_viz.jsonl import read_rows  # noqa: E402

logger = logging.getLogger("bootstrap_compare")


def load_scores(spec: str) -> tuple[str, dict[str, list[float]]]:
    """``LABEL=CACHE:METHOD[@BY]`` -> (label, row id -> step scores); the last matching line wins."""
    label, _, rest = spec.partition("=")
    cache, _, method = rest.rpartition(":")
    method, _, by = method.partition("@")
    if not label or not cache or not method:
        raise SystemExit(f"Bad scorer {spec!r}: use LABEL=CACHE:METHOD or LABEL=CACHE:METHOD@BY")
    out: dict[str, list[float]] = {}
    for _, row, err in read_rows(cache):
        if err or row is None or row.get("method") != method or "scores" not in row:
            continue
        if by and by not in str(row.get("by")):
            continue
        out[str(row["id"])] = row["scores"]
    if not out:
        raise SystemExit(f"No scores of method {method!r}{' by ' + by if by else ''} in {cache}")
    return label, out


def main() -> int:
    from uhead_viz.compare import paired_bootstrap
    from uhead_viz.selection import TRIVIAL, trivial_scores

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="labelled JSONL the scores belong to (id, problem, labels)")
    ap.add_argument(
        "scorers", nargs="+", help="LABEL=CACHE:METHOD[@BY] or a trivial baseline; the first is the reference"
    )
    ap.add_argument("--rounds", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="also write the result as JSON here")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    rows = [r for _, r, err in read_rows(args.data) if r is not None and not err]
    cached = {}
    for spec in args.scorers:
        if "=" in spec:
            label, sc = load_scores(spec)
            cached[label] = sc
        elif spec not in TRIVIAL:
            raise SystemExit(f"Bad scorer {spec!r}: use LABEL=CACHE:METHOD[@BY] or one of {', '.join(TRIVIAL)}")
    rows = [r for r in rows if all(str(r["id"]) in sc for sc in cached.values())]
    if not rows:
        raise SystemExit("No row of --data is scored by every cache")
    for r in rows:  # evaluate scores the steps up to the last labelled one
        n = max((i for i, x in enumerate(r["labels"]) if x is not None), default=-1) + 1
        if n < len(r["steps"]):
            r["answer"] = None  # cut before its end, the chain has no last step (as in evaluate)
        r["labels"], r["steps"] = r["labels"][:n], r["steps"][:n]
    scores = {}
    for spec in args.scorers:
        if "=" in spec:
            label = spec.partition("=")[0]
            scores[label] = [cached[label][str(r["id"])][: len(r["labels"])] for r in rows]
        else:
            scores[spec] = trivial_scores(rows, spec)
    result = paired_bootstrap(rows, scores, args.rounds, args.seed)
    logger.info("%d chains of %d problems (%d alternative pairs); %d resamples", result["n_chains"],
                result["n_problems"], result["n_pairs"], args.rounds)
    ref = result["reference"]
    lines = [
        f"| method | PR-AUC [95 %] | minus {ref} [95 %] | ahead | pairwise [95 %] | minus {ref} [95 %] | ahead |",
        "|---|---|---|---|---|---|---|",
    ]

    def cell(e: dict, key: str) -> str:
        if key not in e:
            return "n/a | | "
        d = e.get(f"{key}_minus_{ref}")
        head = f"{e[key]:.3f} [{e[key + '_ci95'][0]:.3f}, {e[key + '_ci95'][1]:.3f}]"
        if not d:
            return head + " | | "
        return f"{head} | {d['point']:+.3f} [{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}] | {d['share_ahead']:.0%}"

    for name, e in result["methods"].items():
        lines.append(f"| {name} | {cell(e, 'pr_auc')} | {cell(e, 'pairwise')} |")
    sys.stdout.write("\n".join(lines) + "\n")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
