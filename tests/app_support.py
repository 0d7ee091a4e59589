"""A tiny real transformer that writes a chosen chain: for fast app tests with real internals.

``StepScriptLM`` is the tiny random Llama of conftest with one change: after the assistant
header, while the text so far follows the script, the script's next token gets the top
logit (by a margin that varies per position, so token probabilities vary). Attention,
norms and the LM head are the real model's, so capture hooks, teacher forcing and the
live capture see genuine internals, and the bias is a function of the full context, so a
generation and a teacher-forced pass of the same chain see the same logits.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import torch
from tiny_models import tiny_config, wrap
from transformers import LlamaConfig, LlamaForCausalLM

from uhead_viz.llm import ASSISTANT_PREFIX, LLM

SCRIPT = (
    "Step 1: She sold 48 / 2 = 24 clips in May.\n"
    "Step 2: Altogether she sold 48 + 24 = 72 clips.\n"
    "Step 3: So 72 clips were sold in April and May.\n"
    "Answer: 72\n"
)


class StepScriptLM(LlamaForCausalLM):
    def setup(self, header: list[int], script: list[int], n_forced: int) -> None:
        self.header = list(header)
        self.script = list(script)
        self.n_forced = n_forced  # the prompt forces these first tokens: their logits stay the model's own
        self._seq: list[int] = []

    def _target(self, context: list[int]) -> int | None:
        h = self.header
        start = None
        for i in range(len(context) - len(h), -1, -1):
            if context[i : i + len(h)] == h:
                start = i + len(h)
                break
        if start is None:
            return None
        c = context[start:]
        s = self.script
        if self.n_forced <= len(c) < len(s) and c == s[: len(c)]:
            return s[len(c)]
        return None

    def forward(self, input_ids=None, past_key_values=None, **kw):
        # the cache grows inside forward: read its length first
        past = past_key_values.get_seq_length() if past_key_values is not None else 0
        out = super().forward(input_ids=input_ids, past_key_values=past_key_values, **kw)
        if input_ids is None or input_ids.shape[0] != 1 or not hasattr(self, "script"):
            return out
        self._seq = self._seq[:past] + input_ids[0].tolist()
        q = input_ids.shape[1]
        kept = out.logits.shape[1]
        logits = out.logits.clone()
        for j in range(kept):
            pos = past + q - kept + j
            tgt = self._target(self._seq[: pos + 1])
            if tgt is not None:
                row = logits[0, j]
                margin = 0.4 + 0.9 * ((pos * 7) % 5)
                row[tgt] = row.max() + margin
        out.logits = logits
        return out


def make_step_llm(tokenizer, script: str = SCRIPT, seed: int = 0, name: str = "tiny-steps") -> LLM:
    cfg = tiny_config(LlamaConfig, tokenizer, max_position_embeddings=2048)
    torch.manual_seed(seed)
    model = StepScriptLM._from_config(cfg, attn_implementation="eager", dtype=torch.float32).eval()
    header = tokenizer("<|im_start|>assistant\n", add_special_tokens=False)["input_ids"]
    prefix = tokenizer(ASSISTANT_PREFIX, add_special_tokens=False)["input_ids"]
    rest = tokenizer(script[len(ASSISTANT_PREFIX) :], add_special_tokens=False)["input_ids"]
    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
    model.setup(header, prefix + rest + [eos], len(prefix))
    return wrap(model, tokenizer, name)


@contextlib.contextmanager
def installed_engine(tokenizer, root: Path) -> Iterator[Any]:
    """A tiny-model Engine with empty checkpoint and example folders (set for as long as it is used)."""
    import pytest

    from uhead_viz.engine import Engine

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("UHEAD_VIZ_CHECKPOINTS", str(root / "checkpoints"))
        mp.setenv("UHEAD_VIZ_EXAMPLES", str(root / "examples"))
        yield Engine(make_step_llm(tokenizer))


def page_handlers(engine: Any, **kw: Any) -> Any:
    """The handlers of a page built for ``engine`` (``kw`` goes to ``build``), called as Gradio calls them."""
    from uhead_viz.ui.holder import EngineHolder
    from uhead_viz.ui.layout import build

    return build(EngineHolder(engine=engine), **kw).handlers


def last(gen: Iterable[Any]) -> Any:
    """The final update of a streaming callback."""
    return list(gen)[-1]
