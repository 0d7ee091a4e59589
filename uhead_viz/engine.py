"""The app's pipeline: stream a chain with each step scored as it completes, then finalise.

While the chain is written, ``live.LiveScorer`` scores each step the moment it is complete,
from the internals ``capture.LiveCapture`` keeps during generation, with the same
``Scorer.score_internals`` the final pass calls.

When the chain is done, ``analyze_chain`` runs the same path as ``python -m uhead_viz
score``: one teacher-forced pass through the shared ``InternalsCache``, every method's
scorer, so the final numbers (and the ``analyze`` API) equal what the CLI gives for the same
chain. The live numbers differ from them only by float rounding (in fp32) or by int8
activation scales (the default CPU build quantizes activations per call); the final pass
replaces them. It also keeps what the "why" plots need: token probabilities and entropy,
each step's mean look-back attention, and the head's gradient x input attribution.

Everything returned is a plain JSON-able dict (an *analysis*), so it can sit in a
``gr.State``, be stored as a cached example, and be returned by the API; how one is built,
and the bounds on a request's settings, live in :mod:`uhead_viz.analysis`.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import settings
from .analysis import (  # noqa: F401 (ANALYSIS_VERSION and the request bounds re-exported: their home is analysis)
    ANALYSIS_VERSION,
    MAX_NEW_TOKENS,
    MIN_NEW_TOKENS,
    _r,
    build_analysis,
    request_settings,
    with_verifier,
)
from .capture import LiveCapture, Recorder  # noqa: F401  (LiveCapture re-exported: its home is capture)
from .chains_io import (  # noqa: F401 (re-exported: pasted and uploaded chains were read here)
    MAX_DATASET_ROWS,
    MAX_PASTE_CHARS,
    MAX_PASTE_STEPS,
    MAX_UPLOAD_BYTES,
    parse_steps,
    read_dataset,
    row_labels,
)
from .errors import Cancelled, InputError, RowError
from .internals import CaptureSpec, merge_specs
from .live import LiveScorer, complete_steps  # noqa: F401  (complete_steps re-exported: its home is live)
from .llm import clean_question
from .methods import method_label
from .modellock import ModelLock
from .public import scrub, shown_path
from .scorers import SCORERS, InternalsCache, Scorer, available, get_scorer
from .scorers.combined import combine  # noqa: F401 (re-exported: the engine's one combine)
from .scoring import checkpoint_dirs, default_head, length_problem, row_to_chain, scored_row
from .steps import Chain, chain_from_steps, clean_text

logger = logging.getLogger(__name__)

# Best first: which unsupervised baseline colours the chain when no trained head fits the model.
BASELINE_PREFERENCE = ("minprob", "mean_entropy", "maxprob", "max_entropy", "perplexity", "seqprob")


def baseline_names() -> list[str]:
    """Registered scorers that read only token probabilities (cheap enough to run live)."""
    from .scorers.baselines import TokenStatScorer

    SCORERS.load_all()
    return sorted(n for n, c in SCORERS.items() if isinstance(c, type) and issubclass(c, TokenStatScorer))


def verifier_names() -> list[str]:
    """Verifiers this build can run: the LLM judge when it is registered; PRMs are added by hub id."""
    return [n for n in available() if n == "judge"]


# ----- the engine ------------------------------------------------------------------------------
@dataclass
class HeadState:
    head: Any = None
    path: str | None = None
    note: str = ""
    sha256: str | None = None
    signature: tuple = field(default_factory=tuple)


class Engine:
    """One loaded model, its head (or none), and every scoring path the app needs.

    All model work goes through ``self.lock``: the live-capture hooks sit on the shared
    model, so two requests must never run it at the same time. It is a ``ModelLock``: not
    tied to a thread (a streaming request is a generator that Gradio resumes on whichever
    worker thread is free), and a scored file takes it per chain in the background class,
    so a question asked meanwhile goes first and waits for one chain at most.
    """

    def __init__(self, llm: Any, head: Any = None, head_path: str | None = None, auto_head: bool = True) -> None:
        self.llm = llm
        self.lock = ModelLock()
        self.cache = InternalsCache(llm, max_items=64)
        self.auto_head = auto_head and head is None
        self.hs = HeadState(head=head, path=head_path, note="" if head is not None else "no head given")
        if head is not None:
            self.hs.sha256 = _head_sha(head_path)
        self.baselines = baseline_names()
        self._verifiers: dict[str, Scorer] = {}
        if self.auto_head:
            self.refresh_head(force=True)

    # ----- head --------------------------------------------------------------------------------
    @property
    def head(self) -> Any:
        return self.hs.head

    def refresh_head(self, force: bool = False) -> bool:
        """Pick up a head checkpoint that appeared (or changed) since the last look; True if it changed."""
        if not self.auto_head:
            return False
        sig = _checkpoint_signature()
        if not force and sig == self.hs.signature:
            return False
        head, where = default_head(self.llm)
        if head is not None:
            self.hs = HeadState(head=head, path=where, note="", sha256=_head_sha(where), signature=sig)
            logger.info("Using head %s", where)
        else:
            self.hs = HeadState(note=where, signature=sig)
        return True

    def head_info(self) -> dict[str, Any] | None:
        h = self.head
        if h is None:
            return None
        return {
            "path": shown_path(self.hs.path),  # never the server's absolute path
            "mode": h.config.mode,
            "threshold": _r(h.threshold),
            "sha256": self.hs.sha256,
            "metrics": h.metrics or {},
        }

    @property
    def primary(self) -> str:
        if self.head is not None:
            return "uhead"
        env = settings.baseline()
        if env and env in self.baselines:
            return env
        return next((b for b in BASELINE_PREFERENCE if b in self.baselines), self.baselines[0])

    @property
    def threshold(self) -> float:
        return float(self.head.threshold) if self.head is not None else 0.5

    def methods(self) -> list[str]:
        return (["uhead"] if self.head is not None else []) + self.baselines

    def model_info(self) -> dict[str, Any]:
        llm = self.llm
        return {
            "name": llm.name,
            "source": scrub(getattr(llm, "source", "")),
            "fingerprint": llm.fingerprint,
            "precision": getattr(llm, "precision", ""),
        }

    def status(self) -> dict[str, Any]:
        return {
            "model": self.model_info(),
            "head": self.head_info(),
            "head_note": scrub(self.hs.note),
            "primary": self.primary,
            "verifiers": verifier_names(),
        }

    def warm(self) -> None:
        """Compute the prompt template's shared KV cache now, so the first question does not wait for it."""
        with self.lock:
            llm = self.llm
            if hasattr(llm, "prefill"):
                pad = llm.tokenizer.pad_token_id if llm.tokenizer.pad_token_id is not None else 0
                llm.prefill([llm.prompt_ids("What is 2 + 2?")], pad)

    def spec(self) -> CaptureSpec:
        return merge_specs(CaptureSpec(), self.head.spec if self.head is not None else None)

    # ----- live generation ---------------------------------------------------------------------
    def stream(
        self,
        question: str,
        max_new_tokens: int = 320,
        temperature: float = 0.0,
        seed: int = 0,
        verifier: str | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Yield live views while the chain is written, then the final analysis.

        Events: ``{"phase": "stream", "view": ...}`` while generating (each view lists the
        steps so far, complete ones with scores), ``{"phase": "final", "analysis": ...}``
        once the teacher-forced pass is done, and, when a verifier is asked for,
        ``{"phase": "verified", "analysis": ...}``.
        """
        question = clean_question(question)
        max_new_tokens, temperature, notes = request_settings(max_new_tokens, temperature)
        self.lock.acquire()
        try:
            self.refresh_head()
            t0 = time.perf_counter()
            live = LiveScorer(self, question)
            events: queue.Queue = queue.Queue()
            box: dict[str, Any] = {}
            cancel = threading.Event()

            def on_token(i: int, text: str) -> None:
                if cancel.is_set():
                    raise Cancelled()
                events.put(live.update(text))

            def work() -> None:
                try:
                    with live.capture:
                        box["chain"] = self.llm.generate(
                            [question], max_new_tokens, temperature, seed, on_token=on_token
                        )[0]
                except BaseException as e:  # handed to the consumer
                    box["error"] = e
                events.put(None)

            th = threading.Thread(target=work, daemon=True, name="uhead-generate")
            th.start()
            try:
                while True:
                    item = _next_event(events, th)
                    if item is None:
                        break
                    while True:  # coalesce a burst of tokens into one update
                        try:
                            nxt = events.get_nowait()
                        except queue.Empty:
                            break
                        if nxt is None:
                            events.put(None)
                            break
                        item = nxt
                    yield {"phase": "stream", "view": item, "t": time.perf_counter() - t0}
            finally:
                cancel.set()
                th.join()
            if "error" in box:
                raise box["error"]
            chain: Chain = box["chain"]
            gen_s = time.perf_counter() - t0
            live_view = live.update(chain.text, final=True)
            live_view["finalising"] = True
            yield {"phase": "stream", "view": live_view, "t": gen_s}
            settings = {"max_new_tokens": max_new_tokens, "temperature": temperature, "seed": seed}
            analysis = self._analyze_chain(chain, kind="generated", settings=settings)
            analysis["timing"] = {"generate_s": _r(gen_s, 2), "final_s": _r(time.perf_counter() - t0 - gen_s, 2)}
            analysis["live_scores"] = live.scores_list()
            if notes:
                analysis["notes"] = notes + analysis.get("notes", [])
            yield {"phase": "final", "analysis": analysis, "t": time.perf_counter() - t0}
            if verifier:
                analysis = self._verify(analysis, verifier)
                yield {"phase": "verified", "analysis": analysis, "t": time.perf_counter() - t0}
        finally:
            self.lock.release()

    def run(self, question: str, **kw: Any) -> dict[str, Any]:
        """The final analysis of one question (the stream drained)."""
        out = None
        for ev in self.stream(question, **kw):
            if ev["phase"] in ("final", "verified"):
                out = ev["analysis"]
        assert out is not None
        return out

    # ----- final, teacher-forced analysis ------------------------------------------------------
    def scorers(self, methods: list[str] | None = None) -> dict[str, Scorer]:
        methods = methods or self.methods()
        return {m: get_scorer(m, self.llm, head=self.head, cache=self.cache) for m in methods}

    def analyze_chain(
        self, chain: Chain, kind: str = "generated", settings: dict | None = None, extra: dict | None = None
    ) -> dict[str, Any]:
        """Score a chain with every method (one teacher-forced pass) and keep what the views need."""
        with self.lock:
            return self._analyze_chain(chain, kind, settings, extra)

    def _analyze_chain(
        self, chain: Chain, kind: str = "generated", settings: dict | None = None, extra: dict | None = None
    ) -> dict[str, Any]:
        # the caller holds self.lock
        self.refresh_head()
        return build_analysis(self, chain, kind, settings, extra)

    # ----- verifier ----------------------------------------------------------------------------
    def verifier(self, name: str) -> Scorer:
        """Build (once) the verifier ``judge`` or ``prm:<hub id or folder>``."""
        if name in self._verifiers:
            return self._verifiers[name]
        if name.startswith("prm:"):
            try:
                from .scorers.prm import prm_method
            except ImportError as e:
                raise InputError("This build has no PRM support.") from e
            prm_method(name)
        elif name not in available():
            raise InputError(f"The verifier '{name}' is not available in this build.")
        self._verifiers[name] = get_scorer(name, self.llm, head=self.head, cache=self.cache)
        return self._verifiers[name]

    def verify(self, analysis: dict[str, Any], name: str) -> dict[str, Any]:
        """Add the verifier's score and the combined score to each step of an analysis."""
        with self.lock:
            return self._verify(analysis, name)

    def _verify(self, analysis: dict[str, Any], name: str) -> dict[str, Any]:
        name = name.strip()
        if not analysis.get("steps"):
            return analysis
        # the caller holds self.lock
        t0 = time.perf_counter()
        scorer = self.verifier(name)
        ps = scorer.score([self.chain_of(analysis)])[0]
        label = getattr(scorer, "label", method_label(name))
        return with_verifier(analysis, ps, name, label, time.perf_counter() - t0)

    def chain_of(self, analysis: dict[str, Any]) -> Chain:
        """The Chain an analysis describes (its stored ids and spans)."""
        return row_to_chain(analysis["row"], self.llm)

    # ----- pasted chains -----------------------------------------------------------------------
    def analyze_pasted(self, problem: str, steps_text: str, answer: str | None = None) -> dict[str, Any]:
        """Score steps written elsewhere (InputError, with a message, for what cannot be scored)."""
        problem = clean_question(problem)
        steps, ans = parse_steps(steps_text)
        answer = clean_text(answer).strip() if isinstance(answer, str) else ""
        chain = chain_from_steps(self.llm.tokenizer, problem, self.llm.prompt_ids(problem), steps, answer or ans)
        why = length_problem(chain, self.llm)
        if why is not None:
            raise InputError(why[0].upper() + why[1:])
        return self.analyze_chain(chain, kind="pasted")

    # ----- files -------------------------------------------------------------------------------
    def score_file(self, path: str | Path) -> Iterator[tuple[int, int, list[dict[str, Any]], list[str]]]:
        """Score every readable row of a JSON/JSONL file, yielding (done, total, scored rows, problems).

        A malformed row is reported (line and reason) and skipped; the others are scored.
        Each chain takes the model lock on its own, in the background class, so a question
        asked meanwhile goes before the next chain and waits for one chain, not the whole file.
        """
        rows, errors = read_dataset(path)
        out: list[dict[str, Any]] = []
        yield 0, len(rows), out, errors
        for i, (line, row) in enumerate(rows):
            rid = str(row.get("id", f"line-{line}"))
            try:
                with self.lock.background():
                    self.refresh_head()
                    chain = row_to_chain(row, self.llm)
                    scores = {m: [_r(v) for v in s.score([chain])[0]] for m, s in self.scorers().items()}
            except (RowError, InputError, ValueError) as e:
                errors.append(f"line {line} (id {rid}): {e}")
                yield i + 1, len(rows), out, errors
                continue
            fields = {"id": rid, "labels": row_labels(row, len(chain.steps)), "primary": self.primary}
            out.append(scored_row(row, scores, self.llm, {"head": shown_path(self.hs.path)}, **fields))
            yield i + 1, len(rows), out, errors

    def analyze_row(self, row: dict[str, Any]) -> dict[str, Any]:
        """The full analysis of one dataset row (its internals are usually still cached)."""
        chain = row_to_chain(row, self.llm)
        a = self.analyze_chain(chain, kind="dataset", extra={"id": row.get("id")})
        labels = row.get("labels")
        if isinstance(labels, list) and len(labels) == len(a["steps"]):
            for s, y in zip(a["steps"], labels):
                s["label"] = y
        return a


# ----- helpers ----------------------------------------------------------------------------------
def _next_event(events: queue.Queue, worker: threading.Thread, poll_s: float = 0.5) -> Any:
    """The generation thread's next event; an error at once if the thread is gone without its end marker."""
    while True:
        try:
            return events.get(timeout=poll_s)
        except queue.Empty:
            if not worker.is_alive():
                try:
                    return events.get_nowait()  # it may have put its last event just now
                except queue.Empty:
                    raise RuntimeError("the generation thread stopped without a result") from None


def _checkpoint_signature() -> tuple:
    sig = []
    for root in checkpoint_dirs():
        if root.is_dir():
            for p in sorted(root.glob("*/config.json")):
                try:
                    w = p.parent / "model.safetensors"
                    sig.append((str(p), p.stat().st_mtime, w.stat().st_mtime if w.exists() else 0))
                except OSError:
                    continue
    return tuple(sig)


def _head_sha(path: str | None) -> str | None:
    if not path:
        return None
    try:
        from .uhead import read_config

        _, cfg = read_config(path)
        return (cfg.get("weights") or {}).get("sha256")
    except Exception:  # a head built in code has no checkpoint
        return None
