"""Choose between heads on named validation sets: pairwise accuracy and PR-AUC per set, never pooled.

Each ``--set NAME=PATH`` is a labelled JSONL file (or several, comma-separated, globs
allowed) in the project's chain format, e.g. held-out PRM800K-train problems (rated
alternatives to the same step, with ``ratings``) or chains with synthetic errors next to
their originals. ``--held-out`` keeps, in the sets it names (all when it names none), only
the rows whose problem falls in ``train``'s validation split (``train.is_val``), so a set made
from training files holds no question a head was trained on.

Every head is scored from stored features (``--store``: one or more feature stores; a row's
features are found by its id), and so are the trivial baselines, from the rows' text. The
selection rule is in ``uhead_viz/selection.py``: the best mean rank over every (set,
pairwise accuracy) and (set, PR-AUC), never the pooled figure of all sets, which rewards
telling the sources apart. Test sets are never read here.

    python benchmarks/val_compare.py --set prm_val=data/val/prm800k_p1tr_val.jsonl \\
        --set synth=data/val/synthetic.jsonl --heads runs/a runs/b --store runs/store [--held-out] [--out r.json]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from uhead_viz import selection  # noqa: E402

logger = logging.getLogger("val_compare")


def _stores(folders: list[str]) -> list:
    from uhead_viz.capture import CaptureSpec
    from uhead_viz.featstore import FeatureStore

    out = []
    for folder in folders:
        meta = json.loads((Path(folder) / "meta.json").read_text(encoding="utf-8"))
        out.append(FeatureStore(folder, CaptureSpec.from_dict(meta["features"]), meta["base_model"]))
    return out


def _examples(rows: list[dict], stores: list, head: object = None) -> dict[str, object]:
    """Row id -> Example, from the first store holding the row's features that covers ``head``'s
    recipe, cut to that recipe (a store with hidden states serves heads without them too)."""
    from uhead_viz.internals import covers
    from uhead_viz.train import load_examples

    need = getattr(head, "spec", None)
    shape = (int(head.base["n_layers"]), int(head.base["n_heads"])) if head is not None else None
    found: dict[str, object] = {}
    for store in stores:
        if need is not None and not covers(store.spec, need):
            continue
        todo = [r for r in rows if str(r.get("id")) not in found]
        if todo:
            found.update({e.rid: e for e in load_examples(todo, store, need=need, shape=shape)})
    return found


def _table(ranked: list[dict], results: dict, reference: dict, sets: list[str]) -> str:
    head = "| candidate | mean rank | " + " | ".join(f"{s} pairwise | {s} PR-AUC" for s in sets) + " |"
    lines = [head, "|" + "---|" * (2 + 2 * len(sets))]

    def cells(per: dict) -> str:
        out = []
        for s in sets:
            r = per.get(s, {})
            pw = "n/a" if r.get("pairwise") is None else f"{r['pairwise']:.3f} [{r['pairwise_ci95'][0]:.3f}, " \
                f"{r['pairwise_ci95'][1]:.3f}]"
            pr = "n/a" if r.get("pr_auc") is None else f"{r['pr_auc']:.3f}"
            out += [pw, pr]
        return " | ".join(out)

    for e in ranked:
        rk = "n/a" if e["mean_rank"] is None else f"{e['mean_rank']:.2f}"
        lines.append(f"| {e['name']} | {rk} | {cells(results[e['name']])} |")
    for name, per in reference.items():
        lines.append(f"| ({name}) | | {cells(per)} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--set", dest="sets", action="append", required=True, metavar="NAME=PATH",
                    help="a named validation set (repeat the option for more)")
    ap.add_argument("--held-out", nargs="*", default=None, metavar="NAME",
                    help="keep only train's validation-split problems in these sets (no names: in every set)")
    ap.add_argument("--heads", nargs="+", required=True, help="head checkpoint folders")
    ap.add_argument("--store", nargs="+", required=True, help="feature store(s) holding the sets' rows")
    ap.add_argument("--val-fraction", type=float, default=0.2, help="train's validation fraction, for --held-out")
    ap.add_argument("--rounds", type=int, default=2000, help="bootstrap rounds for the pairwise interval")
    ap.add_argument("--out", default=None, help="also write the JSON here")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    from uhead_viz.train import predict
    from uhead_viz.uhead import load_head, read_config

    try:
        specs = [selection.parse_set(s) for s in args.sets]
    except ValueError as e:
        raise SystemExit(str(e)) from None
    names = [n for n, _ in specs]
    unknown = sorted(set(args.held_out or []) - set(names))
    if unknown:
        raise SystemExit(f"--held-out names no --set: {', '.join(unknown)}")
    stores = _stores(args.store)
    sets: dict[str, tuple[list[dict], list]] = {}
    for name, files in specs:
        rows = selection.read_set(files)
        if args.held_out is not None and (not args.held_out or name in args.held_out):
            rows = selection.held_out(rows, args.val_fraction)
        found = _examples(rows, stores)
        rows = [r for r in rows if str(r.get("id")) in found]  # every candidate is measured on the same rows
        if not rows:
            logger.warning("Set %s: no labelled row has stored features; left out", name)
            continue
        sets[name] = (rows, [found[str(r["id"])] for r in rows])
        logger.info("Set %s: %d chains with features", name, len(rows))
    if not sets:
        raise SystemExit("No set has a row with stored features.")

    reference = {
        m: {
            n: selection.set_metrics(rows, selection.trivial_scores(rows, m), args.rounds)
            for n, (rows, _) in sets.items()
        }
        for m in selection.TRIVIAL
    }
    results: dict[str, dict] = {}
    own: dict[str, object] = {}
    for folder in args.heads:
        if not (Path(folder) / "config.json").is_file():
            logger.warning("No head in %s (its training failed?); skipped", folder)
            continue
        head = load_head(folder)
        per: dict[str, dict] = {}
        for n, (rows, _) in sets.items():
            found = _examples(rows, stores, head)
            if len(found) < len(rows):
                logger.warning("Head %s: %d rows of set %s have no features of its recipe; left out of its figures",
                               folder, len(rows) - len(found), n)
                continue
            per[n] = selection.set_metrics(rows, predict(head, [found[str(r["id"])] for r in rows]), args.rounds)
        results[folder] = per
        _, cfg = read_config(folder)
        own[folder] = cfg.get("metrics", {}).get("validation", {}).get("pr_auc")
    if not results:
        raise SystemExit("No head could be loaded.")
    ranked = selection.rank(results, reference)
    result = {
        "rule": "best mean rank over every (set, pairwise accuracy) and (set, PR-AUC); see uhead_viz/selection.py",
        "selected": ranked[0]["name"],
        "ranking": ranked,
        "sets": {
            n: {"n_chains": len(rows), "files": [str(f) for f in dict(specs)[n]]} for n, (rows, _) in sets.items()
        },
        "heads": {h: {"own_validation_pr_auc": own[h], **per} for h, per in results.items()},
        "trivial": reference,
    }
    sys.stdout.write(_table(ranked, results, reference, list(sets)) + "\n")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
