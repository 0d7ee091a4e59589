"""Command line: ``python -m uhead_viz generate | ...``.

Errors a user can fix (missing model pack, bad input) print one paragraph and exit 2;
they never show a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from .cli_evaluate import add_parser as add_evaluate_parser
from .cli_train import add_parsers as add_train_parsers
from .errors import InputError, PackError, RowError
from .jsonl import NO_PROBLEM, ResumableWriter, problem_of, read_rows
from .method_choice import add_model_arguments
from .steps import step_body

logger = logging.getLogger("uhead_viz")


def cmd_generate(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .llm import load_llm

    if args.question is None and not args.input:
        raise InputError("Give --question TEXT, or --input questions.jsonl with --output chains.jsonl.")
    if args.input and not args.output:
        raise InputError("--input needs --output, the JSONL file to write chains to.")
    if args.question is not None:
        from .llm import clean_question

        clean_question(args.question)  # refuse bad input before the model loads
    llm = load_llm(args.model)
    if args.question is not None:
        chain = llm.generate([args.question], args.max_new_tokens, args.temperature, args.seed, progress=True)[0]
        for k, s in enumerate(chain.steps, start=1):
            sys.stdout.write(f"Step {k}: {step_body(s)}\n")
        sys.stdout.write(f"Answer: {chain.answer if chain.answer is not None else '(none)'}\n")
        if chain.meta.get("stop_reason") not in ("eos", "answer"):
            logger.warning("Generation stopped early: %s", chain.meta.get("stop_reason"))
        return 0

    todo = []
    stem = Path(args.input).stem
    for lineno, row, err in read_rows(args.input):
        if err or row is None:
            logger.warning("Skipping %s line %d: %s", args.input, lineno, err)
            continue
        q = problem_of(row)
        if q is None:
            logger.warning("Skipping %s line %d: %s", args.input, lineno, NO_PROBLEM)
            continue
        row = dict(row)
        row["id"] = f"{args.id_prefix}{row.get('id', f'{stem}-{lineno - 1}')}"
        todo.append((str(row["id"]), q, row))
    todo = todo[args.offset :]
    if args.limit:
        todo = todo[: args.limit]
    with ResumableWriter(args.output) as w:
        pending = [t for t in todo if t[0] not in w.done]
        logger.info("%d questions, %d already done, %d to generate", len(todo), len(todo) - len(pending), len(pending))
        bar = tqdm(total=len(pending), desc="chains", unit="chain")
        for s in range(0, len(pending), args.batch_size):
            batch = pending[s : s + args.batch_size]
            chains = llm.generate([q for _, q, _ in batch], args.max_new_tokens, args.temperature, args.seed)
            for (rid, _, row), chain in zip(batch, chains):
                out = {k: v for k, v in row.items() if k not in ("steps", "text", "ids", "spans")}
                out.update(chain.to_row())
                out["id"] = rid
                out["prompt_len"] = len(chain.prompt_ids)
                w.write(out)
            bar.update(len(batch))
        bar.close()
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    """Score every step of every chain in a JSONL file with the head and/or baselines."""
    from .llm import load_llm
    from .method_choice import resolve_head, resolve_methods
    from .ray_run import ray_settings
    from .scoring import build_scorers, score_file
    from .uhead import read_config

    # default: the head and every method that is not opt-in; prm:<id> and combined:<verifier> register here
    methods, explicit = resolve_methods(args.methods, args.prm_family, args.trust_remote_code)
    if not Path(args.input).is_file():
        raise InputError(f"No input file {args.input}: give chains as JSONL (from generate, or problem + steps rows).")
    if args.head:
        read_config(args.head)  # refuse a missing or broken head before the model loads
    ray = ray_settings(args, rows_per_batch=4 * max(1, args.batch_size))
    llm = load_llm(args.model)
    choice = resolve_head(methods, llm, args.head, args.allow_other_build, explicit)
    methods, head, head_path = choice.methods, choice.head, choice.source
    scorers = build_scorers(llm, methods, head)
    runner = None
    if ray is not None:
        from .ray_run import RayRunner
        from .workers import ModelRecipe, ScoreRecipe, open_score

        recipe = ScoreRecipe(
            ModelRecipe.of(llm), tuple(scorers), str(Path(head_path).resolve()) if head is not None else None,
            args.allow_other_build, args.prm_family, args.trust_remote_code,
        )
        runner = RayRunner(open_score, recipe, ray, what="chains")
    written, skipped = score_file(args.input, args.output, llm, scorers, args.batch_size, args.limit, runner)
    logger.info("Wrote %d scored chains to %s (%d rows skipped)", written, args.output, skipped)
    return 0


def _prog_name() -> str:
    """``uhead-viz`` when run as the installed console script, else ``python -m uhead_viz``."""
    return "uhead-viz" if Path(sys.argv[0]).name == "uhead-viz" else "python -m uhead_viz"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=_prog_name(), description=__doc__.splitlines()[0])
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="cmd", required=True)

    g = sub.add_parser("generate", help="generate step-by-step chains for questions")
    g.add_argument("--question", help="one question; prints the steps and the answer")
    g.add_argument("--input", help="JSONL with 'question' (or 'problem') and optional 'id' fields")
    g.add_argument("--output", help="JSONL to append chains to; ids already there are skipped")
    g.add_argument(
        "--model",
        default=None,
        help="packaged name, local folder or hub id (default: $UHEAD_VIZ_MODEL or qwen-coder-1.5b)",
    )
    g.add_argument("--max-new-tokens", type=int, default=320)
    g.add_argument("--temperature", type=float, default=0.0)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--batch-size", type=int, default=8)
    g.add_argument("--offset", type=int, default=0, help="skip the first N questions (for shards)")
    g.add_argument("--limit", type=int, default=0, help="only N questions (after --offset)")
    g.add_argument(
        "--id-prefix", default="", help="prefix for row ids, so another model's chains of the same questions keep apart"
    )
    g.set_defaults(func=cmd_generate)

    sc = sub.add_parser("score", help="score each step of chains with the uncertainty head and baselines")
    sc.add_argument("--input", required=True, help="JSONL of chains: rows from generate, or {id, problem, steps}")
    sc.add_argument("--output", required=True, help="JSONL to append scored rows to; ids already there are skipped")
    sc.add_argument(
        "--methods",
        default=None,
        help="comma-separated: default (head + baselines), all (adds judge, combined), names, prm:<id>, "
        "combined:<verifier>; uhead is dropped if no head fits",
    )
    add_model_arguments(sc)
    sc.add_argument("--batch-size", type=int, default=8)
    sc.add_argument("--limit", type=int, default=0, help="only the first N rows")
    from .ray_run import add_ray_arguments

    add_ray_arguments(sc, "chains per Ray task, in whole --batch-size batches (default 4 batches)")
    sc.set_defaults(func=cmd_score)
    add_evaluate_parser(sub)
    add_train_parsers(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    for noisy in ("httpx", "urllib3", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        return int(args.func(args) or 0)
    except (PackError, InputError, RowError, FileNotFoundError) as e:
        sys.stderr.write(f"error: {e}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("interrupted; finished records are saved, run the same command again to resume\n")
        return 130
