"""Tiny models built in code: a byte-level BPE tokenizer and 2-layer random Llama / Qwen2.

A module of its own (not conftest) so test files can import it by a name that no other
conftest in the tree shadows.
"""

from __future__ import annotations

import torch

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


SIZES = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=1024,
    initializer_range=0.2,
)


def tiny_config(cfg_cls, tokenizer, **over):
    """A tiny config of ``cfg_cls`` for ``tokenizer`` (``over`` replaces any field)."""
    kw = dict(
        SIZES,
        vocab_size=len(tokenizer),
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return cfg_cls(**{**kw, **over})


def build_model(kind: str, tokenizer, seed: int = 0, attn: str = "eager", tie: bool = False):
    """A 2-layer random causal LM. A large init range makes its output depend on the prompt."""
    from transformers import (
        LlamaConfig,
        LlamaForCausalLM,
        Qwen2Config,
        Qwen2ForCausalLM,
    )

    cfg_cls, model_cls = {"llama": (LlamaConfig, LlamaForCausalLM), "qwen2": (Qwen2Config, Qwen2ForCausalLM)}[kind]
    cfg = tiny_config(cfg_cls, tokenizer, tie_word_embeddings=tie)
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
