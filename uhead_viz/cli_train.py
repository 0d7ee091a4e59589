"""The training recipe's commands: ``label``, ``features`` and ``train``, and the labelled sets
``prm800k-chains`` (human step ratings) and ``synthetic-errors`` (exact calculation errors).

``make train`` chains them (after ``generate``); each one skips the work already done, so
the recipe resumes wherever it was stopped:

    python -m uhead_viz label    --input 'chains/*.jsonl' --output-dir labels/ --references gsm8k/train.jsonl
    python -m uhead_viz features --input 'labels/*.jsonl'      (store: $UHEAD_VIZ_CACHE/features/<model>)
    python -m uhead_viz train    --data 'labels/*.jsonl' --out checkpoints/NAME
"""

from __future__ import annotations

import argparse
import glob
import json
import logging
from pathlib import Path
from typing import Any

from tqdm import tqdm

from .errors import InputError
from .jsonl import ResumableWriter, problem_of, read_rows

logger = logging.getLogger("uhead_viz")


def _files(patterns: list[str]) -> list[Path]:
    out: list[Path] = []
    for pat in patterns:
        hits = sorted(glob.glob(pat)) if any(c in pat for c in "*?[") else [pat]
        for h in hits:
            if not Path(h).is_file():
                raise InputError(f"No input file {h}.")
            out.append(Path(h))
    if not out:
        raise InputError(f"No input files match {' '.join(patterns)}.")
    return out


def _rows(paths: list[Path], ids: bool = False) -> list[dict[str, Any]]:
    """Every readable row of ``paths`` (bad lines logged and skipped).

    With ``ids``, a row without an ``id`` gets ``<file stem>-<line - 1>``, as ``generate``
    and ``score`` give it, so a resumed run can tell it is done instead of repeating it.
    """
    rows = []
    for p in paths:
        for lineno, row, err in read_rows(p):
            if err or row is None:
                logger.warning("Skipping %s line %d: %s", p, lineno, err)
            else:
                if ids and row.get("id") is None:
                    row = {**row, "id": f"{p.stem}-{lineno - 1}"}
                rows.append(row)
    return rows


def _question(row: dict[str, Any]) -> str:
    return (problem_of(row) or "").strip()


def load_references(path: str | None) -> dict[str, str]:
    """Question text -> reference solution, from GSM8K (``answer``) or MATH (``solution`` + ``answer``) rows.

    A MATH reference gets its answer appended as ``#### answer``, so the answer checks
    find it the same way as in GSM8K solutions.
    """
    refs: dict[str, str] = {}
    if not path:
        return refs
    for _, row, err in read_rows(path):
        if err or row is None:
            continue
        q = _question(row)
        if "solution" in row:
            refs[q] = f"{row['solution']}\n#### {row.get('answer', '')}"
        elif "answer" in row:
            refs[q] = str(row["answer"])
    return refs


def cmd_label(args: argparse.Namespace) -> int:
    """Label every step of every chain; one output file per input file, resumable by row id.

    A chain the labeler cannot label (an API judge whose retries are spent, say) is logged
    by id and left out of the output, and the run goes on with the next chain; a rerun of
    the same command tries exactly the chains left out. The exit status is 1 when any
    chain was left out. A configuration error (a wrong key or URL) stops the run at once,
    since every chain would fail the same way.
    """
    from .errors import JudgeConfigError
    from .labels import get_labeler
    from .steps import Chain

    labeler = get_labeler(args.labeler)
    refs = load_references(args.references)
    out_dir = Path(args.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    failed: list[str] = []
    for path in _files(args.input):
        n_new = n_wrong = n_fine = 0
        with ResumableWriter(out_dir / path.name) as w:
            for row in tqdm(_rows([path], ids=True), desc=f"label {path.name}", unit="chain"):
                if str(row.get("id")) in w.done:
                    continue
                steps = row.get("steps")
                if not isinstance(steps, list) or not steps or not all(isinstance(x, str) for x in steps):
                    logger.warning("Skipping row %s of %s: no list of steps", row.get("id"), path)
                    continue
                reference = row.get("reference") or refs.get(_question(row))
                if reference is None:
                    logger.warning("Row %s has no reference solution; only its arithmetic is checked", row.get("id"))
                answer = row.get("answer")
                chain = Chain(
                    problem=_question(row), steps=list(steps), answer=answer if isinstance(answer, str) else None,
                    text=str(row.get("text", "")), prompt_ids=[], ids=[], spans=[], meta={},
                )
                try:
                    lab = labeler.label(chain, reference)
                except JudgeConfigError:
                    raise
                except InputError as e:  # this chain only (e.g. JudgeError: the judge's retries are spent)
                    logger.error("Could not label row %s of %s: %s", row.get("id"), path.name, e)
                    failed.append(f"{path.name}:{row.get('id')}")
                    continue
                w.write(
                    {
                        **row,
                        "labels": lab.labels,
                        "label_confidence": lab.confidence,
                        "label_source": lab.source,
                        "label_notes": lab.notes,
                    }
                )
                n_new += 1
                n_wrong += sum(x == 1 for x in lab.labels)
                n_fine += sum(x == 0 for x in lab.labels)
        logger.info("%s: %d chains labelled now (%d wrong, %d fine steps)", path.name, n_new, n_wrong, n_fine)
    if failed:
        shown = ", ".join(failed[:10]) + (f" and {len(failed) - 10} more" if len(failed) > 10 else "")
        logger.error(
            "%d chain(s) could not be labelled and are not in the output: %s. Run the same command again to "
            "retry them.", len(failed), shown,
        )
        return 1
    return 0


def hidden_layers(value: str | None, n_layers: int) -> tuple[int, ...]:
    """``--hidden-layers``: "mid" (the middle layer, ``n_layers // 2``, as in the paper) or layer numbers."""
    if not value:
        return ()
    out = []
    for part in value.split(","):
        part = part.strip().lower()
        if part == "mid":
            out.append(n_layers // 2)
        elif part.lstrip("-").isdigit() and -n_layers <= int(part) < n_layers:
            out.append(int(part) % n_layers)
        else:
            raise InputError(f"--hidden-layers takes 'mid' or layer numbers below {n_layers}, not {part!r}.")
    return tuple(sorted(set(out)))


def _store(args: argparse.Namespace, llm: Any):
    """The feature store and recipe for ``args``; a recipe with hidden states gets a folder of its own."""
    from .featstore import open_store
    from .internals import CaptureSpec
    from .packs import cache_dir
    from .uhead import base_info

    wanted = "mid" if getattr(args, "use_hidden", False) else getattr(args, "hidden_layers", None)
    layers = hidden_layers(wanted, int(llm.model.config.num_hidden_layers))
    spec = CaptureSpec(window=args.window, top_k=args.top_k, hidden_layers=layers)
    suffix = f"-h{'-'.join(map(str, layers))}" if layers else ""
    root = args.store or str(cache_dir() / "features" / f"{llm.name}-{llm.fingerprint[:12]}{suffix}")
    store = open_store(root, spec, base_info(llm))  # a store of a wider recipe serves this one too
    store.merge_parts()  # captures parallel workers left when a run was stopped
    return store, spec


def _features_on_ray(rows: list[dict[str, Any]], llm: Any, store: Any, spec: Any, ray: Any) -> int:
    """``features --ray``: each actor captures into a part of the store of its own; the parts are
    merged here when the run ends (or, if it is stopped, when the store is next opened)."""
    from .ray_run import RayRunner
    from .workers import FeaturesRecipe, ModelRecipe, open_features

    recipe = FeaturesRecipe(ModelRecipe.of(llm), str(Path(store.root).resolve()), spec.to_dict())
    runner = RayRunner(open_features, recipe, ray, what="chains")
    counts = {"added": 0, "stored": 0, "error": 0}
    bar = tqdm(total=len(rows), desc="features", unit="chain")
    try:
        for (row,), (r,) in zip(([r] for r in rows), runner([[r] for r in rows])):
            counts[r["status"]] += 1
            if r["status"] == "error":
                logger.warning("Skipping row %s: %s", row.get("id"), r["error"])
            bar.update(1)
    finally:
        bar.close()
        store.merge_parts()
    logger.info("%d chains captured by the workers, %d were stored already, %d skipped", counts["added"],
                counts["stored"], counts["error"])
    return counts["added"]


def cmd_features(args: argparse.Namespace) -> int:
    from .llm import load_llm
    from .ray_run import ray_settings
    from .train import extract_features

    rows = _rows(_files(args.input))
    if args.limit:
        rows = rows[: args.limit]
    ray = ray_settings(args, rows_per_batch=16)
    llm = load_llm(args.model)
    store, spec = _store(args, llm)
    with store:
        if ray is None:  # a wider store is filled with its own recipe
            added = extract_features(rows, llm, store, store.spec)
        else:
            added = _features_on_ray(rows, llm, store, store.spec, ray)
    logger.info("Feature store %s: %d chains (%d added now)", store.root, len(store), added)
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from .llm import load_llm
    from .train import TrainConfig, load_examples, train_head
    from .uhead import base_info

    paths = _files(args.data)
    rows = _rows(paths)
    llm = load_llm(args.model)
    store, spec = _store(args, llm)
    shape = (int(llm.model.config.num_hidden_layers), int(llm.model.config.num_attention_heads))
    examples = load_examples(rows, store, llm, need=spec, shape=shape)
    cfg = TrainConfig(
        d_model=args.d_model, n_layers=args.n_layers, n_heads=args.n_heads, d_ff=args.d_ff or 2 * args.d_model,
        dropout=args.dropout, pool_body=not args.keep_marker, d_hidden=args.d_hidden,
        mode=args.mode, pool=args.pool, context=args.context, attn=args.attn, lr=args.lr,
        weight_decay=args.weight_decay, max_epochs=args.epochs,
        patience=args.patience,
        seed=args.seed, batch_size=args.batch_size, batch_tokens=args.batch_tokens,
        after_error_weight=args.after_error_weight,
        balance_position=args.balance_position,
        balance_sources=args.balance_sources,
        pair_weight=args.pair_weight,
        val_fraction=args.val_fraction,
    )
    sources = sorted({str(r.get("label_source")) for r in rows if r.get("label_source")})
    summary = {
        "files": [str(p) for p in paths],
        "n_chains": len(examples),
        "label_sources": sources,
        "model": llm.name,
        "hidden_layers": list(spec.hidden_layers),
        "questions": "training questions only (GSM8K train, PRM800K phase-1 train); evaluation questions never enter",
    }
    head = train_head(examples, base_info(llm), spec, cfg, args.out, summary)
    print(json.dumps({"out": args.out, "n_parameters": head.num_parameters(), **head.metrics}, indent=2))
    return 0


def cmd_gold_chains(args: argparse.Namespace) -> int:
    from .gold_chains import gold_row

    rows = _rows(_files([args.input]))[args.offset :]
    if args.limit:
        rows = rows[: args.limit]
    made = 0
    with ResumableWriter(args.output) as w:
        for i, row in enumerate(rows, start=args.offset):
            out = gold_row(row, f"gold-{Path(args.input).stem}-{i}")
            if out is None:
                logger.warning("Row %d of %s has no '#### answer' solution; skipped", i, args.input)
            elif out["id"] not in w.done:
                w.write(out)
                made += 1
    logger.info("%s: %d reference-solution chains added", args.output, made)
    return 0


def _write_rows(path: str, rows: list[dict[str, Any]]) -> None:
    """Write ``rows`` as JSONL, replacing ``path`` whole (these sets are rebuilt, not appended to)."""
    import os

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    os.replace(tmp, out)


def cmd_prm800k_chains(args: argparse.Namespace) -> int:
    from .prm800k_train import summary, training_chains

    if not Path(args.data).is_file():
        raise InputError(f"No PRM800K file {args.data}: give the phase-1 train stepwise parquet with --data.")
    rows = training_chains(args.data, args.split, args.neutral, args.max_branches, args.seed, args.problems)
    _write_rows(args.out, rows)
    print(json.dumps({"out": args.out, **summary(rows)}, indent=2))
    return 0


def cmd_synthetic_errors(args: argparse.Namespace) -> int:
    """GSM8K reference solutions with one exact calculation error each (``synthetic.py``)."""
    from collections import Counter

    from .synthetic import SPLITS, build

    name, first = SPLITS[args.split]
    path = Path(args.data) / name
    if not path.is_file():
        raise InputError(f"No GSM8K file {path}: give the folder that holds gsm8k/ with --data.")
    offset = first if args.offset is None else args.offset
    rows = _rows([path])[offset:]
    if args.limit:
        rows = rows[: args.limit]
    out = build(rows, args.split, offset, args.seed, args.keep_clean)
    _write_rows(args.out, out)
    changed = [r for r in out if r["synthetic"]["kind"] != "none"]
    print(json.dumps({
        "out": args.out, "questions": len(rows), "chains": len(out), "changed": len(changed),
        "steps": sum(len(r["steps"]) for r in out),
        "kinds": dict(Counter(r["synthetic"]["kind"] for r in changed)),
        "changed_step": dict(sorted(Counter(r["synthetic"]["step"] for r in changed).items())),
    }, indent=2))
    return 0


def add_parsers(sub: Any) -> None:
    from .train import TrainConfig

    se = sub.add_parser(
        "synthetic-errors", help="GSM8K reference solutions with one exact calculation error each (labelled chains)"
    )
    se.add_argument(
        "--split", choices=("train", "test"), default="train",
        help="train: GSM8K train questions 3,200 on (unused by the other sets); test: GSM8K test, evaluation only",
    )
    se.add_argument("--data", default="../shared/data", help="folder holding gsm8k/train.jsonl and gsm8k/test.jsonl")
    se.add_argument("--offset", type=int, default=None, help="first question (default: 3200 for train, 0 for test)")
    se.add_argument("--limit", type=int, default=0, help="only N questions (after --offset)")
    se.add_argument("--seed", type=int, default=0)
    se.add_argument("--keep-clean", action="store_true", help="also write each unchanged solution, all steps fine")
    se.add_argument("--out", required=True, help="JSONL to write (replaced)")
    se.set_defaults(func=cmd_synthetic_errors)

    pc = sub.add_parser(
        "prm800k-chains", help="PRM800K phase-1 train as labelled chains (human step ratings) for training heads"
    )
    pc.add_argument("--data", default="../shared/data/prm800k_phase1_train_stepwise.parquet")
    pc.add_argument("--split", choices=("train", "val"), default="train", help="val: a fixed 10%% of the problems")
    pc.add_argument(
        "--neutral", choices=("fine", "wrong", "skip"), default="fine", help="what a neutral (0) rating means"
    )
    pc.add_argument("--max-branches", type=int, default=0, help="at most N rated alternatives per problem (0: all)")
    pc.add_argument("--seed", type=int, default=0, help="seed of the --max-branches draw")
    pc.add_argument("--problems", type=int, default=0, help="only the split's first N problems (0: all)")
    pc.add_argument("--out", required=True, help="JSONL to write (replaced)")
    pc.set_defaults(func=cmd_prm800k_chains)

    gc = sub.add_parser(
        "gold-chains", help="GSM8K reference solutions as chains written by someone else (training data)"
    )
    gc.add_argument("--input", required=True, help="GSM8K JSONL (question, answer ending '#### N'); train split only")
    gc.add_argument("--output", required=True, help="JSONL to append chains to; ids already there are skipped")
    gc.add_argument("--offset", type=int, default=0, help="skip the first N questions")
    gc.add_argument("--limit", type=int, default=0, help="only N questions (after --offset)")
    gc.set_defaults(func=cmd_gold_chains)

    lb = sub.add_parser("label", help="label each step of chains (0 fine, 1 wrong) for training or evaluation")
    lb.add_argument("--input", nargs="+", required=True, help="chain JSONL files (globs allowed)")
    lb.add_argument("--output-dir", required=True, help="folder for labelled files (same names as the inputs)")
    lb.add_argument("--labeler", default="reference", help="reference (default), checks, llm-judge, api-judge")
    lb.add_argument("--references", default=None, help="GSM8K/MATH JSONL whose solutions are matched by question")
    lb.set_defaults(func=cmd_label)

    for name, fn, help_ in (
        ("features", cmd_features, "capture and cache token features of chains (resumable)"),
        ("train", cmd_train, "train an uncertainty head on labelled chains (resumable)"),
    ):
        p = sub.add_parser(name, help=help_)
        if name == "features":
            from .ray_run import add_ray_arguments

            p.add_argument("--input", nargs="+", required=True, help="chain JSONL files (globs allowed)")
            p.add_argument("--limit", type=int, default=0)
            add_ray_arguments(p, "chains per Ray task; each task's captures are one shard (default 16)")
            p.add_argument(
                "--hidden-layers", default=None,
                help="also keep these layers' hidden states: 'mid' (the middle layer) or numbers, e.g. 7,14; "
                "they go to a store of their own",
            )
        else:
            p.add_argument("--data", nargs="+", required=True, help="labelled JSONL files (globs allowed)")
            p.add_argument("--out", required=True, help="checkpoint folder to write")
            d = TrainConfig()
            p.add_argument("--d-model", type=int, default=d.d_model, help="head width (the paper: 512)")
            p.add_argument("--layers", "--n-layers", dest="n_layers", type=int, default=d.n_layers,
                           help="encoder layers (the paper: 1)")
            p.add_argument("--n-heads", type=int, default=d.n_heads)
            p.add_argument("--d-ff", type=int, default=None, help="feed-forward width (default: 2 x --d-model)")
            p.add_argument(
                "--keep-marker", action="store_true",
                help="pool each step's 'Step k:' marker tokens too (heads before this option did)",
            )
            p.add_argument(
                "--use-hidden", action="store_true",
                help="also read the middle layer's hidden state (store made by features --hidden-layers mid)",
            )
            p.add_argument("--d-hidden", type=int, default=d.d_hidden, help="width the hidden state is projected to")
            p.add_argument("--dropout", type=float, default=d.dropout)
            p.add_argument("--mode", choices=("causal", "step"), default=d.mode)
            p.add_argument("--pool", choices=("mean", "max", "last"), default=d.pool, help="causal mode: step pooling")
            p.add_argument(
                "--context", choices=("chain", "step"), default=d.context,
                help="causal mode: a token attends to the whole chain so far, or to its own step only",
            )
            p.add_argument(
                "--attn", choices=("raw", "window"), default=d.attn,
                help="look-back attention as captured, or each layer-head's window rescaled to sum to one",
            )
            p.add_argument("--lr", type=float, default=d.lr)
            p.add_argument("--weight-decay", type=float, default=d.weight_decay)
            p.add_argument("--epochs", type=int, default=d.max_epochs)
            p.add_argument("--patience", type=int, default=d.patience)
            p.add_argument("--batch-size", type=int, default=d.batch_size)
            p.add_argument("--batch-tokens", type=int, default=d.batch_tokens,
                           help="a batch also ends where it would pad past this many tokens")
            p.add_argument("--val-fraction", type=float, default=d.val_fraction)
            p.add_argument(
                "--after-error-weight", type=float, default=d.after_error_weight,
                help="weight of 'wrong' for steps after a chain's first wrong step (0: leave them out)",
            )
            p.add_argument(
                "--balance-position", action="store_true",
                help="weight wrong steps per step index so that position alone predicts nothing",
            )
            p.add_argument(
                "--balance-sources", action="store_true",
                help="give every source the same weight in the loss, wrong and fine steps balanced inside each",
            )
            p.add_argument(
                "--pair-weight", type=float, default=d.pair_weight,
                help="weight of a ranking term on wrong and fine steps that branch from the same prefix (0: off)",
            )
            p.add_argument("--seed", type=int, default=d.seed)
        p.add_argument("--store", default=None, help="feature store folder (default: under ~/.cache/uhead_viz)")
        p.add_argument("--model", default=None, help="packaged name, local folder or hub id")
        p.add_argument("--window", type=int, default=5, help="look-back attention window")
        p.add_argument("--top-k", type=int, default=4, help="top-k probabilities kept")
        p.set_defaults(func=fn)
