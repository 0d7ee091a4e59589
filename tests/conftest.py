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


SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _corpus() -> list[str]:
    lines = []
    for i in range(1, 40):
        a, b = i * 3, i + 7
        lines.append(
            f"Step {i}: {a} * {b} = {a * b} apples.\n"
            f"Step {i + 1}: {a * b} + {i} = {a * b + i} clips.\n"
            f"Answer: {a * b + i}\n"
        )
        lines.append(
            f"Natalia sold {i * 4} clips to her friends in April, and then she sold half as many clips in May. "
            f"How many clips did she sell altogether? Step {i}: {i * 4} / 2 = {i * 2}.\nAnswer: {i * 6}\n"
        )
        lines.append(f"You are a careful math tutor. Solve the problem step by step.\nFinal Answer: {i}\n\n")
    return lines


def build_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>"],
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


@pytest.fixture(scope="session")
def tokenizer():
    return build_tokenizer()


def build_model(kind: str, tokenizer, seed: int = 0, attn: str = "eager", tie: bool = False):
    """A 2-layer random causal LM. A large init range makes its output depend on the prompt."""
    from transformers import (
        LlamaConfig,
        LlamaForCausalLM,
        Qwen2Config,
        Qwen2ForCausalLM,
    )

    cfg_cls, model_cls = {"llama": (LlamaConfig, LlamaForCausalLM), "qwen2": (Qwen2Config, Qwen2ForCausalLM)}[kind]
    cfg = cfg_cls(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        initializer_range=0.2,
        tie_word_embeddings=tie,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = model_cls._from_config(cfg, attn_implementation=attn, dtype=torch.float32)
    return model.eval()


def wrap(model, tokenizer, name: str):
    from uhead_viz.llm import LLM, _fingerprint

    return LLM(
        model=model,
        tokenizer=tokenizer,
        name=name,
        source="test",
        fingerprint=_fingerprint(model),
        eos_ids={tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.convert_tokens_to_ids("<|endoftext|>")},
        precision="fp32",
    )


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
