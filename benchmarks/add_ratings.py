"""Add PRM800K's raw step ratings (``ratings``: -1, 0, +1 per labelled step) to chain JSONL files.

    python benchmarks/add_ratings.py data/eval/prm800k_p1t_*.jsonl [--parquet PATH] [--out-dir DIR]

Rows are matched to the stepwise parquet by their text (see ``uhead_viz/labels/ratings.py``),
so sets written before the field existed gain it; without ``--out-dir`` the files are
rewritten in place (atomically), every other field and the row order unchanged. A labelled
step with no rating in the parquet, or a rating that contradicts its label, stops the script.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from uhead_viz.jsonl import read_rows  # noqa: E402
from uhead_viz.labels.ratings import add_ratings, rating_table  # noqa: E402

PARQUET = Path(__file__).resolve().parents[2] / "shared" / "data" / "prm800k_phase1_test_stepwise.parquet"
logger = logging.getLogger("add_ratings")


def _consistent(label: int | None, rating: int | None) -> bool:
    if label is None or rating is None:
        return label is None and rating is None
    if rating == 0:
        return True  # neutral: fine or wrong, as the set was built
    return label == (1 if rating < 0 else 0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="+")
    ap.add_argument("--parquet", default=str(PARQUET))
    ap.add_argument("--out-dir", default=None, help="write annotated copies here instead of rewriting in place")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    table = rating_table(args.parquet)
    for path in map(Path, args.files):
        rows = []
        for line, row, err in read_rows(path):
            if err or row is None:
                raise SystemExit(f"{path} line {line}: {err}")
            out = add_ratings(row, table)
            bad = [k for k, (y, r) in enumerate(zip(out["labels"], out["ratings"])) if not _consistent(y, r)]
            if bad:
                raise SystemExit(f"{path} line {line} ({row.get('id')}): steps {bad}: no rating matches the label")
            rows.append(out)
        dest = Path(args.out_dir) / path.name if args.out_dir else path
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(dest.name + ".tmp")
        tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
        os.replace(tmp, dest)
        counts = {v: sum(x == v for r in rows for x in r["ratings"]) for v in (-1, 0, 1)}
        logger.info("%s: %d rows; ratings -1: %d, 0: %d, +1: %d", dest, len(rows), counts[-1], counts[0], counts[1])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
