"""``python -m uhead_viz evaluate``: every scoring method on labelled chains, one report.

    python -m uhead_viz evaluate --data FILE --format {processbench,jsonl} --out report.json
        [--limit N] [--methods default|all|m1,m2,...] [--threshold default|best|X]

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

import argparse
import hashlib
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import InputError, RowError
from .jsonl import NO_PROBLEM, ResumableWriter, problem_of, read_rows
from .labels.base import first_error_labels
from .thresholds import (
    Policy,
    ValThresholds,
    best_on_data,
    describe,
    from_validation,
    parse_policy,
    policy_name,
    threshold_for,
)

# metrics (scikit-learn) and the label importers are imported where used: the CLI imports
# this module for its parser, and ``generate`` should not pay for them

logger = logging.getLogger(__name__)

FORMATS = ("processbench", "jsonl")
CAPTURE = "capture"


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
    return Item(rid, keep, labels, gold, _digest(keep), row_finished(row) and n == len(row["steps"]))


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


# ----- methods --------------------------------------------------------------------------------
def method_classes() -> dict[str, Any]:
    from .scorers import SCORERS

    SCORERS.load_all()
    return {n: c for n, c in SCORERS.items() if ":" not in n}


def resolve_methods(
    spec: str | None, prm_family: str | None = None, trust_remote_code: bool = False, evaluation: bool = False
) -> tuple[list[str], set[str]]:
    """Method names in run order (combined scores last) and the ones named explicitly.

    ``default`` = the head and every method that is not opt-in (with ``evaluation``, also the
    trivial baselines every report holds); ``all`` = every registered method;
    ``prm:<id>`` / ``combined:<verifier>`` are registered on the way.
    """
    from .scorers.combined import PREFIX as COMBINED
    from .scorers.combined import combined_method
    from .scorers.prm import PREFIX as PRM_PREFIX
    from .scorers.prm import prm_method

    static = method_classes()
    defaults = [
        n
        for n, c in static.items()
        if not getattr(c, "opt_in", False) and (evaluation or not getattr(c, "evaluation_only", False))
    ]
    out: list[str] = []
    explicit: set[str] = set()
    for tok in [t.strip() for t in (spec or "default").split(",") if t.strip()]:
        if tok == "default":
            out += defaults
        elif tok == "all":
            out += list(static)
        elif tok.startswith(PRM_PREFIX):
            prm_method(tok, prm_family, trust_remote_code)
            out.append(tok)
            explicit.add(tok)
        elif tok.startswith(COMBINED):
            verifier = tok[len(COMBINED) :]
            if verifier.startswith(PRM_PREFIX):
                prm_method(verifier, prm_family, trust_remote_code)
            combined_method(tok)
            out.append(tok)
            explicit.add(tok)
        elif tok in static:
            out.append(tok)
            explicit.add(tok)
        else:
            raise InputError(
                f"Unknown method {tok!r}. Known: default, all, {', '.join(sorted(static))}, prm:<id>, "
                "combined:<verifier>."
            )
    uniq = list(dict.fromkeys(out))
    is_comb = [n == "combined" or n.startswith(COMBINED) for n in uniq]
    order = [n for n, c in zip(uniq, is_comb) if not c] + [n for n, c in zip(uniq, is_comb) if c]
    # stable: the head first, as everywhere else; the trivial baselines last, as reference lines
    order.sort(key=lambda n: (n != "uhead", n in static and getattr(static[n], "evaluation_only", False)))
    return order, explicit


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
            for cache in caches.values():
                cache.get(chain)  # the one forward pass every internals method reads
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


# ----- metrics and the report -----------------------------------------------------------------
def _num(x: Any) -> Any:
    if isinstance(x, float):
        return None if not math.isfinite(x) else round(x, 6)
    if isinstance(x, dict):
        return {k: _num(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_num(v) for v in x]
    return x


def method_report(
    items: list[Item], scores: list[list[float]], seconds: list[float], threshold: tuple[float, str], label: str
) -> dict[str, Any]:
    from .metrics import ece, pr_auc, processbench, roc_auc

    labels = [it.labels for it in items]
    pb = [(it.gold, s) for it, s in zip(items, scores) if it.gold is not None]
    acc = processbench([g for g, _ in pb], [s for _, s in pb], threshold[0]) if pb else {}
    return {
        "label": label,
        "pr_auc": pr_auc(labels, scores),
        "roc_auc": roc_auc(labels, scores),
        "f1": acc.get("f1", float("nan")),
        "error_acc": acc.get("error_acc", float("nan")),
        "correct_acc": acc.get("correct_acc", float("nan")),
        "ece": ece(labels, scores),
        "seconds_per_chain": sum(seconds) / len(seconds) if seconds else float("nan"),
        "threshold": threshold[0],
        "threshold_from": threshold[1],
    }


def build_report(
    dataset: str,
    fmt: str,
    items: list[Item],
    done: dict[str, dict[str, dict[str, Any]]],
    scorers: dict[str, Any],
    policy: Policy,
    skipped: list[dict[str, Any]],
    extra: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], dict[str, list[list[float]]], list[Item]]:
    """The report dict, plus each method's scores and the items they cover (for the figures)."""
    from .pairwise import pairwise_accuracy

    ok = [it for it in items if it.id in done and all(m in done[it.id] for m in scorers)]
    methods: dict[str, Any] = {}
    per_method: dict[str, list[list[float]]] = {}
    gold = [it.gold for it in ok]
    for m, s in scorers.items():
        sc = [done[it.id][m]["scores"] for it in ok]
        secs = [float(done[it.id][m]["seconds"]) for it in ok]
        pb_gold = [g for g in gold if g is not None]
        pb_scores = [x for g, x in zip(gold, sc) if g is not None]
        t = threshold_for(m, s, policy, pb_gold, pb_scores)
        methods[m] = method_report(ok, sc, secs, t, getattr(s, "label", m))
        methods[m]["f1_best"] = best_on_data(pb_gold, pb_scores)  # this data as validation for another run
        pw = pairwise_accuracy([it.row for it in ok], [it.labels for it in ok], sc)
        if pw is not None:  # rows hold rated alternatives to the same step (see pairwise.py)
            methods[m]["pairwise"] = pw
        per_method[m] = sc
    cap = [float(done[it.id][CAPTURE]["seconds"]) for it in ok if CAPTURE in done[it.id]]
    shared = [m for m, s in scorers.items() if s.needs_internals]
    report: dict[str, Any] = {
        "dataset": dataset,
        "format": fmt,
        "n_chains": len(ok),
        "n_steps": sum(len(it.labels) for it in ok),
        "n_labelled_steps": sum(x is not None for it in ok for x in it.labels),
        "n_wrong_steps": sum(x == 1 for it in ok for x in it.labels),
        "n_chains_with_error": sum(it.gold is not None and it.gold >= 0 for it in ok),
        "n_chains_without_error": sum(it.gold == -1 for it in ok),
        "methods": methods,
        "capture": {
            "seconds_per_chain": sum(cap) / len(cap) if cap else float("nan"),
            "shared_by": shared,
            "note": "one teacher-forced forward pass per chain, read by every method in shared_by; its time is "
            "counted here once and not in those methods' seconds_per_chain",
        },
        "threshold_policy": policy_name(policy),
        **({"thresholds_from": policy.source} if isinstance(policy, ValThresholds) else {}),
        "skipped": skipped,
        **(extra or {}),
    }
    if policy == "best":
        report["notes"] = ["thresholds were chosen to maximize F1 on this data: F1 and accuracies are optimistic"]
    return _num(report), per_method, ok


def _fmt(x: Any, digits: int = 3) -> str:
    return "n/a" if x is None else (f"{x:.{digits}f}" if isinstance(x, float) else str(x))


def markdown_table(report: dict[str, Any]) -> str:
    head = "| method | PR-AUC | ROC-AUC | F1 | error acc | correct acc | ECE | threshold | s/chain |"
    lines = [
        f"{report['dataset']}: {report['n_chains']} chains, {report['n_steps']} steps "
        f"({report['n_wrong_steps']} wrong)",
        "",
        head,
        "|" + "---|" * 9,
    ]
    pairwise = any("pairwise" in r for r in report["methods"].values())
    if pairwise:
        lines[2] += " pairwise [95 % CI] |"
        lines[3] += "---|"
    for m, r in report["methods"].items():
        cells = [r["pr_auc"], r["roc_auc"], r["f1"], r["error_acc"], r["correct_acc"], r["ece"], r["threshold"]]
        lines.append(f"| {m} | " + " | ".join(_fmt(c) for c in cells) + f" | {_fmt(r['seconds_per_chain'], 4)} |")
        if pairwise:
            pw = r.get("pairwise")
            lines[-1] += f" {pw['accuracy']:.3f} [{pw['ci95'][0]:.3f}, {pw['ci95'][1]:.3f}] |" if pw else " |"
    cap = report["capture"]
    if cap["shared_by"]:
        lines.append(f"| (capture, shared) | | | | | | | | {_fmt(cap['seconds_per_chain'], 4)} |")
    lines += ["", describe(report["methods"])]
    if report["skipped"]:
        lines += ["", f"{len(report['skipped'])} rows skipped (listed in the report)."]
    return "\n".join(lines) + "\n"


def figures(items: list[Item], per_method: dict[str, list[list[float]]], bins: int = 10) -> list[Any]:
    """Plotly figures: precision-recall curves and a reliability diagram, one trace per method."""
    import numpy as np
    import plotly.graph_objects as go
    from sklearn.metrics import precision_recall_curve

    from .metrics import _flat

    labels = [it.labels for it in items]
    pr = go.Figure()
    rel = go.Figure()
    rel.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="perfect", line={"dash": "dot", "color": "grey"}))
    for m, scores in per_method.items():
        y, p = _flat(labels, scores)
        if y.size and y.min() != y.max():
            prec, rec, _ = precision_recall_curve(y, p)
            pr.add_trace(go.Scatter(x=rec, y=prec, mode="lines", name=m, line={"shape": "hv"}))
        if y.size:
            idx = np.minimum((p * bins).astype(int), bins - 1)
            xs, ys, ns = [], [], []
            for b in range(bins):
                sel = idx == b
                if sel.any():
                    xs.append(float(p[sel].mean()))
                    ys.append(float(y[sel].mean()))
                    ns.append(int(sel.sum()))
            rel.add_trace(go.Scatter(x=xs, y=ys, mode="lines+markers", name=m, text=[f"{n} steps" for n in ns]))
    y_all, _ = _flat(labels, next(iter(per_method.values()))) if per_method else (np.zeros(0), None)
    if y_all.size:
        pr.add_hline(y=float(y_all.mean()), line_dash="dot", line_color="grey", annotation_text="share of wrong steps")
    pr.update_layout(title="Precision-recall, wrong steps positive", xaxis_title="recall", yaxis_title="precision")
    pr.update_xaxes(range=[0, 1])
    pr.update_yaxes(range=[0, 1.02])
    rel.update_layout(
        title=f"Reliability ({bins} equal-width bins)", xaxis_title="mean p_error", yaxis_title="fraction wrong"
    )
    rel.update_xaxes(range=[0, 1])
    rel.update_yaxes(range=[0, 1])
    return [pr, rel]


def write_html(path: Path, report: dict[str, Any], figs: list[Any]) -> None:
    """One self-contained page: the table and the figures, plotly.js inline (works offline)."""
    import html

    rows = []
    for m, r in report["methods"].items():
        cells = [r["pr_auc"], r["roc_auc"], r["f1"], r["error_acc"], r["correct_acc"], r["ece"], r["threshold"]]
        tds = "".join(f"<td>{_fmt(c)}</td>" for c in cells) + f"<td>{_fmt(r['seconds_per_chain'], 4)}</td>"
        rows.append(f"<tr><td>{html.escape(m)}</td>{tds}</tr>")
    cap = report["capture"]
    if cap["shared_by"]:
        rows.append(f"<tr><td>(capture, shared)</td>{'<td></td>' * 7}<td>{_fmt(cap['seconds_per_chain'], 4)}</td></tr>")
    head = "".join(
        f"<th>{h}</th>"
        for h in ["method", "PR-AUC", "ROC-AUC", "F1", "error acc", "correct acc", "ECE", "threshold", "s/chain"]
    )
    divs = [f.to_html(full_html=False, include_plotlyjs=(i == 0)) for i, f in enumerate(figs)]
    title = html.escape(f"uhead-viz evaluation: {report['dataset']}")
    page = f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font-family:sans-serif;margin:2em}} td,th{{padding:.2em .6em;text-align:right}}
td:first-child{{text-align:left}} table{{border-collapse:collapse}} tr:nth-child(even){{background:#f4f4f4}}</style>
</head><body>
<h1>{title}</h1>
<p>{report["n_chains"]} chains, {report["n_steps"]} steps, {report["n_wrong_steps"]} wrong; thresholds:
{html.escape(report["threshold_policy"])}; {len(report["skipped"])} rows skipped.</p>
<table><tr>{head}</tr>{"".join(rows)}</table>
{"".join(divs)}
</body></html>
"""
    path.write_text(page, encoding="utf-8")


# ----- the command ----------------------------------------------------------------------------
def build_scorers_for(
    methods: list[str], llm: Any, head: Any, cache: Any, explicit: set[str]
) -> tuple[dict[str, Any], dict[str, str]]:
    """The scorers that can run, sharing ``cache``, and why each other method cannot.

    A method named explicitly that cannot run is an error; one that came with ``default``
    or ``all`` is left out with a warning.
    """
    from .scorers import get_scorer

    scorers: dict[str, Any] = {}
    unavailable: dict[str, str] = {}
    for m in methods:
        try:
            scorers[m] = get_scorer(m, llm, head=head, cache=cache)
        except (InputError, KeyError, ValueError) as e:
            if m in explicit:
                raise InputError(f"Method {m} cannot run: {e}") from e
            unavailable[m] = str(e)
            logger.warning("Leaving out %s: %s", m, e)
    if not scorers:
        raise InputError("No method can run: " + "; ".join(f"{k}: {v}" for k, v in unavailable.items()))
    return scorers, unavailable


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
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    if ok:
        try:
            write_html(out.with_suffix(".html"), report, figures(ok, per_method))
        except ImportError as e:  # plotly is optional for headless runs; the JSON report is what counts
            logger.warning("No HTML report (%s); the JSON report is complete.", e)
    return report


def cmd_evaluate(args: argparse.Namespace) -> int:
    import sys

    from .llm import load_llm
    from .ray_run import ray_settings
    from .scoring import default_head
    from .uhead import load_head, read_config

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
    from .scorers import SCORERS

    # position and length baselines alone need no model: the run then loads none
    llm = load_llm(args.model) if any(getattr(SCORERS[m], "needs_model", True) for m in methods) else None

    head, head_from, unavailable = None, None, {}
    if any(SCORERS[m].needs_head for m in methods):
        if args.head:
            head, head_from = load_head(args.head, llm, allow_other_build=args.allow_other_build), args.head
        else:
            head, why = default_head(llm, allow_other_build=args.allow_other_build)
            head_from = why if head is not None else None
            if head is None:
                dropped = [m for m in methods if SCORERS[m].needs_head]
                named = [m for m in dropped if m in explicit]
                if named:
                    raise InputError(f"{', '.join(named)} needs a head, and none fits {llm.name}: {why}.")
                logger.warning("UHead is unavailable for %s: %s. Leaving out %s.", llm.name, why, ", ".join(dropped))
                unavailable = {m: f"no head: {why}" for m in dropped}
                methods = [m for m in methods if m not in dropped]
    if not methods:
        raise InputError("No method left to run.")
    extra = {"model": llm.name if llm is not None else None, "head": head_from, "unavailable": unavailable}
    store = None
    if args.store and llm is not None:
        from .featstore import FeatureStore
        from .internals import CaptureSpec
        from .uhead import base_info

        spec = head.spec if head is not None else CaptureSpec()
        store = FeatureStore(args.store, spec, base_info(llm))
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
    p.add_argument("--head", default=None, help="head checkpoint folder (default: a matching one in checkpoints/)")
    p.add_argument("--model", default=None, help="packaged name, local folder or hub id")
    p.add_argument("--allow-other-build", action="store_true", help="use a head trained on another build of the model")
    p.add_argument("--prm-family", default=None, help="family of prm:<id> methods whose family is not detected")
    p.add_argument("--trust-remote-code", action="store_true", help="allow PRMs that ship their own model code")
    p.add_argument(
        "--store", default=None, help="feature store folder: reuse captures made by `features` (and keep new ones)"
    )
    from .ray_run import add_ray_arguments

    add_ray_arguments(p, "labelled chains per Ray task (default 16)")
    p.set_defaults(func=cmd_evaluate)
    return p
