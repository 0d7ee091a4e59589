"""Eager attention that returns its weights without copying the KV cache per head.

The features need real attention weights, so SDPA is out. But transformers' eager path
expands grouped key/value heads to one copy per query head (``repeat_kv``) on every call;
with a long prompt, a batch of 8 and 6 query heads per KV head (Qwen2.5-1.5B), those
copies plus the score matmuls took most of a decoding step (measured with py-spy: ~40 %).
Here the query heads of one group are stacked along the query axis instead, so each
group's keys and values are used in place. Same maths, same weights returned.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import AttentionInterface
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, eager_mask

NAME = "uhead_eager"


def grouped_eager_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """query [B, H, q, d], key/value [B, KVH, K, d] -> (output [B, q, H, d], weights [B, H, q, K])."""
    b, h, q, d = query.shape
    kvh, k_len = key.shape[1], key.shape[2]
    g = h // kvh
    # heads h = j * g + r share KV head j (repeat_kv's order): fold r into the query axis
    qf = query.reshape(b, kvh, g * q, d)
    scores = torch.matmul(qf, key.transpose(2, 3)) * scaling  # [B, KVH, g*q, K]
    scores = scores.view(b, kvh, g, q, k_len)
    if attention_mask is not None:
        scores = scores + attention_mask[:, :, :, :k_len].unsqueeze(1)
    weights = torch.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    if dropout and module.training:
        weights = torch.nn.functional.dropout(weights, p=dropout)
    out = torch.matmul(weights.view(b, kvh, g * q, k_len), value)  # [B, KVH, g*q, d]
    out = out.view(b, h, q, d).transpose(1, 2).contiguous()
    return out, weights.view(b, h, q, k_len)


AttentionInterface.register(NAME, grouped_eager_attention)
ALL_MASK_ATTENTION_FUNCTIONS.register(NAME, eager_mask)
