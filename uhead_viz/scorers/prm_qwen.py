"""Qwen2.5-Math-PRM (7B/72B): a two-label classifier read at an ``<extra_0>`` after every step.

Input: the model's chat template with the system prompt it was trained with, the problem as
the user turn, and the steps as the assistant turn, each followed by ``<extra_0>``. At each
``<extra_0>`` the model outputs two logits; the softmax's second entry is P(step correct).

The official checkpoints are a custom class (``AutoModel`` + ``trust_remote_code``); a
checkpoint without remote code is loaded as a native 2-label token classifier, which
computes the same thing (the tests use one).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .prm import PRM, family, load_checked, read_config

SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."
TAG = "<extra_0>"


@family("qwen")
class QwenMathPRM(PRM):
    def load_model(self, folder: Path) -> Any:
        import transformers

        if "AutoModel" in (read_config(folder).get("auto_map") or {}):
            return load_checked(transformers.AutoModel, folder, self.trust_remote_code)
        return load_checked(transformers.AutoModelForTokenClassification, folder, self.trust_remote_code)

    def setup(self) -> None:
        self.tag_id = self.tokenizer.convert_tokens_to_ids(TAG)
        if self.tag_id is None or self.tag_id == self.tokenizer.unk_token_id:
            raise ValueError(f"The PRM tokenizer has no {TAG} token: not a Qwen2.5-Math-PRM tokenizer.")

    def encode(self, problem: str, steps: list[str]) -> tuple[list[int], list[int]]:
        steps = [s.replace(TAG, " ").strip() for s in steps]  # only our tags may mark positions
        messages = [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": problem.replace(TAG, " ")},
            {"role": "assistant", "content": TAG.join(steps) + TAG},
        ]
        text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return ids, [i for i, t in enumerate(ids) if t == self.tag_id]

    def correct_probs(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.logits(input_ids, attention_mask).softmax(-1)[..., 1]
