"""The LLM judge as a step scorer: p_error = 1 - P(step correct) from ``uhead_viz.judge``.

The judge is the scoring model itself, asked about each step (self-verification). It is
not a process reward model: nothing here was trained to score steps. At inference time a
verifier has no reference solution, so none is given. It reads no internals of the
teacher-forced pass (it runs its own prompts), so it does not touch the shared cache.
"""

from __future__ import annotations

from typing import Any

from ..internals import Internals
from ..judge import step_correct_probs
from ..steps import Chain
from .base import InternalsCache, Scorer, register


@register
class JudgeScorer(Scorer):
    name = "judge"
    needs_internals = False
    # Far slower than the baselines (one prompt per chain plus a question per step); a caller
    # that runs "every method" by default may want to leave it out unless asked for by name.
    opt_in = True

    def __init__(self, llm: Any, cache: InternalsCache | None = None) -> None:
        super().__init__(llm, cache)
        self.label = f"LLM judge ({getattr(llm, 'name', 'model')}, self)"

    def _score_internals(self, internals: Internals | None, chain: Chain, first: int) -> list[float]:
        probs = step_correct_probs(self.llm, chain.problem, list(chain.steps), reference=None)
        return [1.0 - p for p in probs][first:]
