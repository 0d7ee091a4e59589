"""Compare heads on one common validation set: the held-out questions of every chain source.

Each ``train`` run validates on the held-out questions of its own training files, so heads
trained on different mixes of sources (the model's own chains, another model's chains,
reference solutions) report validation figures on different sets. This script scores
every head on the union: the rows of all ``--data`` files whose question falls in the
validation split (``train.is_val``, the same stable hash every run uses), and prints
PR-AUC / ROC-AUC per source (a row's ``model`` field) and pooled, as JSON.

    python benchmarks/val_compare.py --data 'labels/*.jsonl' --heads runs/a runs/b [--store DIR]

Model selection uses the pooled figure; the held-out test sets are never consulted here.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from uhead_viz import metrics  # noqa: E402
from uhead_viz.capture import CaptureSpec  # noqa: E402
from uhead_viz.cli_train import _files, _rows  # noqa: E402
from uhead_viz.featstore import FeatureStore  # noqa: E402
from uhead_viz.train import is_val, load_examples, predict  # noqa: E402
from uhead_viz.uhead import load_head, read_config  # noqa: E402

logger = logging.getLogger("val_compare")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", nargs="+", required=True, help="labelled JSONL files (globs allowed)")
    ap.add_argument("--heads", nargs="+", required=True, help="head checkpoint folders")
    ap.add_argument("--store", required=True, help="feature store holding every row's features")
    ap.add_argument("--val-fraction", type=float, default=0.2)
    ap.add_argument("--out", default=None, help="also write the JSON here")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    rows = [
        r for r in _rows(_files(args.data)) if is_val(str(r.get("problem") or r.get("question")), args.val_fraction)
    ]
    meta = json.loads((Path(args.store) / "meta.json").read_text(encoding="utf-8"))
    store = FeatureStore(args.store, CaptureSpec.from_dict(meta["features"]), meta["base_model"])
    examples = load_examples(rows, store)
    source = {str(r["id"]): str(r.get("model") or "unknown") for r in rows}
    groups: dict[str, list] = {"pooled": examples}
    for e in examples:
        groups.setdefault(source[e.rid], []).append(e)
    result: dict = {"n_chains": {k: len(v) for k, v in groups.items()}, "heads": {}}
    for folder in args.heads:
        if not (Path(folder) / "config.json").is_file():
            logger.warning("No head in %s (its training failed?); skipped", folder)
            continue
        head = load_head(folder)
        scores = {e.rid: s for e, s in zip(examples, predict(head, examples))}
        per = {}
        for name, exs in groups.items():
            labels, sc = [e.labels for e in exs], [scores[e.rid] for e in exs]
            n_pos = sum(lab == 1 for ls in labels for lab in ls)
            per[name] = {
                "pr_auc": metrics.pr_auc(labels, sc) if n_pos else None,
                "roc_auc": metrics.roc_auc(labels, sc) if n_pos else None,
                "wrong_steps": n_pos,
                "mean_score_of_fine_steps": _mean(
                    [s for ls, ss in zip(labels, sc) for lab, s in zip(ls, ss) if lab == 0]
                ),
            }
        _, cfg = read_config(folder)
        result["heads"][folder] = {"own_validation": cfg.get("metrics", {}).get("validation", {}).get("pr_auc"), **per}
    text = json.dumps(result, indent=2)
    logger.info("%s", text)
    if args.out:
        Path(args.out).write_text(text + "\n", encoding="utf-8")
    return 0


def _mean(xs: list[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


if __name__ == "__main__":
    raise SystemExit(main())
