"""Teacher-forced capture of look-back attention, token probabilities and hidden states."""

from __future__ import annotations

import math

import pytest
import torch

from uhead_viz.capture import (
    CaptureSpec,
    Internals,
    Recorder,
    lookback,
    prob_features,
    teacher_force,
)
from uhead_viz.steps import chain_from_steps

STEPS = ["She sold 48 / 2 = 24 clips in May.", "48 + 24 = 72 clips in total.", "So the answer is 72."]


@pytest.fixture
def chain(tiny_llm, tokenizer):
    prompt = tiny_llm.prompt_ids("Natalia sold 48 clips in April and half as many in May. How many in all?")
    return chain_from_steps(tokenizer, "Natalia", prompt, STEPS, "72")


def reference(llm, chain, window: int):
    """Band, logits and hidden states read from one plain forward with output_attentions=True."""
    p, t = len(chain.prompt_ids), len(chain.ids)
    x = torch.tensor([chain.prompt_ids + chain.ids])
    with torch.no_grad():
        out = llm.model(input_ids=x, output_attentions=True, output_hidden_states=True)
    n_layers, n_heads = llm.n_layers, llm.n_heads
    band = torch.zeros(t, n_layers, n_heads, window)
    for layer, a in enumerate(out.attentions):
        assert a.shape == (1, n_heads, p + t, p + t)
        for i in range(t):
            q = p + i
            for j in range(window):
                if q - 1 - j >= 0:
                    band[i, layer, :, j] = a[0, :, q, q - 1 - j]
    logits = out.logits[0, p - 1 : p + t - 1]
    return band, logits, out.hidden_states


# ----- lookback ---------------------------------------------------------------------------------
def test_lookback_hand_computed():
    # 3 queries that are the last 3 of 4 cache slots (query i sits at slot i + 1), 2 heads
    w = torch.zeros(1, 2, 3, 4)
    for i in range(3):
        for k in range(4):
            w[0, 0, i, k] = 1 + 10 * i + k
            w[0, 1, i, k] = 101 + 10 * i + k
    band = lookback(w, window=2)
    assert band.shape == (1, 3, 2, 2)  # [B, q, H, window]
    # query at slot 1 looks at slot 0, then before the start (0)
    # query at slot 2 looks at slots 1, 0; query at slot 3 at slots 2, 1
    expected_h0 = torch.tensor([[1.0, 0.0], [12.0, 11.0], [23.0, 22.0]])
    expected_h1 = torch.tensor([[101.0, 0.0], [112.0, 111.0], [123.0, 122.0]])
    torch.testing.assert_close(band[0, :, 0], expected_h0)
    torch.testing.assert_close(band[0, :, 1], expected_h1)


def test_lookback_square_matrix_and_wide_window():
    w = torch.arange(9, dtype=torch.float32).reshape(1, 1, 3, 3) + 1
    band = lookback(w, window=4)
    # rows: query 0 has nothing before it; query 1 sees key 0; query 2 sees keys 1, 0
    torch.testing.assert_close(
        band[0, :, 0], torch.tensor([[0.0, 0, 0, 0], [4.0, 0, 0, 0], [8.0, 7.0, 0, 0]])
    )


def test_prob_features_hand_computed():
    logits = torch.log(torch.tensor([[0.5, 0.25, 0.125, 0.125]]))
    topk, tok, ent = prob_features(logits, torch.tensor([1]), top_k=2)
    torch.testing.assert_close(topk, torch.tensor([[0.5, 0.25]]))
    torch.testing.assert_close(tok, torch.tensor([math.log(0.25)]))
    expected = -(0.5 * math.log(0.5) + 0.25 * math.log(0.25) + 2 * 0.125 * math.log(0.125))
    torch.testing.assert_close(ent, torch.tensor([expected]))


def test_capture_spec_round_trip():
    spec = CaptureSpec(window=7, top_k=3, hidden_layers=(0, 1))
    assert spec.to_dict() == {"window": 7, "top_k": 3, "hidden_layers": [0, 1]}
    assert CaptureSpec.from_dict(spec.to_dict()) == spec
    assert CaptureSpec.from_dict({"window": 5, "top_k": 4}) == CaptureSpec()


# ----- teacher_force ----------------------------------------------------------------------------
def test_teacher_force_shapes_and_probabilities(tiny_llm, chain, tokenizer):
    spec = CaptureSpec(window=5, top_k=4)
    out = teacher_force(tiny_llm, chain, spec)
    t = len(chain.ids)
    assert isinstance(out, Internals) and len(out) == t
    assert out.attn.shape == (t, 2, 4, 5)
    assert out.attn.dtype == torch.float32
    assert out.topk_probs.shape == (t, 4)
    assert out.token_logprob.shape == out.entropy.shape == (t,)
    assert out.hidden == {}
    assert torch.all(out.topk_probs[:, :-1] >= out.topk_probs[:, 1:])
    assert torch.all(out.topk_probs >= 0)
    assert torch.all(out.topk_probs.sum(-1) <= 1 + 1e-5)
    assert torch.all(out.token_logprob <= 0)
    assert torch.all(out.entropy >= -1e-6)
    assert torch.all(out.entropy <= math.log(len(tokenizer)) + 1e-4)
    # attention weights are probabilities; the band holds part of each row's mass
    assert torch.all(out.attn >= 0)
    assert torch.all(out.attn.sum(-1) <= 1 + 1e-5)


def test_teacher_force_equals_a_full_forward(tiny_llm, chain):
    spec = CaptureSpec(window=5, top_k=4, hidden_layers=(0,))
    out = teacher_force(tiny_llm, chain, spec)
    band, logits, hidden_states = reference(tiny_llm, chain, window=5)
    torch.testing.assert_close(out.attn, band, atol=1e-5, rtol=1e-4)
    logp = torch.log_softmax(logits, -1)
    target = torch.tensor(chain.ids)
    torch.testing.assert_close(out.token_logprob, logp.gather(-1, target[:, None])[:, 0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(out.topk_probs, logp.exp().topk(4, -1).values, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(out.entropy, -(logp.exp() * logp).sum(-1), atol=1e-5, rtol=1e-4)
    # hidden_states[0] is the embedding output, hidden_states[1] the output of decoder layer 0
    p = len(chain.prompt_ids)
    torch.testing.assert_close(out.hidden[0], hidden_states[1][0, p:], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("chunk", [1, 3])
def test_chunked_equals_unchunked(tiny_llm, chain, chunk):
    spec = CaptureSpec(window=6, top_k=5, hidden_layers=(0, 1))
    whole = teacher_force(tiny_llm, chain, spec)
    parts = teacher_force(tiny_llm, chain, spec, chunk=chunk)
    for name in ("attn", "topk_probs", "token_logprob", "entropy"):
        torch.testing.assert_close(getattr(parts, name), getattr(whole, name), atol=1e-5, rtol=1e-4)
    for layer in (0, 1):
        torch.testing.assert_close(parts.hidden[layer], whole.hidden[layer], atol=1e-5, rtol=1e-4)


def test_hidden_layers_capture(tiny_llm, chain):
    out = teacher_force(tiny_llm, chain, CaptureSpec(hidden_layers=(0, 1)), chunk=4)
    assert sorted(out.hidden) == [0, 1]
    for h in out.hidden.values():
        assert h.shape == (len(chain.ids), 32)
        assert h.dtype == torch.float32
    assert not torch.allclose(out.hidden[0], out.hidden[1])


def _hook_counts(model):
    return {name: (len(m._forward_hooks), len(m._forward_pre_hooks)) for name, m in model.named_modules()}


def _our_hooks(model):
    return [
        h
        for m in model.modules()
        for h in m._forward_hooks.values()
        if getattr(h, "__module__", "") == "uhead_viz.capture"
    ]


def test_hooks_are_removed(tiny_llm, chain):
    model = tiny_llm.model
    with torch.no_grad():  # let transformers install its own (permanent) output hooks first
        model(input_ids=torch.tensor([chain.prompt_ids[:4]]), output_attentions=True, output_hidden_states=True)
    before = _hook_counts(model)
    teacher_force(tiny_llm, chain, CaptureSpec(hidden_layers=(0, 1)), chunk=5)
    assert _hook_counts(model) == before
    assert _our_hooks(model) == []
    # attention weights still reach callers after a capture
    with torch.no_grad():
        out = model(input_ids=torch.tensor([chain.prompt_ids[:4]]), output_attentions=True)
    assert all(a is not None for a in out.attentions)


def test_hooks_are_removed_after_an_error(llama_llm):
    model = llama_llm.model
    before = _hook_counts(model)
    with pytest.raises(RuntimeError, match="boom"), Recorder(model, CaptureSpec(hidden_layers=(1,))) as rec:
        assert len(_our_hooks(model)) == llama_llm.n_layers + 1
        assert rec.handles
        raise RuntimeError("boom")
    assert _hook_counts(model) == before
    assert _our_hooks(model) == []


def test_teacher_force_refuses_an_empty_chain(llama_llm, tokenizer):
    chain = chain_from_steps(tokenizer, "q", llama_llm.prompt_ids("q"), [], None)
    chain.ids = []
    with pytest.raises(ValueError, match="no tokens"):
        teacher_force(llama_llm, chain, CaptureSpec())


def test_sdpa_attention_is_refused_with_a_clear_message(make_llm, tokenizer):
    llm = make_llm("llama", attn="sdpa")
    chain = chain_from_steps(tokenizer, "q", llm.prompt_ids("q"), ["1 + 1 = 2"], "2")
    with pytest.raises(RuntimeError, match="eager"):
        teacher_force(llm, chain, CaptureSpec())
    assert _our_hooks(llm.model) == []


def test_grouped_eager_attention_matches_eager():
    """The grouped attention (no per-head KV copies) gives eager's logits and weights exactly."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from uhead_viz import attention

    torch.manual_seed(0)
    cfg = Qwen2Config(
        vocab_size=100, hidden_size=48, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=6, num_key_value_heads=2, max_position_embeddings=64,
    )
    m = Qwen2ForCausalLM(cfg).eval()
    x = torch.randint(0, 100, (2, 10))
    mask = torch.ones(2, 10, dtype=torch.long)
    mask[0, :3] = 0  # left padding
    with torch.no_grad():
        m.config._attn_implementation = "eager"
        a = m(input_ids=x, attention_mask=mask, output_attentions=True)
        m.config._attn_implementation = attention.NAME
        b = m(input_ids=x, attention_mask=mask, output_attentions=True)
    assert torch.allclose(a.logits, b.logits, atol=1e-6)
    for wa, wb in zip(a.attentions, b.attentions):
        assert wa.shape == wb.shape
        assert torch.allclose(wa, wb, atol=1e-6)


def _same(a, b, tol=1e-4):
    assert a.attn.shape == b.attn.shape
    for x, y in ((a.attn, b.attn), (a.topk_probs, b.topk_probs), (a.token_logprob, b.token_logprob),
                 (a.entropy, b.entropy)):
        assert torch.allclose(x, y, atol=tol), (x - y).abs().max()
    for li in a.hidden:
        assert torch.allclose(a.hidden[li], b.hidden[li], atol=tol)


@pytest.mark.parametrize("chunk", [256, 3])
def test_trunk_reuse_equals_a_fresh_capture(tiny_llm, tokenizer, chunk):
    """A branch that shares its first steps with a cached chain gets exactly a fresh capture's internals."""
    from uhead_viz.capture import TrunkCache

    spec = CaptureSpec(window=3, top_k=2, hidden_layers=(1,))
    prompt = tiny_llm.prompt_ids("Natalia")
    main = chain_from_steps(tokenizer, "Natalia", prompt, STEPS, "72")
    branch = chain_from_steps(tokenizer, "Natalia", prompt, STEPS[:1] + ["Step 2: she sold 50 clips."], None)
    prefix = chain_from_steps(tokenizer, "Natalia", prompt, STEPS[:1], None)
    trunks = TrunkCache()
    _same(teacher_force(tiny_llm, main, spec, chunk=chunk, trunks=trunks), teacher_force(tiny_llm, main, spec))
    got = teacher_force(tiny_llm, branch, spec, chunk=chunk, trunks=trunks)
    assert trunks.reused_tokens > 0
    _same(got, teacher_force(tiny_llm, branch, spec))
    n = trunks.reused_tokens
    _same(teacher_force(tiny_llm, prefix, spec, trunks=trunks), teacher_force(tiny_llm, prefix, spec))
    assert trunks.reused_tokens > n
