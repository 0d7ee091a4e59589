"""The real default model (packaged Qwen2.5-Coder-1.5B-Instruct), loaded once: slow, so kept to a few checks.

Run with ``pytest -m integration``; the model must be installed (``make models``) and is
converted and cached on first use.
"""

from __future__ import annotations

import pytest
import torch

from uhead_viz.capture import CaptureSpec, teacher_force
from uhead_viz.llm import last_number
from uhead_viz.steps import chain_from_ids, chain_from_steps, step_body

pytestmark = pytest.mark.integration

NATALIA = (
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
    "How many clips did Natalia sell altogether in April and May?"
)


@pytest.fixture(scope="module")
def llm(real_llm):
    return real_llm  # the session's one copy (tests/conftest.py)


@pytest.fixture(scope="module")
def natalia(llm):
    return llm.generate([NATALIA], max_new_tokens=160)[0]


def assert_spans_hold_steps(tokenizer, chain):
    prev = 0
    for (s, e), step in zip(chain.spans, chain.steps, strict=True):
        assert prev <= s < e <= len(chain.ids)
        prev = e
        assert step_body(step) in tokenizer.decode(chain.ids[s:e])


def test_generate_natalia(llm, natalia):
    chain = natalia
    assert len(chain.steps) >= 2, chain.text
    assert chain.answer is not None, chain.text
    assert last_number(chain.answer) is not None, chain.answer
    assert chain.meta["stop_reason"] in ("answer", "eos"), chain.meta
    assert chain.text == llm.tokenizer.decode(chain.ids)
    assert chain.prompt_ids == llm.prompt_ids(NATALIA)
    assert_spans_hold_steps(llm.tokenizer, chain)


def test_teacher_force_three_steps(llm):
    steps = [
        "In May Natalia sold 48 / 2 = 24 clips.",
        "Step 2: Altogether she sold 48 + 24 = 72 clips.",
        "So the total is 72 clips.",
    ]
    chain = chain_from_steps(llm.tokenizer, NATALIA, llm.prompt_ids(NATALIA), steps, "72")
    assert len(chain.spans) == 3
    assert_spans_hold_steps(llm.tokenizer, chain)
    out = teacher_force(llm, chain, CaptureSpec(window=5, top_k=4))
    t = len(chain.ids)
    assert len(out) == t
    assert out.attn.shape == (t, llm.n_layers, llm.n_heads, 5)
    assert out.topk_probs.shape == (t, 4)
    assert torch.isfinite(out.attn).all() and torch.isfinite(out.token_logprob).all()
    assert torch.all(out.token_logprob <= 0) and torch.all(out.entropy >= -1e-4)
    # the model finds its own kind of arithmetic likely: "72" after "48 + 24 =" is not a surprise
    assert float(out.token_logprob.mean()) > -3.0


def test_generated_ids_round_trip_through_text(llm, natalia):
    tok = llm.tokenizer
    again = tok(natalia.text, add_special_tokens=False)["input_ids"]
    if again != natalia.ids:
        # a different but equivalent tokenization: spans must still line up with the steps
        rebuilt = chain_from_ids(tok, NATALIA, natalia.prompt_ids, again)
        assert rebuilt.steps == natalia.steps
        assert_spans_hold_steps(tok, rebuilt)
    else:
        assert chain_from_ids(tok, NATALIA, natalia.prompt_ids, again).spans == natalia.spans
