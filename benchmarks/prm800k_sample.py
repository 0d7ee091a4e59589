"""Write a seeded sample of PRM800K phase-1 test chains (human step labels) as JSONL for `evaluate`.

Each sampled problem contributes its main trajectory (rated steps, none wrong: the raters'
preferred path) and up to ``--branches`` of its rated alternative steps, each as a chain
of the trajectory's steps before it plus the alternative, so the alternative is scored in
its real context (its earlier steps are left unlabelled there: they are rated once, in the
main row). Rows of one problem are written together, main first, so the capture
can run the shared trajectory once and each alternative's own tokens only.

PRM800K's problems are MATH test problems (all 98 are in MATH-500): evaluation only, never training.

    python benchmarks/prm800k_sample.py --problems 25 --branches 10 --out data/eval/prm800k_p1t_sample.jsonl

``--exclude`` leaves out every row id of earlier sets, which gives a fresh set of the rated
alternatives no earlier measurement has read (e.g. all 98 problems, ``--branches 0``,
excluding ``prm800k_p1t_98x10.jsonl``: 2,324 alternatives in 68 problems).
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from uhead_viz.jsonl import read_rows  # noqa: E402
from uhead_viz.labels.human import prm800k_rows  # noqa: E402
from uhead_viz.labels.ratings import add_ratings, rating_table  # noqa: E402

logger = logging.getLogger("prm800k_sample")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="../shared/data/prm800k_phase1_test_stepwise.parquet")
    ap.add_argument("--problems", type=int, default=25)
    ap.add_argument("--branches", type=int, default=10, help="alternative steps per problem (0: all)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="data/eval/prm800k_p1t_sample.jsonl")
    ap.add_argument("--exclude", nargs="*", default=[], help="JSONL sets whose row ids are left out")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    missing = [path for path in args.exclude if not Path(path).is_file()]
    if missing:
        raise SystemExit(f"--exclude: no such file: {', '.join(missing)}")
    seen = {str(r["id"]) for path in args.exclude for _, r, err in read_rows(path) if not err and r}
    rows = [r for r in prm800k_rows(args.data) if r["id"] not in seen]
    by_problem: dict[str, list[dict]] = {}
    for r in rows:
        by_problem.setdefault(r["id"].split("-")[2], []).append(r)
    rng = random.Random(args.seed)
    pids = sorted(by_problem)
    rng.shuffle(pids)
    out = []
    for pid in pids[: args.problems]:
        group = by_problem[pid]
        main_rows = [r for r in group if r["id"].endswith("-main")]
        branches = [r for r in group if not r["id"].endswith("-main") and r["labels"][-1] is not None]
        if args.branches and len(branches) > args.branches:
            branches = rng.sample(branches, args.branches)
        branches.sort(key=lambda r: len(r["steps"]))
        # a branch's earlier steps are the trajectory's, already rated in the main row:
        # leave them unlabelled here so every rated step counts once in the metrics
        branches = [{**r, "labels": [None] * (len(r["steps"]) - 1) + r["labels"][-1:]} for r in branches]
        out += main_rows + branches
    table = rating_table(args.data)  # raw -1/0/+1 per labelled step, for the pairwise metric
    out = [add_ratings(r, table) for r in out]
    n_steps = sum(len(r["steps"]) for r in out)
    n_wrong = sum(x == 1 for r in out for x in r["labels"])
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        for r in out:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    logger.info("Wrote %d chains (%d steps, %d wrong) from %d problems to %s", len(out), n_steps, n_wrong,
                min(args.problems, len(pids)), args.out)


if __name__ == "__main__":
    main()
