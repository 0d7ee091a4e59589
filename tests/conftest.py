"""Shared fixtures: a tiny byte-level BPE tokenizer and tiny random Llama / Qwen2 models.

Everything is built in code from a fixed seed, so the unit suite needs no downloads
and runs in seconds on a CPU.
"""

from __future__ import annotations

import types
from collections.abc import Callable

import pytest
import torch

# The tiny models' ops take microseconds; with several threads on a small shared CPU, thread
# hand-offs cost 10-100x the work itself. Even the real model in tests/integration ran about
# twice as fast on one thread as on two while other jobs shared the machine, so all tests use one.
torch.set_num_threads(1)


from tiny_models import CHAT_TEMPLATE, SPECIALS, build_model, build_tokenizer, wrap  # noqa: E402,F401


@pytest.fixture(scope="session")
def real_load() -> dict:
    """The real default model, loaded once for the whole session under the network guard, with what
    the load tried on the network and how long it took.

    Every test on the real model (tests/integration, tests/robustness) shares this one copy: a
    second copy left in the heap by an earlier module would count in a later test's memory bound.
    """
    import sys
    import time
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent / "robustness"))
    from robust_support import NetGuard, record

    from uhead_viz.llm import load_llm

    t0 = time.perf_counter()
    with NetGuard() as guard:
        llm = load_llm()
    seconds = time.perf_counter() - t0
    record("model_load", {"model": llm.name, "precision": llm.precision, "seconds": round(seconds, 1)})
    return {"llm": llm, "guard": guard, "seconds": seconds}


@pytest.fixture(scope="session")
def real_llm(real_load):
    return real_load["llm"]


@pytest.fixture(scope="session")
def tokenizer():
    return build_tokenizer()


@pytest.fixture(scope="session")
def make_model(tokenizer) -> Callable[..., torch.nn.Module]:
    """Factory for a fresh tiny model, for tests that change the model (quantization)."""

    def make(kind: str = "llama", **kw):
        return build_model(kind, tokenizer, **kw)

    return make


@pytest.fixture(scope="session")
def make_llm(tokenizer):
    """Factory for a fresh tiny model wrapped as an LLM."""

    def make(kind: str = "llama", **kw):
        return wrap(build_model(kind, tokenizer, **kw), tokenizer, f"tiny-{kind}")

    return make


@pytest.fixture(scope="session")
def llama_llm(tokenizer):
    return wrap(build_model("llama", tokenizer, seed=0), tokenizer, "tiny-llama")


@pytest.fixture(scope="session")
def qwen2_llm(tokenizer):
    return wrap(build_model("qwen2", tokenizer, seed=1), tokenizer, "tiny-qwen2")


@pytest.fixture(params=["llama", "qwen2"])
def tiny_llm(request, llama_llm, qwen2_llm):
    return {"llama": llama_llm, "qwen2": qwen2_llm}[request.param]


class ScriptedLM(torch.nn.Module):
    """A stand-in causal LM that writes a fixed token script after the prompt, one row per script.

    It follows the calling convention of ``uhead_viz.llm.decode`` (left-padded batch, then one
    token per call with a growing attention mask) and puts all probability on the script's
    next token, so the decoding loop's stop rules can be tested on known text.
    """

    def __init__(self, scripts: list[list[int]], vocab: int, filler: int) -> None:
        super().__init__()
        self.scripts = scripts
        self.vocab = vocab
        self.filler = filler
        self.dummy = torch.nn.Parameter(torch.zeros(1))
        self.calls = 0
        self.config = types.SimpleNamespace(num_hidden_layers=1, num_attention_heads=1)

    def forward(self, input_ids, attention_mask=None, past_key_values=None, **kw):
        self.calls += 1
        total = attention_mask.shape[1] if attention_mask is not None else input_ids.shape[1]
        if past_key_values is None or input_ids.shape[1] > 1:  # a prompt (or prompt-tail) call
            width = total
        else:
            width = past_key_values.width
        n_out = total - width  # tokens generated so far
        logits = torch.full((input_ids.shape[0], 1, self.vocab), -1e4)
        for i in range(input_ids.shape[0]):
            script = self.scripts[i] if i < len(self.scripts) else []
            nxt = script[n_out] if n_out < len(script) else self.filler
            logits[i, 0, nxt] = 0.0
        return types.SimpleNamespace(logits=logits, past_key_values=_ScriptCache(width))


class _ScriptCache:
    """The scripted model's 'KV cache': only the prompt width, so it knows how far it has written."""

    def __init__(self, width: int) -> None:
        self.width = width

    def batch_repeat_interleave(self, repeats: int) -> None:
        pass


@pytest.fixture
def scripted(tokenizer):
    """Build an LLM whose model writes the given texts (tokenized; ``None`` marks an EOS token)."""
    from uhead_viz.llm import LLM

    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")

    def make(texts: list[list[str | None]]):
        scripts = []
        for parts in texts:
            ids: list[int] = []
            for p in parts:
                ids += [eos] if p is None else tokenizer(p, add_special_tokens=False)["input_ids"]
            scripts.append(ids)
        filler = tokenizer(" x", add_special_tokens=False)["input_ids"][0]
        model = ScriptedLM(scripts, len(tokenizer), filler)
        return LLM(
            model=model, tokenizer=tokenizer, name="scripted", source="test", fingerprint="0", eos_ids={eos},
            precision="fp32",
        )

    return make
