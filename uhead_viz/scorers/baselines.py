"""Unsupervised baselines: step uncertainty from the token probabilities alone.

The LM-Polygraph information-based estimators, applied to each step's tokens. Each
raw statistic u (larger = less certain) is mapped to p_error in [0, 1] by a fixed,
monotone transform, so the numbers sit on the same axis as the head's and rank steps
exactly as u does (AUROC/PR-AUC are unchanged by the map; only the threshold moves):

========== ============================== ===================================
method     statistic over the step         p_error
========== ============================== ===================================
maxprob    mean token log-prob m           1 - exp(m)   (1 - geometric-mean p)
minprob    min token log-prob              1 - min p
perplexity log perplexity = -m             -m / (1 - m) (= log ppl / (log ppl + 1))
mean_entropy mean entropy H (nats)         H / (H + 1)
max_entropy  max entropy H (nats)          H / (H + 1)
seqprob    sum of token log-probs s        1 - exp(s)   (1 - P(step))
========== ============================== ===================================

``perplexity`` ranks steps exactly like ``maxprob`` (both are functions of the mean
log-prob); it is kept because it is the name people look for, with a transform that
saturates more slowly. ``seqprob`` (LM-Polygraph's Maximum Sequence Probability) is the
extra claim-level method: it is the only baseline that grows with the step's length,
i.e. "a step is wrong if any of its tokens is", which the per-token averages ignore.

The ``Step k:`` marker that opens a step is left out of the statistics: it is nearly
certain (and for a generated chain's first step it was forced by the prompt, not
chosen), so it would only dilute the step's own tokens. A step that is nothing but its
marker falls back to all of its tokens.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ..internals import Internals
from ..steps import Chain, body_range
from .base import InternalsCache, Scorer, register


class TokenStatScorer(Scorer):
    """Base for baselines: one statistic per step from token log-probs / entropies."""

    spec = None  # any capture will do: only the probability features are read

    def __init__(self, llm: Any, cache: InternalsCache | None = None) -> None:
        super().__init__(llm, cache)

    def step_value(self, logprob: torch.Tensor, entropy: torch.Tensor) -> float:
        raise NotImplementedError

    def _score_internals(self, internals: Internals | None, chain: Chain, first: int) -> list[float]:
        assert internals is not None
        lp, ent = internals.token_logprob.float().cpu(), internals.entropy.float().cpu()
        out = []
        for k in range(first, len(chain.spans)):
            a, b = body_range(self.llm.tokenizer, chain, k)
            out.append(self.step_value(lp[a:b], ent[a:b]))
        return out


@register
class MaxProb(TokenStatScorer):
    name = "maxprob"

    def step_value(self, logprob: torch.Tensor, entropy: torch.Tensor) -> float:
        return 1.0 - math.exp(float(logprob.mean()))


@register
class MinProb(TokenStatScorer):
    name = "minprob"

    def step_value(self, logprob: torch.Tensor, entropy: torch.Tensor) -> float:
        return 1.0 - math.exp(float(logprob.min()))


def _squash(x: float) -> float:
    """Map a non-negative uncertainty (nats) to [0, 1) monotonically: x / (x + 1)."""
    x = max(0.0, x)
    return x / (x + 1.0)


@register
class Perplexity(TokenStatScorer):
    name = "perplexity"

    def step_value(self, logprob: torch.Tensor, entropy: torch.Tensor) -> float:
        return _squash(-float(logprob.mean()))


@register
class MeanEntropy(TokenStatScorer):
    name = "mean_entropy"

    def step_value(self, logprob: torch.Tensor, entropy: torch.Tensor) -> float:
        return _squash(float(entropy.mean()))


@register
class MaxEntropy(TokenStatScorer):
    name = "max_entropy"

    def step_value(self, logprob: torch.Tensor, entropy: torch.Tensor) -> float:
        return _squash(float(entropy.max()))


@register
class SequenceProb(TokenStatScorer):
    name = "seqprob"

    def step_value(self, logprob: torch.Tensor, entropy: torch.Tensor) -> float:
        return -math.expm1(float(logprob.sum()))
