"""Write the PRM800K phase-1 test chains as ProcessBench JSON, for ``python -m uhead_viz evaluate``.

    python benchmarks/convert_prm800k.py [OUT.json] [--parquet PATH] [--neutral-as 0|1|none] [--limit N]

Chains are rebuilt from the stepwise parquet by ``prm800k_rows`` (see uhead_viz/labels/human.py
for how, and what the counts are) and turned into ProcessBench rows by ``to_processbench``
(``label`` = first wrong step, -1 if none). All 3,201 chains make a file of several MB, so
the default output is under /tmp; do not commit it.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PARQUET = Path(__file__).resolve().parents[2] / "shared" / "data" / "prm800k_phase1_test_stepwise.parquet"
DEFAULT_OUT = Path("/tmp/prm800k_phase1_test_processbench.json")


def main() -> int:
    from uhead_viz.labels.human import prm800k_rows, to_processbench

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", nargs="?", default=str(DEFAULT_OUT), help=f"output JSON (default {DEFAULT_OUT})")
    p.add_argument("--parquet", default=str(PARQUET))
    p.add_argument("--neutral-as", default="0", choices=["0", "1", "none"], help="label of neutral (0) ratings")
    p.add_argument("--limit", type=int, default=0, help="only the first N chains")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    neutral = None if args.neutral_as == "none" else int(args.neutral_as)
    rows = to_processbench(prm800k_rows(args.parquet, neutral_as=neutral))
    if args.limit:
        rows = rows[: args.limit]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, ensure_ascii=False) + "\n", encoding="utf-8")
    n_err = sum(r["label"] >= 0 for r in rows)
    sys.stdout.write(
        f"wrote {len(rows)} chains ({n_err} with an error, {len(rows) - n_err} without) to {out}, "
        f"{out.stat().st_size / 1e6:.1f} MB\n"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
