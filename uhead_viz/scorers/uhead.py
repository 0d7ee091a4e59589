"""The uncertainty head as a scorer: p_error = sigmoid(head logit) per step."""

from __future__ import annotations

from typing import Any

import torch

from ..features import token_features
from ..steps import Chain, body_spans
from ..uhead import ATTN_BUDGET, UHead, body_mask, check_compatible, collate
from .base import InternalsCache, Scorer, register


@register
class UHeadScorer(Scorer):
    """Features from the shared capture, one batched head pass for a list of chains."""

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
    def score(self, chains: list[Chain]) -> list[list[float]]:
        out: list[list[float]] = []
        group: list[tuple[torch.Tensor, list[tuple[int, int]], list[tuple[int, int]]]] = []
        for c in chains:
            f = token_features(self.cache.get(c, self.spec), self.spec)
            tmax = max([f.shape[0]] + [g[0].shape[0] for g in group])
            if group and (len(group) + 1) * self.head.config.n_heads * tmax * tmax > ATTN_BUDGET:
                out += self._score_group(group)  # keep causal-mode attention maps within budget
                group = []
            bodies = body_spans(self.llm.tokenizer, c) if self.head.config.pool_body else c.spans
            group.append((f, c.spans, bodies))
        return out + (self._score_group(group) if group else [])

    def _score_group(self, items: list[tuple[torch.Tensor, list, list]]) -> list[list[float]]:
        feats, valid, steps = collate([(f, sp) for f, sp, _ in items], self.device)
        pool = body_mask([b for _, _, b in items], feats.shape[1], self.device)
        probs = torch.sigmoid(self.head(feats, valid, steps, pool).float()).cpu()
        return [probs[i, : len(sp)].tolist() for i, (_, sp, _) in enumerate(items)]
