"""PRM800K label counts, and how well the offline labelers (``checks``, ``reference``) agree with the human labels.

    python benchmarks/label_stats.py [--data PARQUET] [--neutral-as 0|1|none]

Imports the PRM800K phase-1 test chains (``uhead_viz.labels.human.prm800k_rows``), prints
chain / step / wrong-step counts, then labels every chain with each labeler and compares on
the steps both label: coverage (share of human-rated steps the labeler labels), accuracy,
F1 on wrong steps and Cohen's kappa. The reference is the MATH-500 solution with its gold
answer. Two settings:

- ``arithmetic only``: chains built with ``answer=None`` and no reference, so only the
  arithmetic check speaks (it can only say "wrong", so kappa is ~0 by construction and
  accuracy is the precision of its flags);
- ``with answers``: chains that end in a stated answer (PRM800K's ``answer`` column) are
  checked against the MATH-500 gold answer of their problem, which adds the answer rules
  (0 for steps of correct chains, the last-step guess); unfinished chains keep no reference,
  since a chain cut before its answer is not a wrong answer.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sklearn.metrics import accuracy_score, cohen_kappa_score, f1_score  # noqa: E402

from uhead_viz.labels import get_labeler  # noqa: E402
from uhead_viz.labels.human import prm800k_rows  # noqa: E402
from uhead_viz.steps import Chain  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def agreement(rows: list[dict], refs: dict[str, str] | None, name: str = "checks") -> dict[str, float]:
    """Label each row's chain with labeler ``name`` and compare with its human labels where both label."""
    labeler = get_labeler(name)
    human, auto = [], []
    rated = 0
    for row in rows:
        answer = row.get("answer") if refs is not None else None
        ref = refs.get(row["problem"].strip()) if refs is not None and answer is not None else None
        chain = Chain(row["problem"], row["steps"], answer=answer, text="", prompt_ids=[], ids=[], spans=[])
        got = labeler.label(chain, ref)
        for h, a in zip(row["labels"], got.labels):
            rated += h is not None
            if h is not None and a is not None:
                human.append(h)
                auto.append(a)
    out = {
        "steps": float(len(human)),
        "coverage": len(human) / max(rated, 1),
        "auto_wrong": float(sum(auto)),
        "human_wrong": float(sum(human)),
    }
    if human:
        out["accuracy"] = accuracy_score(human, auto)
        out["f1_wrong"] = f1_score(human, auto, pos_label=1, zero_division=0)
        # kappa is undefined when both raters give one same label throughout: that is full agreement
        out["kappa"] = cohen_kappa_score(human, auto) if len(set(human) | set(auto)) > 1 else 1.0
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(DATA / "prm800k_phase1_test_stepwise.parquet"))
    p.add_argument("--math500", default=str(DATA / "math500_test.jsonl"), help="gold answers, matched by problem text")
    p.add_argument("--neutral-as", default="0", choices=["0", "1", "none"], help="label for neutral (0) ratings")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    t0 = time.perf_counter()
    neutral = None if args.neutral_as == "none" else int(args.neutral_as)
    rows = prm800k_rows(args.data, neutral_as=neutral)
    labels = [lab for r in rows for lab in r["labels"]]
    print(f"PRM800K {Path(args.data).name} (neutral -> {args.neutral_as})")
    print(f"  problems     {len({r['problem'] for r in rows}):>7,}")
    print(f"  chains       {len(rows):>7,}  ({sum(r['id'].endswith('-main') for r in rows)} trajectories)")
    print(f"  steps        {len(labels):>7,}")
    print(f"  wrong steps  {labels.count(1):>7,}")
    print(f"  fine steps   {labels.count(0):>7,}")
    print(f"  unlabelled   {labels.count(None):>7,}")
    print(f"  ending in an answer {sum(r.get('answer') is not None for r in rows):,}")

    refs: dict[str, str] = {}
    if Path(args.math500).exists():
        with open(args.math500, encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    rec = json.loads(line)
                    refs[rec["problem"].strip()] = f"{rec['solution']}\n#### {rec['answer']}"
    matched = sum(r["problem"].strip() in refs for r in rows)
    print(f"  chains with a MATH-500 gold answer {matched:,}")

    print("\nlabelers vs human labels, on the steps both label")
    print(
        f"  {'labeler':<10} {'setting':<16} {'steps':>7} {'cover':>6} {'auto 1':>7} {'human 1':>8} {'accuracy':>9}"
        f" {'F1 wrong':>9} {'kappa':>7}"
    )
    for lab in ("checks", "reference"):
        for name, r in (("arithmetic only", None), ("with reference", refs)):
            m = agreement(rows, r, lab)
            if m["steps"]:
                print(
                    f"  {lab:<10} {name:<16} {int(m['steps']):>7,} {m['coverage']:>6.1%} {int(m['auto_wrong']):>7,}"
                    f" {int(m['human_wrong']):>8,} {m['accuracy']:>9.3f} {m['f1_wrong']:>9.3f} {m['kappa']:>7.3f}"
                )
            else:
                print(f"  {lab:<10} {name:<16} no step labelled by both")
    print(f"\n({time.perf_counter() - t0:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
