"""``python -m uhead_viz evaluate``: every scoring method on labelled chains, one report.

    python -m uhead_viz evaluate --data FILE --format {processbench,jsonl} --out report.json
        [--limit N] [--methods default|all|m1,m2,...] [--threshold default|best|X]
        [--thresholds-from VAL] [--store FOLDER] [--ray ...]

What is measured and written is described in ``evaluate``; this module reads the
arguments, refuses bad input before the model loads, and builds the parallel workers'
recipe for ``--ray`` (a module above both ``evaluate`` and ``workers``).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from .errors import InputError
from .evaluate import FORMATS, evaluate, load_items
from .method_choice import add_model_arguments, resolve_head, resolve_methods
from .reports import markdown_table
from .thresholds import Policy, from_validation, parse_policy

logger = logging.getLogger(__name__)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .llm import load_llm
    from .ray_run import ray_settings
    from .scorers import SCORERS
    from .uhead import read_config

    if not Path(args.data).is_file():
        raise InputError(f"No data file {args.data}.")
    policy: Policy = parse_policy(args.threshold)
    if args.thresholds_from:
        if args.threshold != "default":
            raise InputError("Give --threshold or --thresholds-from, not both.")
        if not Path(args.thresholds_from).is_file():
            raise InputError(f"No validation file {args.thresholds_from}.")
    ray = ray_settings(args, rows_per_batch=16)  # refuses --ray without Ray installed, before the model loads
    if args.head:
        read_config(args.head)  # refuse a missing or broken head before the model loads
    loaded = load_items(args.data, args.format)  # refuse an unreadable file before the model loads
    if not loaded[0]:
        raise InputError(f"No usable rows in {args.data} (format {args.format}).")
    methods, explicit = resolve_methods(args.methods, args.prm_family, args.trust_remote_code, evaluation=True)
    # position and length baselines alone need no model: the run then loads none
    llm = load_llm(args.model) if any(getattr(SCORERS[m], "needs_model", True) for m in methods) else None
    choice = resolve_head(methods, llm, args.head, args.allow_other_build, explicit)
    methods, head, head_from, unavailable = choice.methods, choice.head, choice.source, choice.unavailable
    extra = {"model": llm.name if llm is not None else None, "head": head_from, "unavailable": unavailable}
    store = None
    if args.store and llm is not None:
        from .featstore import open_store
        from .internals import CaptureSpec
        from .uhead import base_info

        spec = head.spec if head is not None else CaptureSpec()
        store = open_store(args.store, spec, base_info(llm))
        store.merge_parts()  # captures parallel workers left when a run was stopped
    runner = None
    if ray is not None:
        from .ray_run import RayRunner
        from .workers import EvaluateRecipe, ModelRecipe, open_evaluate

        recipe = EvaluateRecipe(
            ModelRecipe.of(llm), tuple(methods), tuple(sorted(explicit)),
            str(Path(head_from).resolve()) if head is not None and head_from else None, args.allow_other_build,
            args.prm_family, args.trust_remote_code,
            str(store.root.resolve()) if store is not None else None,
            store.spec.to_dict() if store is not None else None,
        )
        runner = RayRunner(open_evaluate, recipe, ray, what="labelled chains")
    try:
        if args.thresholds_from:  # a report's cuts, or a labelled file evaluated first next to --out
            val_out = Path(args.out).with_name(Path(args.out).stem + ".val.json")
            policy = from_validation(
                args.thresholds_from,
                lambda p: evaluate(p, args.format, llm, methods, val_out, head, 0, "default", explicit, extra=extra,
                                   store=store),
            )
        report = evaluate(
            args.data, args.format, llm, methods, args.out, head, args.limit, policy, explicit, extra=extra,
            loaded=loaded, store=store, runner=runner,
        )
    finally:
        if store is not None:
            store.close()
            store.merge_parts()  # what Ray workers captured (each into a part of its own)
    sys.stdout.write(markdown_table(report))
    html = Path(args.out).with_suffix(".html")
    logger.info("Wrote %s%s", args.out, f" and {html}" if html.is_file() else "")
    return 0


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Register ``evaluate`` on the CLI's subparsers."""
    p = sub.add_parser("evaluate", help="score labelled chains with every method and report step metrics")
    p.add_argument("--data", required=True, help="ProcessBench JSON/JSONL, or JSONL rows with steps and labels")
    p.add_argument("--format", choices=FORMATS, default="processbench", help="processbench (default) or jsonl")
    p.add_argument("--out", required=True, help="report JSON; report.html and report.scores.jsonl go next to it")
    p.add_argument("--limit", type=int, default=0, help="only the first N usable rows")
    p.add_argument(
        "--methods",
        default=None,
        help="comma-separated: default (head + baselines), all (adds judge, combined), names, prm:<id>, "
        "combined:<verifier>",
    )
    p.add_argument(
        "--threshold",
        default="default",
        help="default (head's stored one for uhead, 0.5 otherwise), best (max F1 on this data), or a number",
    )
    p.add_argument(
        "--thresholds-from",
        default=None,
        metavar="VAL",
        help="each method's F1 threshold: its best on VAL, an evaluate report or a labelled file in --format "
        "(evaluated first, into <out>.val.json)",
    )
    add_model_arguments(p)
    p.add_argument(
        "--store", default=None, help="feature store folder: reuse captures made by `features` (and keep new ones)"
    )
    from .ray_run import add_ray_arguments

    add_ray_arguments(p, "labelled chains per Ray task (default 16)")
    p.set_defaults(func=cmd_evaluate)
    return p
