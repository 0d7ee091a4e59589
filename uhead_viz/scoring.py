"""Score chains from JSONL rows: rebuild each row's Chain, run every method, attach the scores.

Two row shapes come in. Rows written by ``generate`` carry the model's own token ids and
step spans; those are reused as they are, because re-tokenizing decoded text does not
always give back the ids the model wrote, and the scores must describe what the model
actually generated. Rows from elsewhere (ProcessBench-like ``{"id", "problem", "steps"}``)
are teacher-forced: the steps are rendered in our prompt's format and tokenized.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from . import settings
from .errors import HeadError, InputError, RowError
from .jsonl import NO_PROBLEM, ResumableWriter, problem_of, read_rows
from .scorers import InternalsCache, Scorer, get_scorer
from .steps import Chain, chain_from_steps, special_ids
from .uhead import UHead

logger = logging.getLogger(__name__)

# A configured cap on prompt + chain tokens, below any model's context: a teacher-forced pass
# of the default model costs 70-85 ms per token on one CPU core (measured on 1,065- and
# 4,013-token chains), so one 30,000-token row would hold the app's only model worker for
# over half an hour. ``UHEAD_VIZ_MAX_CHAIN_TOKENS`` raises it.
MAX_CHAIN_TOKENS = settings.max_chain_tokens()  # read once, when the module loads


def length_problem(chain: Chain, llm: Any) -> str | None:
    """Why ``chain`` is too long to score (past the model's context or the configured cap), or None."""
    n = len(chain.prompt_ids) + len(chain.ids)
    ctx = getattr(llm, "context", None)
    if ctx is not None and n > ctx:
        return (
            f"the prompt and steps are {n:,} tokens; {llm.name} reads at most {ctx:,} (its context), "
            "so the chain is refused rather than cut. Shorten the problem or the steps."
        )
    if n > MAX_CHAIN_TOKENS:
        return (
            f"the prompt and steps are {n:,} tokens; the limit is {MAX_CHAIN_TOKENS:,} "
            "(UHEAD_VIZ_MAX_CHAIN_TOKENS), so the chain is refused rather than cut. Shorten the problem or the steps."
        )
    return None


def _norm(name: Any) -> str:
    return str(name or "").strip().rstrip("/").split("/")[-1].lower()


def row_problem(row: dict[str, Any]) -> str:
    """The row's problem text; RowError when it has none."""
    problem = problem_of(row)
    if problem is None:
        raise RowError(NO_PROBLEM)
    return problem


def row_to_chain(row: dict[str, Any], llm: Any) -> Chain:
    """The Chain a row describes, from its stored ids/spans when they are this model's; RowError if
    malformed or too long to score (see ``length_problem``)."""
    chain = _row_to_chain(row, llm)
    why = length_problem(chain, llm)
    if why is not None:
        raise RowError(why[0].upper() + why[1:])
    return chain


def _row_to_chain(row: dict[str, Any], llm: Any) -> Chain:
    problem = row_problem(row)
    steps = row.get("steps")
    if not isinstance(steps, list) or not steps or not all(isinstance(s, str) for s in steps):
        raise RowError("'steps' must be a non-empty list of strings")
    if not all(s.strip() for s in steps):
        raise RowError("'steps' holds an empty step")
    n_chars = sum(len(s) for s in steps)
    if n_chars > 16 * MAX_CHAIN_TOKENS:  # far over any tokenization: refuse before tokenizing megabytes
        raise RowError(f"The steps are {n_chars:,} characters long, far over the {MAX_CHAIN_TOKENS:,}-token limit.")
    try:
        prompt_ids = llm.prompt_ids(problem)
    except InputError as e:
        raise RowError(str(e)) from e
    has_ids = "ids" in row or "spans" in row
    other_model = row.get("model") is not None and _norm(row["model"]) != _norm(llm.name)
    if has_ids and not other_model:
        ids, spans = row.get("ids"), row.get("spans")
        vocab = llm.model.get_input_embeddings().num_embeddings
        if not isinstance(ids, list) or not ids or not all(type(i) is int and 0 <= i < vocab for i in ids):
            raise RowError(f"'ids' must be a non-empty list of token ids below {vocab}")
        if not isinstance(spans, list) or len(spans) != len(steps):
            raise RowError(f"'spans' must hold one [start, end] per step ({len(steps)} steps)")
        out = []
        for sp in spans:
            ok = isinstance(sp, (list, tuple)) and len(sp) == 2 and all(type(x) is int for x in sp)
            if not ok or not 0 <= sp[0] < sp[1] <= len(ids):
                raise RowError(f"bad span {sp!r}: need 0 <= start < end <= {len(ids)}")
            out.append((int(sp[0]), int(sp[1])))
        if special_ids(llm.tokenizer).isdisjoint(ids):
            text = row.get("text") if isinstance(row.get("text"), str) else llm.tokenizer.decode(ids)
            return Chain(problem, list(steps), row.get("answer"), text, prompt_ids, list(ids), out)
        # template tokens (<|im_start|>...) fed as ids would act as chat structure, not text
        logger.warning("Row %s: its token ids hold special tokens; re-tokenizing its steps as text", row.get("id"))
    elif has_ids:
        logger.debug("Row was generated by %s, not %s: re-tokenizing its steps", row.get("model"), llm.name)
    return chain_from_steps(llm.tokenizer, problem, prompt_ids, steps)


def build_scorers(llm: Any, methods: list[str], head: UHead | None = None) -> dict[str, Scorer]:
    """One scorer per method, all sharing one internals cache (one forward pass per chain)."""
    cache = InternalsCache(llm)
    return {m: get_scorer(m, llm, head=head, cache=cache) for m in methods}


def score_chains(chains: list[Chain], scorers: dict[str, Scorer]) -> list[dict[str, list[float]]]:
    """Per chain, ``{method: [p_error per step]}``."""
    per_method = {name: s.score(chains) for name, s in scorers.items()}
    return [{name: [round(float(v), 6) for v in per_method[name][i]] for name in scorers} for i in range(len(chains))]


def score_rows(
    rows: list[dict[str, Any]],
    llm: Any,
    methods: list[str],
    head: UHead | None = None,
    scorers: dict[str, Scorer] | None = None,
) -> list[dict[str, Any]]:
    """Score each row's steps with every method; rows keep all their fields and gain ``scores``.

    Raises RowError (naming the row's position) on the first malformed row; callers that
    want to skip bad rows convert them with ``row_to_chain`` themselves.
    """
    scorers = scorers if scorers is not None else build_scorers(llm, methods, head)
    chains = []
    for i, row in enumerate(rows):
        try:
            chains.append(row_to_chain(row, llm))
        except RowError as e:
            raise RowError(f"row {i + 1} ({row.get('id', 'no id')}): {e}") from e
    return [attach(row, s, llm, scorers) for row, s in zip(rows, score_chains(chains, scorers))]


def scored_row(
    row: dict[str, Any],
    scores: dict[str, list[float]],
    llm: Any,
    by: dict[str, Any] | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """A scored row as the CLI writes it and the app lists it: the input row with ``fields`` set,
    its earlier scores kept and these methods' added, and ``scored_by`` naming the model
    (name and weights fingerprint) plus ``by``, so a reader can tell which build made the numbers."""
    out = {**row, **fields}
    prev = row.get("scores") if isinstance(row.get("scores"), dict) else {}
    out["scores"] = {**prev, **scores}
    out["scored_by"] = {"model": llm.name, "fingerprint": llm.fingerprint, **(by or {})}
    return out


def attach(row: dict[str, Any], scores: dict[str, list[float]], llm: Any, scorers: dict[str, Scorer]) -> dict[str, Any]:
    """``scored_row`` for the CLI: ``scored_by`` also holds the head's mode and threshold when a head scored."""
    head = getattr(scorers.get("uhead"), "head", None)
    by = {"uhead_mode": head.config.mode, "uhead_threshold": head.threshold} if head is not None else {}
    return scored_row(row, scores, llm, by)


# ----- heads and files, for the CLI and the app ---------------------------------------------
def checkpoint_dirs() -> list[Path]:
    """Where default heads live: ``UHEAD_VIZ_CHECKPOINTS``, else ``./checkpoints`` and the repo's ``checkpoints/``."""
    env = settings.checkpoints_dir()
    if env is not None:
        return [env]
    out = []
    for p in (Path.cwd() / "checkpoints", Path(__file__).resolve().parents[1] / "checkpoints"):
        if p.resolve() not in [q.resolve() for q in out]:
            out.append(p)
    return out


def default_head(llm: Any, allow_other_build: bool = False) -> tuple[UHead | None, str]:
    """The newest head in the checkpoint folders that fits ``llm``, or (None, why there is none)."""
    from .uhead import find_heads, load_head

    reasons = []
    for root in checkpoint_dirs():
        for cand in find_heads(root, llm, allow_other_build):
            if cand.reason is None:
                try:
                    head = load_head(cand.path, llm, allow_other_build)
                except HeadError as e:
                    reasons.append(str(e))
                    continue
                logger.info("Using head %s (%s mode)", cand.path, head.config.mode)
                return head, str(cand.path)
            reasons.append(cand.reason)
    dirs = " or ".join(str(d) for d in checkpoint_dirs())
    if not reasons:
        return None, f"no head checkpoint in {dirs}"
    return None, f"none of the {len(reasons)} heads in {dirs} fits it (first: {reasons[0]})"


def score_batch(
    rows: list[dict[str, Any]], llm: Any, scorers: dict[str, Scorer], on_row: Any = None
) -> list[dict[str, Any]]:
    """Rows in, rows out: one result per row, in order, ``{"row": scored row}`` or ``{"error": why}``.

    The one implementation of batch scoring: ``score_file`` calls it in this process and
    every Ray worker calls it on its share (``ray_run``), so a row's scores do not depend on
    what ran them (the head and the baselines score each chain on its own, so neither on its
    batch). A malformed row (RowError, ValueError) is reported in its result and the rest of
    the batch goes on; anything else is a bug and propagates.
    ``on_row`` is called after each row's capture (progress).
    """
    caches = {id(s.cache): s.cache for s in scorers.values()}
    for c in caches.values():
        c.max_items = max(c.max_items, 2 * len(rows))
    out: list[dict[str, Any]] = [{} for _ in rows]
    batch: list[tuple[int, dict[str, Any], Chain]] = []
    for i, row in enumerate(rows):
        try:
            chain = row_to_chain(row, llm)
            for c in caches.values():
                c.get(chain)  # the one forward pass every method reads
            batch.append((i, row, chain))
        except (RowError, ValueError) as e:
            out[i] = {"error": str(e)}
        if on_row is not None:
            on_row()
    if batch:
        for (i, row, _), scores in zip(batch, score_chains([c for _, _, c in batch], scorers)):
            out[i] = {"row": attach(row, scores, llm, scorers)}
    return out


def score_todo(input_path: str | Path, limit: int = 0) -> tuple[list[tuple[int, str, dict[str, Any]]], int]:
    """The rows of a chains file to score, as (line, id, row), and how many lines were unreadable.

    A row without an id gets ``<file stem>-<line - 1>``, so a resumed run recognizes it.
    """
    todo = []
    skipped = 0
    stem = Path(input_path).stem
    for lineno, row, err in read_rows(input_path):
        if err or row is None:
            logger.warning("Skipping %s line %d: %s", input_path, lineno, err)
            skipped += 1
            continue
        row = dict(row)
        row.setdefault("id", f"{stem}-{lineno - 1}")
        todo.append((lineno, str(row["id"]), row))
    if limit:
        todo = todo[:limit]
    return todo, skipped


def score_file(
    input_path: str | Path,
    output_path: str | Path,
    llm: Any = None,
    scorers: dict[str, Scorer] | None = None,
    batch_size: int = 8,
    limit: int = 0,
    runner: Any = None,
) -> tuple[int, int]:
    """Score a JSONL file into another, resumably; returns (rows written, rows skipped).

    Bad rows are reported with their line number and skipped. The pending rows are cut
    into batches of ``batch_size``; each batch goes through ``score_batch`` (here, with
    ``llm`` and ``scorers``, or wherever ``runner`` sends it: ``runner(batches)`` yields
    each batch's results in order, as ``ray_run.RayRunner`` does) and is written as soon
    as its results arrive, in input order, so an interrupted run loses at most the
    batches in flight.
    """
    from tqdm import tqdm

    todo, skipped = score_todo(input_path, limit)
    written = 0
    size = max(1, batch_size)
    with ResumableWriter(output_path) as w:
        pending = [t for t in todo if t[1] not in w.done]
        logger.info("%d rows, %d already scored, %d to score", len(todo), len(todo) - len(pending), len(pending))
        chunks = [pending[s : s + size] for s in range(0, len(pending), size)]
        bar = tqdm(total=len(pending), desc="scoring", unit="chain")
        if runner is None:
            if llm is None or scorers is None:
                raise ValueError("score_file needs llm and scorers, or a runner")
            tick = lambda: bar.update(1)  # noqa: E731  (the bar moves per chain, not per batch)
            results = (score_batch([row for _, _, row in c], llm, scorers, on_row=tick) for c in chunks)
        else:
            results = runner([[row for _, _, row in c] for c in chunks])
        for chunk, res in zip(chunks, results):
            for (lineno, rid, _), r in zip(chunk, res):
                if "error" in r:
                    logger.warning("Skipping %s line %d (id %s): %s", input_path, lineno, rid, r["error"])
                    skipped += 1
                else:
                    w.write(r["row"])
                    written += 1
            if runner is not None:
                bar.update(len(chunk))
        bar.close()
    return written, skipped
