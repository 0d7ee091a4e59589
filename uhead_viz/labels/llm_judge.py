"""Step labels from a local LLM judge (``uhead_viz.judge``): the paper's self-annotation.

The judge (by default the packaged default model, loaded on first use) gives P(correct)
for every step, seeing the reference solution when one is known. The labels follow the
ProcessBench convention:

- steps up to the first one with ``P(correct) < threshold`` get 0, that step gets 1;
- every step after the first wrong one is None (confidence 0): once a solution has gone
  wrong, whether a later step is "correct" is not well defined.

Confidence is the distance of P(correct) from the threshold, scaled by the largest distance
possible on that side, so it is 0 at the threshold and 1 at P = 0 or P = 1:
``(threshold - p) / threshold`` for a wrong step, ``(p - threshold) / (1 - threshold)`` for a
fine one. It says how decided the judge was, not how often it is right; a small model's
judgements are noisy, which users of these labels should weight for.

Measured (``benchmarks/judge_quality.py``, default int8 Qwen2.5-Coder-1.5B-Instruct judging
the last step of PRM800K phase-1 test chains, half rated wrong, MATH-500 solution as the
reference): no better than chance. 26 rows (seed 1): PR-AUC 0.48, ROC-AUC 0.42, mean
P(correct) 0.55 on wrong steps and 0.53 on fine ones; 10 rows (seed 0): PR-AUC 0.80, ROC-AUC
0.64. The 1.5B judge separates an obvious arithmetic slip in a GSM8K step when it has the
reference (tests/integration), not competition-level mistakes; a stronger judge model
(``llm=load_llm(...)``) is the way to better labels.
"""

from __future__ import annotations

from typing import Any

from ..judge import step_correct_probs
from ..steps import Chain
from .base import Labeler, StepLabels, register


def confidence(p: float, threshold: float) -> float:
    """How far ``p`` sits from ``threshold``, scaled to [0, 1] on its side."""
    if p < threshold:
        return min(1.0, max(0.0, (threshold - p) / threshold))
    return min(1.0, max(0.0, (p - threshold) / (1.0 - threshold)))


def labels_from_probs(probs: list[float], threshold: float, source: str) -> StepLabels:
    """StepLabels for P(correct) per step: 1 at the first step below ``threshold``, None after it."""
    labels: list[int | None] = []
    conf: list[float] = []
    notes: list[str] = []
    wrong_seen = False
    for p in probs:
        if wrong_seen:
            labels.append(None)
            conf.append(0.0)
            notes.append(f"after the first wrong step (judge P(correct) = {p:.2f})")
            continue
        wrong = p < threshold
        wrong_seen = wrong
        labels.append(1 if wrong else 0)
        conf.append(confidence(p, threshold))
        notes.append(f"judge P(correct) = {p:.2f}")
    return StepLabels(labels=labels, confidence=conf, source=source, notes=notes)


@register
class LLMJudgeLabeler(Labeler):
    """Labels each step with a local LLM judge; ``llm=None`` loads the default model on first use."""

    name = "llm-judge"

    def __init__(self, llm: Any = None, threshold: float = 0.5, **judge_kw: Any) -> None:
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold must be strictly between 0 and 1, not {threshold!r}")
        self._llm = llm
        self.threshold = threshold
        self.judge_kw = judge_kw  # passed on to step_correct_probs (max_tokens, batch_rows)

    @property
    def llm(self) -> Any:
        if self._llm is None:
            from ..llm import load_llm

            self._llm = load_llm()
        return self._llm

    @property
    def source(self) -> str:
        return f"llm-judge:{self.llm.name}"

    def probs(self, chain: Chain, reference: str | None) -> list[float]:
        """The judge's P(correct) per step, before thresholding."""
        return step_correct_probs(self.llm, chain.problem, list(chain.steps), reference, **self.judge_kw)

    def label(self, chain: Chain, reference: str | None) -> StepLabels:
        return labels_from_probs(self.probs(chain, reference), self.threshold, self.source)
