"""Live scoring: each step of a chain being written is scored the moment it is complete.

Colouring a step as soon as its text is complete needs the step's internals at once. A
second, teacher-forced pass per step would compete with generation for the CPU, so the
internals are kept *during* generation instead (``capture.LiveCapture``). When a step is
complete (the next line has begun), every method scores the steps completed since the last
update with the same ``Scorer.score_internals`` the final pass calls, on the internals
captured so far. Every
method reads a step with only what comes before its end, so a step's live score is
computed once and never changes; given the same internals it equals the final pass's.
The live numbers differ from the final ones only where the internals do: by float
rounding (in fp32) or by int8 activation scales (the default CPU build quantizes
activations per call).
"""

from __future__ import annotations

import math
import re
import time
from typing import Any

from .capture import LiveCapture
from .internals import Internals
from .llm import ASSISTANT_PREFIX
from .scorers import Scorer, get_scorer
from .steps import Chain, spans_for, split_text, step_body

_NEXT_LINE = re.compile(r"\s*(?:\*\*)?\s*(?:step\s*\d*\s*[:.)-]?|(?:final\s+)?answer\s*[:：]?)\s*$", re.IGNORECASE)


def _r(x: float, nd: int = 5) -> float:
    x = float(x)
    return round(x, nd) if math.isfinite(x) else 0.0


def complete_steps(text: str) -> tuple[list, str | None, int, int]:
    """(regions, answer, answer_start, number of complete steps) of streamed text.

    A step is complete once the line after it has begun with something that is not more
    of it: the next ``Step k:`` marker or an ``Answer:`` line, or already their first word
    (``Step`` and ``Answer`` arrive a token before the number or colon), so the colour need
    not wait for more than the next line's first token.
    """
    regions, answer, astart = split_text(text)
    if answer is not None:
        return regions, answer, astart, len(regions)
    n = max(0, len(regions) - 1)
    last_nl = text.rfind("\n")
    if regions and last_nl >= regions[-1].start and _NEXT_LINE.match(text[last_nl + 1 :]):
        n = len(regions)
    return regions, answer, astart, n


class LiveScorer:
    """Scores each step of a chain being generated as soon as it is complete.

    ``engine`` supplies the model (``llm``), the head (or None), the methods and their
    capture (``methods()``, ``spec()``, ``cache``) and the view's ``primary`` and ``threshold``.
    """

    def __init__(self, engine: Any, question: str) -> None:
        self.engine = engine
        self.llm = engine.llm
        self.tok = engine.llm.tokenizer
        self.question = question
        self.head = engine.head
        self.prompt_ids = self.llm.prompt_ids(question)
        n_prefix = len(self.tok(ASSISTANT_PREFIX, add_special_tokens=False)["input_ids"])
        self.capture = LiveCapture(self.llm, engine.spec(), n_prefix)
        # the final pass's scorers: a step's live numbers come from the same ``score_internals``
        self.scorers: dict[str, Scorer] = {
            m: get_scorer(m, self.llm, head=self.head, cache=engine.cache) for m in engine.methods()
        }
        self.scores: list[dict[str, float]] = []
        self.tokens: list[list[dict[str, Any]]] = []
        self.t_scored: list[float] = []
        self._offsets: list[tuple[int, int]] = []
        self._offset_ids: list[int] = []

    def offsets(self, ids: list[int]) -> list[tuple[int, int]]:
        """``token_char_offsets`` of the fed ids, extended as they grow (the chain's start never changes)."""
        n = len(self._offset_ids)
        if ids[:n] != self._offset_ids:
            self._offsets, self._offset_ids, n = [], [], 0
        prev = self._offsets[-1][1] if self._offsets else 0
        for i in range(n, len(ids)):
            m = max(len(self.tok.decode(ids[: i + 1], skip_special_tokens=False)), prev)
            self._offsets.append((prev, m))
            prev = m
        self._offset_ids = list(ids)
        return list(self._offsets)

    def step_scores(self, internals: Internals, chain: Chain, first: int = 0) -> dict[str, list[float]]:
        """Every method's p_error for steps ``first``.. of ``chain`` from ``internals`` (all its tokens or a prefix)."""
        return {m: s.score_internals(internals, chain, first) for m, s in self.scorers.items()}

    def update(self, text: str, final: bool = False) -> dict[str, Any]:
        """The view of ``text`` (scoring newly complete steps first)."""
        regions, answer, astart, n_done = complete_steps(text)
        if final:
            n_done = len(regions)
        if n_done > len(self.scores) and not final:
            self._score(text, regions, astart, n_done)
        steps = []
        for k, r in enumerate(regions):
            sc = self.scores[k] if k < len(self.scores) else None
            state = "done" if sc is not None else ("scoring" if k < n_done else "writing")
            steps.append(
                {
                    "index": k,
                    "text": r.text,
                    "body": step_body(r.text),
                    "scores": sc,
                    "tokens": self.tokens[k] if k < len(self.tokens) else None,
                    "state": state,
                }
            )
        return {
            "question": self.question,
            "raw": text,
            "steps": steps,
            "answer": answer,
            "primary": self.engine.primary,
            "threshold": self.engine.threshold,
            "live": True,
        }

    def _score(self, text: str, regions: list, astart: int, n_done: int) -> None:
        cap = self.capture
        ids = list(cap.ids)
        if not ids or len(cap.attn) < len(ids):
            return
        offsets = self.offsets(ids)
        spans = spans_for(regions[: n_done + 1], offsets, astart)[:n_done]
        if len(spans) < n_done or any(b <= a for a, b in spans[len(self.scores) :]):
            return
        chain = Chain(self.question, [r.text for r in regions[:n_done]], None, text, self.prompt_ids, ids, spans)
        internals = cap.internals(len(ids))
        lp = internals.token_logprob
        first = len(self.scores)
        per = self.step_scores(internals, chain, first)  # the steps completed since the last update
        for k in range(first, n_done):
            a, b = spans[k]
            self.scores.append({m: _r(v[k - first]) for m, v in per.items()})
            self.tokens.append(
                [
                    {"t": text[max(0, s0) : e0], "p": _r(math.exp(float(lp[t])), 4)}
                    for t, (s0, e0) in zip(range(a, b), offsets[a:b])
                ]
            )
            self.t_scored.append(time.perf_counter())

    def scores_list(self) -> list[dict[str, float]]:
        return [dict(s) for s in self.scores]
