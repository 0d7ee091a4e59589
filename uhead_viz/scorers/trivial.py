"""Trivial baselines: a step's position and the chain's length, with no model at all.

A verifier that only learned "later steps are more often wrong" looks good on step PR-AUC
wherever wrong steps sit late in long chains (PRM800K's do). These scorers read nothing
but where a step is, so every report shows how far position alone gets; a method that
does not beat them has not shown it reads a step's content.

========== =============================================== =============================
method     statistic of step k (0-based)                   p_error
========== =============================================== =============================
step_index k                                               k / (k + 1)
chars_so_far c = characters of steps 0..k                   c / (c + 500)
is_last_step the chain ends with step k                     1 or 0
========== =============================================== =============================

Characters are counted in each step's text without its ``Step k:`` marker and outer
whitespace, so a row's raw steps and the same steps rendered for the model count alike.
The maps are monotone, so they rank steps exactly as the statistics do (PR-AUC, ROC-AUC
and pairwise accuracy are unchanged by them; only thresholds move).

A chain has a last step only if it is finished: ``chain.meta["finished"]`` when the caller
knows (``evaluate`` sets it from the row: a row with ``"answer": null``, or one cut after its
last labelled step, is unfinished), else a stated answer. Unfinished chains score 0 everywhere.
"""

from __future__ import annotations

from typing import Any

from ..internals import Internals
from ..jsonl import problem_of
from ..steps import Chain, step_body
from .base import InternalsCache, Scorer, register

CHARS_SCALE = 500.0  # characters at which chars_so_far reaches 0.5; any positive scale ranks alike


def row_finished(row: dict[str, Any]) -> bool:
    """Whether a row's chain ended with its last step.

    Rows with an ``answer`` key (``generate``'s and PRM800K's) are finished when it is not
    null; rows without one (ProcessBench) are complete solutions.
    """
    if "answer" not in row:
        return True
    answer = row["answer"]
    return answer is not None and str(answer).strip() != ""


def text_chain(row: dict[str, Any]) -> Chain:
    """A chain with only the text a trivial scorer reads: no tokenizer, no token ids."""
    problem = problem_of(row)
    answer = row.get("answer")
    return Chain(
        problem=str(problem or ""),
        steps=[str(s) for s in row["steps"]],
        answer=None if answer is None else str(answer),
        text="",
        prompt_ids=[],
        ids=[],
        spans=[],
        meta={"finished": row_finished(row)},
    )


class TrivialScorer(Scorer):
    """Base for scorers that read only the step texts: no forward pass, no model needed."""

    needs_internals = False
    needs_model = False
    evaluation_only = True  # in every evaluation report, but not in ``score``'s output

    def __init__(self, llm: Any = None, cache: InternalsCache | None = None) -> None:
        super().__init__(llm, cache)

    def _score_internals(self, internals: Internals | None, chain: Chain, first: int) -> list[float]:
        return self.chain_scores(chain)[first:]

    def chain_scores(self, chain: Chain) -> list[float]:
        raise NotImplementedError


@register
class StepIndex(TrivialScorer):
    name = "step_index"

    def chain_scores(self, chain: Chain) -> list[float]:
        return [k / (k + 1.0) for k in range(len(chain.steps))]


@register
class CharsSoFar(TrivialScorer):
    name = "chars_so_far"

    def chain_scores(self, chain: Chain) -> list[float]:
        out, total = [], 0
        for s in chain.steps:
            total += len(step_body(s))
            out.append(total / (total + CHARS_SCALE))
        return out


@register
class IsLastStep(TrivialScorer):
    name = "is_last_step"

    def chain_scores(self, chain: Chain) -> list[float]:
        n = len(chain.steps)
        finished = chain.meta.get("finished", chain.answer is not None)
        return [1.0 if finished and k == n - 1 else 0.0 for k in range(n)]
