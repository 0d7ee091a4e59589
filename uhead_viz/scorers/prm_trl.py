"""PRMs trained with TRL's ``PRMTrainer`` (e.g. HuggingFaceH4/Qwen2.5-Math-1.5B-Instruct-PRM-0.2).

A token-classification model (2 labels, 1 = the step is correct) read at the last token of
each step's separator. The input is built the way the trainer builds it: the tokenizer's
BOS if it has one, the problem's tokens, then for every step the step's tokens followed by
the separator's tokens (default ``"\\n"``), each tokenized on its own.
"""

from __future__ import annotations

import torch

from .prm import PRM, family


@family("trl")
class TRLTokenClassificationPRM(PRM):
    auto_class = "AutoModelForTokenClassification"
    separator = "\n"

    def encode(self, problem: str, steps: list[str]) -> tuple[list[int], list[int]]:
        tok = self.tokenizer
        ids = [tok.bos_token_id] if tok.bos_token_id is not None else []
        ids += tok(problem, add_special_tokens=False)["input_ids"]
        sep = tok(self.separator, add_special_tokens=False)["input_ids"]
        pos = []
        for s in steps:
            ids += tok(s.replace(self.separator, " "), add_special_tokens=False)["input_ids"] + sep
            pos.append(len(ids) - 1)
        return ids, pos

    def correct_probs(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.logits(input_ids, attention_mask).softmax(-1)[..., 1]
