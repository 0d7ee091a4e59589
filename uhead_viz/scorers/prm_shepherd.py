"""Math-Shepherd (peiyi9979/math-shepherd-mistral-7b-prm): a causal LM asked "+" or "-" at each step tag.

Input: ``"<problem> Step 1: <step> ки\\nStep 2: <step> ки..."`` with the tokenizer's BOS.
The step tag ``ки`` is where the model was trained to predict ``+`` (the step is good) or
``-``; the step reward is the softmax over just those two tokens' logits at the tag, the
``+`` entry. The tag is found by character offset, so it is read correctly whether the
tokenizer writes it as one token (Mistral's) or several (then the last one counts).
"""

from __future__ import annotations

import torch

from .prm import PRM, family, marked_positions

TAG = "ки"


@family("shepherd")
class MathShepherdPRM(PRM):
    auto_class = "AutoModelForCausalLM"

    def setup(self) -> None:
        self.good_id = self.token_id("+")
        self.bad_id = self.token_id("-")

    def encode(self, problem: str, steps: list[str]) -> tuple[list[int], list[int]]:
        text = problem.replace(TAG, " ").strip() + " "
        marks = []
        for k, s in enumerate(steps, start=1):
            if k > 1:
                text += "\n"
            text += f"Step {k}: {' '.join(s.replace(TAG, ' ').split())} "
            marks.append(len(text) + len(TAG) - 1)  # the tag's last character
            text += TAG
        enc = self.tokenizer(text, add_special_tokens=True)
        return list(enc["input_ids"]), marked_positions(enc, marks)

    def correct_probs(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        x = self.logits(input_ids, attention_mask)[..., [self.good_id, self.bad_id]]
        return x.softmax(-1)[..., 0]
