"""How many stored labels a labeler would change: relabel labelled JSONL files and count the differences.

    python benchmarks/relabel_diff.py [--labeler reference] [--references TRAIN.jsonl TEST.jsonl] [FILES...]

Each row is labelled again with the current code (the reference solution found by question in
the ``--references`` files, as ``label`` does) and compared with its stored ``labels``. Prints,
per file and in total: chains whose labels change, steps whose label changes, and each kind of
change (``0->None``, ``None->1``...), so a labeler fix can be judged by what it moves.
"""

from __future__ import annotations

import argparse
import glob
import json
import logging
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from uhead_viz.cli_train import load_references  # noqa: E402
from uhead_viz.jsonl import read_rows  # noqa: E402
from uhead_viz.labels import get_labeler  # noqa: E402
from uhead_viz.steps import Chain  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
FILES = ["data/labels/gsm8k_train/*.jsonl", "data/labels/gsm8k_train_other/*.jsonl", "data/labels/eval/*.jsonl"]


def diff_file(path: Path, labeler, refs: dict[str, str]) -> dict:
    """Counts for one file: rows, changed rows, steps, changed steps, and the changes by kind."""
    kinds: Counter = Counter()
    rows = changed_rows = steps = 0
    for _, row, err in read_rows(path):
        if err or row is None or not isinstance(row.get("labels"), list):
            continue
        question = str(row.get("question") or row.get("problem") or "").strip()
        ref = row.get("reference") or refs.get(question)
        answer = row.get("answer")
        chain = Chain(question, list(row["steps"]), answer if isinstance(answer, str) else None, "", [], [], [])
        new = labeler.label(chain, ref).labels
        rows += 1
        steps += len(new)
        moved = [f"{a}->{b}" for a, b in zip(row["labels"], new) if a != b]
        changed_rows += bool(moved)
        kinds.update(moved)
    return {"rows": rows, "changed_rows": changed_rows, "steps": steps, "changed_steps": sum(kinds.values()),
            "changes": dict(kinds.most_common())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="*", default=FILES)
    ap.add_argument("--labeler", default="reference")
    ap.add_argument("--references", nargs="*", default=[str(DATA / "gsm8k" / "train.jsonl"),
                                                        str(DATA / "gsm8k" / "test.jsonl")])
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    refs: dict[str, str] = {}
    for path in args.references:
        refs.update(load_references(path))
    labeler = get_labeler(args.labeler)
    total: Counter = Counter()
    kinds: Counter = Counter()
    for pattern in args.files:
        for path in sorted(glob.glob(pattern)):
            got = diff_file(Path(path), labeler, refs)
            print(json.dumps({"file": path, **got}))
            total.update({k: v for k, v in got.items() if k != "changes"})
            kinds.update(got["changes"])
    print(json.dumps({"file": "total", **dict(total), "changes": dict(kinds.most_common())}))


if __name__ == "__main__":
    main()
