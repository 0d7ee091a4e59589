"""RLHFlow PRMs (e.g. RLHFlow/Llama3.1-8B-PRM-Deepseek-Data): a chat, one user turn per step.

Input: the model's chat template over a conversation where the first user turn is the
problem followed by step 1, each later user turn is one step, and the assistant answers
every turn with ``+``. The step reward is P(``+``) against P(``-``) predicted just before
the assistant's ``+``, i.e. what the model would answer after seeing the step.

One forward pass over the whole conversation scores every step: the model is causal, so
the logits before turn k's ``+`` see exactly the conversation up to step k. The position
of each ``+`` is found by rendering the conversation up to step k with the generation
prompt (the rendered text must be a prefix of the full one).
"""

from __future__ import annotations

import torch

from .prm import PRM, family


@family("rlhflow")
class RLHFlowPRM(PRM):
    auto_class = "AutoModelForCausalLM"

    def setup(self) -> None:
        self.good_id = self.token_id("+")
        self.bad_id = self.token_id("-")

    def encode(self, problem: str, steps: list[str]) -> tuple[list[int], list[int]]:
        tok = self.tokenizer
        conv: list[dict[str, str]] = []
        marks = []
        for k, s in enumerate(steps):
            conv.append({"role": "user", "content": f"{problem} {s}" if k == 0 else s})
            marks.append(conv[:])
            conv.append({"role": "assistant", "content": "+"})
        text = tok.apply_chat_template(conv, tokenize=False)
        enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
        ids = list(enc["input_ids"])
        pos = []
        for upto in marks:
            prefix = tok.apply_chat_template(upto, tokenize=False, add_generation_prompt=True)
            if not text.startswith(prefix) or not text[len(prefix) :].startswith("+"):
                raise ValueError("the PRM's chat template does not render the conversation turn by turn")
            t = enc.char_to_token(len(prefix))
            if t is None or t == 0 or enc["offset_mapping"][t][0] != len(prefix) or ids[t] != self.good_id:
                raise ValueError("the PRM tokenizer merges the assistant's '+' with the text around it")
            pos.append(t - 1)  # the logits that predict the '+'
        return ids, pos

    def correct_probs(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        x = self.logits(input_ids, attention_mask)[..., [self.good_id, self.bad_id]]
        return x.softmax(-1)[..., 0]
