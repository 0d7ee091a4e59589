"""Every scoring method on labelled chains: load them, score them resumably, measure, report.

The command (``python -m uhead_viz evaluate``) is ``cli_evaluate``; the report writers are
``reports``; which methods run is ``method_choice``. This module is the run itself, which
Ray workers share (``evaluate_item``).

Data. ``processbench``: a JSON list (or JSONL) of ``{id, generator, problem, steps,
final_answer_correct, label}``; the steps before ``label`` are correct, the step at
``label`` is wrong and later steps are not judged, so they are left out (-1: all correct).
``jsonl``: our rows with ``steps`` and one label per step (0 fine, 1 wrong, None not
labelled), as ``prm800k_rows`` or the ``label`` command write them; trailing unlabelled
steps are left out. Leaving steps out changes no score of the steps kept: every method
reads a step with only what comes before it. A malformed row is logged by id, listed in
the report under ``skipped`` and passed over; it never ends the run.

Methods. By default the uncertainty head (when a head in ``checkpoints/`` fits the
model, else it is skipped with a warning) and every baseline; ``all`` adds the opt-in
methods (the LLM judge, the combined score); ``prm:<id>`` adds a PRM and
``combined:<verifier>`` a combined score with another verifier.

Metrics, per method, wrong steps positive: step PR-AUC and ROC-AUC; ProcessBench
error accuracy (chains with an error whose first error is found exactly), correct
accuracy (chains without one where none is flagged) and their harmonic mean F1, where
the predicted first error is the first step whose p_error exceeds the method's threshold;
ECE over 10 bins; seconds per chain. Thresholds: ``default`` is the head's stored
threshold (chosen on its validation data) for ``uhead`` and 0.5 for every other method;
``best`` picks, per method, the threshold that maximizes F1 on this very data (an
optimistic upper bound, and the report says so); a number applies to every method.
Chains with no wrong step but some unlabelled ones have no known first error: they count
in the step metrics only.

Timing. The teacher-forced forward pass is captured once per chain and shared by every
method that reads internals; its time goes to one ``capture`` entry and each method is
timed on its own, given the capture. ``combined`` is charged its parts' time (head +
verifier), which it reuses rather than recomputes.

Files. The report (JSON), the same table in Markdown on stdout, ``<report>.html`` (PR
curves and a reliability diagram, plotly.js inline so it opens offline) and the
resumable score cache ``<report>.scores.jsonl`` (one line per row and method; a rerun
skips what is there, and rescores a row whose text or whose model/head changed).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import InputError, RowError
from .jsonl import NO_PROBLEM, ResumableWriter, problem_of, read_rows
from .labels.base import first_error_labels

# (re-exported: callers found them here before ``method_choice`` held them)
from .method_choice import build_scorers_for, method_classes, resolve_methods  # noqa: F401
from .reports import CAPTURE, build_report, write_report
from .thresholds import Policy

if TYPE_CHECKING:
    from .steps import Chain

# metrics (scikit-learn) and the label importers are imported where used: the CLI imports
# this module for its parser, and ``generate`` should not pay for them

logger = logging.getLogger(__name__)

FORMATS = ("processbench", "jsonl")


# ----- data -----------------------------------------------------------------------------------
@dataclass
class Item:
    """One labelled chain to evaluate: the row given to ``row_to_chain`` and its step labels."""

    id: str
    row: dict[str, Any]
    labels: list[int | None]
    gold: int | None  # first wrong step, -1 if all are fine, None if unknown (unlabelled steps, no error)
    digest: str
    finished: bool = True  # the kept steps end the chain (see scorers/trivial.py: ``is_last_step``)
    # the row's steps (and spans) beyond the last labelled one, cut off in ``row``: a feature store
    # holds the whole chain's capture, and the cut chain's is its first rows
    rest: dict[str, Any] | None = None


def _digest(row: dict[str, Any]) -> str:
    key = [problem_of(row), row.get("steps"), row.get("ids"), row.get("spans")]
    return hashlib.sha1(json.dumps(key, ensure_ascii=False).encode("utf-8")).hexdigest()[:16]


def _check_jsonl(row: dict[str, Any]) -> str | None:
    if problem_of(row) is None:
        return NO_PROBLEM
    steps, labels = row.get("steps"), row.get("labels")
    if not isinstance(steps, list) or not steps or not all(isinstance(s, str) and s.strip() for s in steps):
        return "'steps' must be a non-empty list of non-empty strings"
    if not isinstance(labels, list) or len(labels) != len(steps):
        return f"'labels' must be a list with one label per step ({len(steps)} steps)"
    if not all(x is None or (x in (0, 1) and not isinstance(x, bool)) for x in labels):
        return "'labels' must hold 0 (fine), 1 (wrong) or null"
    if all(x is None for x in labels):
        return "none of its steps is labelled"
    spans = row.get("spans")
    if spans is not None and (not isinstance(spans, list) or len(spans) != len(steps)):
        return f"'spans' must hold one [start, end] per step ({len(steps)} steps)"
    return None


def _item(rid: str, row: dict[str, Any], labels: list[int | None]) -> Item:
    """Keep the steps up to the last labelled one; the first wrong step is the gold answer."""
    from .scorers.trivial import row_finished

    n = max(i for i, x in enumerate(labels) if x is not None) + 1
    keep = {k: v for k, v in row.items() if k not in ("label", "labels", "scores", "steps", "spans")}
    keep["id"] = rid
    keep["steps"] = list(row["steps"][:n])
    if isinstance(row.get("spans"), list):
        keep["spans"] = row["spans"][:n]
    labels = list(labels[:n])
    if 1 in labels:
        gold: int | None = labels.index(1)
    else:
        gold = -1 if all(x == 0 for x in labels) else None
    rest = None
    if n < len(row["steps"]):
        rest = {"steps": list(row["steps"][n:])}
        if isinstance(row.get("spans"), list):
            rest["spans"] = row["spans"][n:]
    return Item(rid, keep, labels, gold, _digest(keep), row_finished(row) and n == len(row["steps"]), rest)


def load_items(path: str | Path, fmt: str) -> tuple[list[Item], list[dict[str, Any]]]:
    """Labelled chains from a file and the rows skipped (``{"id", "line", "reason"}``).

    RowError only if the file as a whole cannot be read (a JSON list that does not parse).
    """
    from .labels.human import _check_processbench

    if fmt not in FORMATS:
        raise InputError(f"Unknown --format {fmt!r}: use {' or '.join(FORMATS)}.")
    items: list[Item] = []
    skipped: list[dict[str, Any]] = []
    seen: set[str] = set()
    stem = Path(path).stem
    for line, row, err in read_rows(path):
        rid = None
        if row is not None:
            rid = (
                str(row["id"])
                if row.get("id") is not None
                else (None if fmt == "processbench" else f"{stem}-{line - 1}")
            )
            err = _check_processbench(row) if fmt == "processbench" else _check_jsonl(row)
            if err is None and rid in seen:
                err = "repeats an earlier id"
        if err is not None or row is None:
            logger.warning("Skipping row %s (%s line %d): %s", rid, Path(path).name, line, err)
            skipped.append({"id": rid, "line": line, "reason": err})
            continue
        assert rid is not None
        seen.add(rid)
        if fmt == "processbench":
            labels = first_error_labels(row["label"], len(row["steps"]))
        else:
            labels = list(row["labels"])
        items.append(_item(rid, row, labels))
    return items, skipped


# ----- what a score depends on -----------------------------------------------------------------
def head_digest(head: Any) -> str:
    import torch

    h = hashlib.sha1(json.dumps([vars(head.config), head.threshold, head.spec.to_dict()], default=str).encode())
    for k, v in sorted(head.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().to(torch.float32).cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def identity(scorer: Any, llm: Any, head_id: str) -> str:
    """What a cached score depends on besides the row: the model, head or PRM that made it."""
    from .scorers.combined import Combined
    from .scorers.prm import PRM

    if not getattr(scorer, "needs_model", True):
        return "no model"
    if isinstance(scorer, PRM):
        return f"prm/{scorer.family}/{scorer.model_id}"
    if isinstance(scorer, Combined):
        return f"{identity(scorer.head_scorer, llm, head_id)} x {identity(scorer.verifier, llm, head_id)}"
    if getattr(scorer, "needs_head", False):
        return f"{llm.fingerprint}/{head_id}"
    return str(llm.fingerprint)


# ----- the score cache ------------------------------------------------------------------------
def store_entry(item: Item, method: str, by: str, scores: list[float] | None, seconds: float) -> dict[str, Any]:
    """One line of the score cache: a method's scores of one row and what made them."""
    e: dict[str, Any] = {"id": item.id, "method": method, "digest": item.digest, "by": by, "seconds": round(seconds, 6)}
    if scores is not None:
        e["scores"] = [round(float(v), 6) for v in scores]
    return e


class ScoreStore:
    """``<report>.scores.jsonl``: one line per (row id, method) with its scores and seconds."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.writer = ResumableWriter(self.path, id_key="_")  # repairs a torn last line
        self.entries: dict[tuple[str, str], dict[str, Any]] = {}
        for _, row, err in read_rows(self.path):
            if row is not None and not err and isinstance(row.get("id"), str) and isinstance(row.get("method"), str):
                self.entries[(row["id"], row["method"])] = row

    def get(self, item: Item, method: str, by: str) -> dict[str, Any] | None:
        e = self.entries.get((item.id, method))
        if e is None or e.get("digest") != item.digest or e.get("by") != by:
            return None
        if method != CAPTURE and not (isinstance(e.get("scores"), list) and len(e["scores"]) == len(item.labels)):
            return None
        return e

    def put(self, item: Item, method: str, by: str, scores: list[float] | None, seconds: float) -> None:
        self.add(store_entry(item, method, by, scores, seconds))

    def add(self, entry: dict[str, Any]) -> None:
        """Write an entry made by ``store_entry`` (here or by a worker elsewhere)."""
        self.writer.write(entry)
        self.entries[(entry["id"], entry["method"])] = entry

    def close(self) -> None:
        self.writer.close()


def _checked(scores: Any, n: int, method: str) -> list[float]:
    if not isinstance(scores, list) or len(scores) != n:
        raise ValueError(f"{method} gave {len(scores) if isinstance(scores, list) else scores!r} scores for {n} steps")
    out = [float(v) for v in scores]
    if not all(math.isfinite(v) and 0.0 <= v <= 1.0 for v in out):
        raise ValueError(f"{method} gave a score outside [0, 1]")
    return out


def identities(scorers: dict[str, Any], llm: Any, head_id: str = "") -> dict[str, str]:
    """What each method's cached scores depend on (see ``identity``), plus the capture's."""
    by = {m: identity(s, llm, head_id) for m, s in scorers.items()}
    by[CAPTURE] = str(llm.fingerprint) if llm is not None else "no model"
    return by


def _whole_chain(item: Item, llm: Any) -> Chain | None:
    """The chain of ``item``'s row with the steps after its last labelled one put back (None if
    none were cut): ``features`` stored that chain, so the cut one is read from its capture."""
    from .scoring import row_to_chain

    if item.rest is None or llm is None:
        return None
    row = dict(item.row)
    row["steps"] = [*row["steps"], *item.rest["steps"]]
    if "spans" in item.rest and isinstance(row.get("spans"), list):
        row["spans"] = [*row["spans"], *item.rest["spans"]]
    try:
        return row_to_chain(row, llm)
    except RowError:
        return None


def evaluate_item(
    item: Item, have: dict[str, dict[str, Any] | None], scorers: dict[str, Any], llm: Any, by: dict[str, str]
) -> tuple[list[dict[str, Any]], str | None]:
    """One labelled chain in, its missing score-cache entries out: (new entries, why it failed or None).

    ``have`` holds the entries already cached for it (None where missing). The one
    implementation of a row's evaluation: ``run_scoring`` calls it here and Ray workers
    call it on their share. A malformed row (RowError, ValueError) returns the entries
    made before it failed and the reason.
    """
    from .scorers.combined import Combined, results_for
    from .scorers.trivial import text_chain
    from .scoring import row_to_chain

    have = dict(have)
    new: list[dict[str, Any]] = []
    caches = {id(s.cache): s.cache for s in scorers.values()}

    def wants_capture(m: str) -> bool:
        s = scorers[m]
        if isinstance(s, Combined):  # only for a part it has to compute itself
            return any(p.needs_internals and not have.get(n) for n, p in zip(s.parts, (s.head_scorer, s.verifier)))
        return bool(s.needs_internals)

    def keep(entry: dict[str, Any]) -> None:
        new.append(entry)
        have[entry["method"]] = entry

    todo = [m for m in scorers if have.get(m) is None]
    try:
        chain = row_to_chain(item.row, llm) if llm is not None else text_chain(item.row)
        chain.meta["finished"] = item.finished
        if len(chain.steps) != len(item.labels):
            raise RowError(f"the chain has {len(chain.steps)} steps but {len(item.labels)} labels")
        for cache in caches.values():
            memo = results_for(cache)
            memo.clear()  # one row at a time: the memo only serves combined scores of this row
            for m in scorers:
                if have.get(m) is not None:
                    memo.put(m, chain, have[m]["scores"])
        if any(wants_capture(m) for m in todo):
            t0 = time.perf_counter()
            longer = _whole_chain(item, llm) if any(c.store is not None for c in caches.values()) else None
            for cache in caches.values():
                cache.get(chain, longer=longer)  # the one forward pass every internals method reads
            keep(store_entry(item, CAPTURE, by[CAPTURE], None, time.perf_counter() - t0))
        for m in todo:
            s = scorers[m]
            t0 = time.perf_counter()
            scores = _checked(results_for(s.cache).scores(s, [chain])[0], len(item.labels), m)
            seconds = time.perf_counter() - t0
            if isinstance(s, Combined):  # charged its parts, which it took from the memo
                seconds += sum(float(have[p]["seconds"]) for p in s.parts if p in scorers and have.get(p))
            keep(store_entry(item, m, by[m], scores, seconds))
    except (RowError, ValueError) as e:  # InputError is a ValueError
        return new, str(e)
    finally:
        for cache in caches.values():
            results_for(cache).clear()
    return new, None


def run_scoring(
    items: list[Item],
    scorers: dict[str, Any],
    llm: Any,
    store: ScoreStore,
    head_id: str = "",
    progress: bool = True,
    runner: Any = None,
) -> tuple[dict[str, dict[str, dict[str, Any]]], list[dict[str, Any]]]:
    """Score every item with every method, resumably. Returns ({item id: {method: entry}}, skipped).

    Items whose every entry is cached are not sent anywhere. The rest go through
    ``evaluate_item`` here, or through ``runner`` (which gets units of ``{"item", "have",
    "by"}`` work and yields each unit's ``{"entries", "error"}`` results in order, as
    ``ray_run.RayRunner`` does); entries are written as results arrive.
    """
    from dataclasses import asdict

    from tqdm import tqdm

    by = identities(scorers, llm, head_id)
    done: dict[str, dict[str, dict[str, Any]]] = {}
    skipped: list[dict[str, Any]] = []
    pending: list[tuple[Item, dict[str, Any]]] = []
    for item in items:
        have = {m: store.get(item, m, by[m]) for m in [*scorers, CAPTURE]}
        if all(have[m] is not None for m in scorers):
            done[item.id] = {m: e for m, e in have.items() if e is not None}
        else:
            pending.append((item, have))
    if len(pending) < len(items):
        logger.info("%d of %d rows were already scored in %s", len(items) - len(pending), len(items), store.path)
    bar = tqdm(total=len(pending), desc="evaluate", unit="chain", disable=not progress)
    if runner is None:
        results: Any = ([dict(zip(("entries", "error"), evaluate_item(it, h, scorers, llm, by)))] for it, h in pending)
    else:  # one item per unit: a row's evaluation does not depend on its neighbours
        results = runner([[{"item": asdict(it), "have": h, "by": by}] for it, h in pending])
    n = 0
    for res in results:
        for r in res:
            item, have = pending[n]
            n += 1
            for e in r["entries"]:
                store.add(e)
                have[e["method"]] = e
            if r["error"] is not None:
                logger.warning("Skipping row %s: %s", item.id, r["error"])
                skipped.append({"id": item.id, "reason": r["error"]})
            else:
                done[item.id] = {m: e for m, e in have.items() if e is not None}
        bar.update(len(res))
    bar.close()
    return done, skipped


# ----- the run ----------------------------------------------------------------------------------
def evaluate(
    data: str | Path,
    fmt: str,
    llm: Any,
    methods: list[str],
    out: str | Path,
    head: Any = None,
    limit: int = 0,
    threshold: Policy = "default",
    explicit: set[str] | None = None,
    progress: bool = True,
    extra: dict[str, Any] | None = None,
    loaded: tuple[list[Item], list[dict[str, Any]]] | None = None,
    store: Any = None,
    runner: Any = None,
) -> dict[str, Any]:
    """Score, measure and write the report, its HTML page and the score cache; returns the report.

    ``loaded``: the (items, skipped) ``load_items`` already returned for ``data``.
    ``store``: a FeatureStore whose captures are reused (and to which new ones are added).
    ``runner``: where the rows are scored, if not here (see ``run_scoring``).
    """
    from .scorers import InternalsCache

    items, skipped = loaded if loaded is not None else load_items(data, fmt)
    if limit:
        items = items[:limit]
    if not items:
        raise InputError(f"No usable rows in {data} (format {fmt}): {len(skipped)} skipped.")
    explicit = explicit if explicit is not None else set(methods)
    cache = InternalsCache(llm, store=store)
    scorers, left_out = build_scorers_for(methods, llm, head, cache, explicit)
    unavailable: dict[str, str] = {**(extra or {}).get("unavailable", {}), **left_out}
    out = Path(out)
    store = ScoreStore(out.with_name(out.stem + ".scores.jsonl"))
    try:
        head_id = head_digest(head) if head is not None else ""
        done, failed = run_scoring(items, scorers, llm, store, head_id, progress, runner)
    finally:
        store.close()
    info = {**(extra or {}), "unavailable": unavailable, "score_cache": str(store.path), "data": str(data)}
    report, per_method, ok = build_report(Path(data).name, fmt, items, done, scorers, threshold, skipped + failed, info)
    write_report(out, report, ok, per_method)
    return report
