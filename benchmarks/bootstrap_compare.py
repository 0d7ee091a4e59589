"""Is one scorer's step PR-AUC really above another's? A bootstrap over problems.

Held-out sets here are small (set (b) has 114 wrong steps in 25 problems), so a PR-AUC gap
of a few hundredths can be noise. This resamples whole problems with replacement (the
steps of one problem are not independent) and reports, per scorer, PR-AUC with a 95 %
interval, and for each scorer against the first one the interval of the difference and
how often it came out ahead.

Scores are read from ``evaluate``'s score caches (``<report>.scores.jsonl``). A scorer is
named ``LABEL=CACHE:METHOD`` or ``LABEL=CACHE:METHOD@BY`` where BY picks one producer (a
head's ``by`` field, e.g. its fingerprint suffix) when a cache holds several:

    python benchmarks/bootstrap_compare.py --data data/eval/prm800k_p1t_sample.jsonl \\
        uhead=runs/b.scores.jsonl:uhead minprob=runs/b.scores.jsonl:minprob
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
from pathlib import Path

from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from uhead_viz import metrics  # noqa: E402
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
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="labelled JSONL the scores belong to (id, problem, labels)")
    ap.add_argument("scorers", nargs="+", help="LABEL=CACHE:METHOD[@BY]; the first is the reference")
    ap.add_argument("--rounds", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="also write the result as JSON here")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    rows = [r for _, r, err in read_rows(args.data) if r is not None and not err]
    scored = [load_scores(s) for s in args.scorers]
    rows = [r for r in rows if all(str(r["id"]) in sc for _, sc in scored)]
    for r in rows:  # evaluate scores the steps up to the last labelled one
        r["labels"] = r["labels"][: len(scored[0][1][str(r["id"])])]
    by_problem: dict[str, list[dict]] = {}
    for r in rows:
        by_problem.setdefault(str(r.get("problem")), []).append(r)
    problems = list(by_problem)
    logger.info(
        "%d chains of %d problems scored by all of: %s", len(rows), len(problems), ", ".join(x for x, _ in scored)
    )

    def pr(sample: list[str]) -> list[float]:
        rs = [r for p in sample for r in by_problem[p]]
        labels = [r["labels"] for r in rs]
        return [metrics.pr_auc(labels, [sc[str(r["id"])] for r in rs]) for _, sc in scored]

    point = pr(problems)
    rng = random.Random(args.seed)
    draws = [
        pr([rng.choice(problems) for _ in problems]) for _ in tqdm(range(args.rounds), desc="bootstrap", unit="round")
    ]

    def ci(xs: list[float]) -> tuple[float, float]:
        xs = sorted(xs)
        return xs[int(0.025 * len(xs))], xs[int(0.975 * len(xs)) - 1]

    result = {"n_chains": len(rows), "n_problems": len(problems), "rounds": args.rounds, "scorers": {}}
    ref = scored[0][0]
    for j, (name, _) in enumerate(scored):
        entry = {"pr_auc": point[j], "ci95": ci([d[j] for d in draws])}
        if j:
            diffs = [d[j] - d[0] for d in draws]
            entry[f"minus_{ref}"] = {
                "point": point[j] - point[0],
                "ci95": ci(diffs),
                "share_ahead": sum(x > 0 for x in diffs) / len(diffs),
            }
        result["scorers"][name] = entry
    lines = [
        f"| scorer | PR-AUC | 95 % interval | minus {ref} | 95 % interval | ahead of {ref} |",
        "|---|---|---|---|---|---|",
    ]
    for name, e in result["scorers"].items():
        d = e.get(f"minus_{ref}")
        extra = (
            f"{d['point']:+.3f} | [{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}] | {d['share_ahead']:.0%}" if d else "| |"
        )
        lines.append(f"| {name} | {e['pr_auc']:.3f} | [{e['ci95'][0]:.3f}, {e['ci95'][1]:.3f}] | {extra} |")
    logger.info("%s", "\n".join(lines))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
