"""The uncertainty head as a scorer: p_error = sigmoid(head logit) per step."""

from __future__ import annotations

from typing import Any

import torch

from ..features import token_features
from ..internals import Internals
from ..steps import Chain, body_spans
from ..uhead import UHead, check_compatible
from .base import InternalsCache, Scorer, register


@register
class UHeadScorer(Scorer):
    """Features from the captured internals; each step's p_error is sigmoid(``UHead.step_logit``)."""

    name = "uhead"
    needs_head = True

    def __init__(self, llm: Any, cache: InternalsCache | None = None, head: UHead | None = None) -> None:
        if head is None:
            raise ValueError("The 'uhead' scorer needs a trained head (see load_head / --head).")
        self.head = head
        self.spec = head.spec  # instance attribute: the cache must capture this head's recipe
        super().__init__(llm, cache)
        if head.base:
            # the same check load_head does, for heads built in code rather than loaded
            check_compatible(
                {"base_model": head.base, "features": {**head.spec.to_dict(), **head.base}, "head": vars(head.config)},
                llm,
                allow_other_build=True,
                warn=False,
            )
        self.device = next(llm.model.parameters()).device
        self.head.to(self.device).eval()

    @torch.inference_mode()
    def _score_internals(self, internals: Internals | None, chain: Chain, first: int) -> list[float]:
        assert internals is not None
        feats = token_features(internals, self.spec).to(self.device)
        bodies = body_spans(self.llm.tokenizer, chain) if self.head.config.pool_body else None
        spans = list(chain.spans)
        logits = [self.head.step_logit(feats, spans, k, bodies) for k in range(first, len(spans))]
        return [float(torch.sigmoid(z.float())) for z in logits]
