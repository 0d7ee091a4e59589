"""Skywork-o1-Open-PRM (Qwen2.5 1.5B/7B): a value head on the base model, sigmoid at each step's end.

The checkpoint is a Qwen2 base model plus one linear layer, ``v_head.summary`` (hidden
size -> 1), stored in the same safetensors files. The base is loaded with transformers'
own Qwen2 class (no remote code is needed or run) and the value head is a small module
whose two tensors are read straight from the safetensors (never from a pickle).

Input, as the model was trained: the tokenizer's BOS text (if any), the problem and a
newline, then the steps, each tokenized on its own and followed by the newline token (the
step token); a step's reward is sigmoid(value) at its step token. Newlines inside a step
are turned into spaces, since a newline separates steps.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import InputError
from .prm import PRM, family, load_checked, one_line

HEAD_KEY = "v_head.summary"


class ValueHead(nn.Module):
    """hidden state -> one value per token."""

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.summary = nn.Linear(hidden_size, 1)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.summary(hidden.to(self.summary.weight.dtype)).squeeze(-1)


def value_head_tensors(folder: Path) -> dict[str, torch.Tensor]:
    """``{"weight", "bias"}`` of the value head from the folder's safetensors (any key prefix)."""
    from safetensors import safe_open

    index = folder / "model.safetensors.index.json"
    files = sorted(folder.glob("*.safetensors"))
    if index.is_file():  # sharded: only open the shard(s) holding the head
        weight_map = json.loads(index.read_text(encoding="utf-8")).get("weight_map", {})
        names = {f for k, f in weight_map.items() if HEAD_KEY in k}
        files = [folder / n for n in sorted(names)] or files
    found: dict[str, torch.Tensor] = {}
    for f in files:
        with safe_open(str(f), framework="pt") as st:
            for k in st.keys():
                for part in ("weight", "bias"):
                    if k.endswith(f"{HEAD_KEY}.{part}"):
                        found[part] = st.get_tensor(k)
    if "weight" not in found:
        raise InputError(f"No value head ({HEAD_KEY}.weight) in the safetensors of {folder}: not a Skywork PRM?")
    return found


@family("skywork")
class SkyworkPRM(PRM):
    def load_model(self, folder: Path) -> Any:
        import transformers

        base = load_checked(transformers.AutoModel, folder, self.trust_remote_code, native=True)
        t = value_head_tensors(folder)
        head = ValueHead(int(base.config.hidden_size))
        if tuple(t["weight"].shape) != tuple(head.summary.weight.shape):
            raise InputError(f"The value head in {folder} has shape {tuple(t['weight'].shape)}, not (1, hidden size).")
        with torch.no_grad():
            head.summary.weight.copy_(t["weight"].float())
            head.summary.bias.copy_(t["bias"].float() if "bias" in t else torch.zeros(1))
        base.v_head = head.to(dtype=torch.float32)  # a submodule, so .to(device) moves it too
        return base

    def setup(self) -> None:
        self.newline_id = self.token_id("\n")

    def encode(self, problem: str, steps: list[str]) -> tuple[list[int], list[int]]:
        tok = self.tokenizer
        ids = list(tok.encode((tok.bos_token or "") + problem + "\n", add_special_tokens=False))
        pos = []
        for s in steps:
            ids += tok.encode(one_line(s), add_special_tokens=False) + [self.newline_id]
            pos.append(len(ids) - 1)
        return ids, pos

    def correct_probs(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return torch.sigmoid(self.model.v_head(hidden).float())
