"""The uncertainty head: features, masking, checkpoints and their refusals, a short training run."""

from __future__ import annotations

import json
import logging
import pickle

import pytest
import torch

from uhead_viz.capture import CaptureSpec, teacher_force
from uhead_viz.errors import HeadError
from uhead_viz.features import feature_dim, restrict, token_features
from uhead_viz.steps import chain_from_steps
from uhead_viz.uhead import UHead, UHeadConfig, bce_loss, collate, find_heads, load_head, save_head

SMALL = {"d_model": 32, "n_heads": 4, "d_ff": 64, "n_layers": 2}
PROBLEM = "Natalia sold 48 clips in April and half as many in May. How many clips did she sell?"
STEPS = ["48 / 2 = 24 clips in May.", "48 + 24 = 72 clips in all.", "So she sold 72 clips."]


def make_chain(llm, steps=STEPS, problem=PROBLEM):
    return chain_from_steps(llm.tokenizer, problem, llm.prompt_ids(problem), steps)


def feats_for(llm, chain, spec=None):
    spec = spec or CaptureSpec()
    return token_features(teacher_force(llm, chain, spec), spec)


def other_llm(tokenizer, name: str, layers: int = 2, seed: int = 0):
    """A tiny Llama like conftest's, with a chosen depth and seed."""
    from tiny_models import wrap
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        initializer_range=0.2,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM._from_config(cfg, attn_implementation="eager", dtype=torch.float32).eval()
    return wrap(model, tokenizer, name)


# ----- features ------------------------------------------------------------------------------
@pytest.mark.parametrize("hidden_layers", [(), (1,)])
def test_feature_shapes(tiny_llm, hidden_layers):
    spec = CaptureSpec(window=3, top_k=2, hidden_layers=hidden_layers)
    chain = make_chain(tiny_llm)
    f = feats_for(tiny_llm, chain, spec)
    hidden = tiny_llm.model.config.hidden_size
    want = feature_dim(tiny_llm.n_layers, tiny_llm.n_heads, spec, hidden)
    assert want == 2 * 4 * 3 + 2 + 2 + len(hidden_layers) * hidden
    assert f.shape == (len(chain.ids), want)
    assert f.dtype == torch.float32 and torch.isfinite(f).all()


def test_restrict_matches_narrow_capture(llama_llm):
    chain = make_chain(llama_llm)
    wide = teacher_force(llama_llm, chain, CaptureSpec(window=6, top_k=5))
    narrow_spec = CaptureSpec(window=3, top_k=2)
    narrow = teacher_force(llama_llm, chain, narrow_spec)
    a = token_features(restrict(wide, narrow_spec), narrow_spec)
    b = token_features(narrow, narrow_spec)
    assert torch.allclose(a, b, atol=1e-5)
    with pytest.raises(ValueError):
        restrict(narrow, CaptureSpec(window=6))


# ----- the model ---------------------------------------------------------------------------------
@pytest.mark.parametrize("mode,pool", [("step", "mean"), ("causal", "mean"), ("causal", "max"), ("causal", "last")])
def test_parameter_count_for_qwen_1_5b_features(mode, pool):
    n = feature_dim(28, 12, CaptureSpec())
    assert n == 1680 + 4 + 2
    head = UHead(UHeadConfig(n_features=n, mode=mode, pool=pool))
    assert head.num_parameters() < 10_000_000
    logits = head.eval().step_logits(torch.randn(40, n), [(0, 10), (10, 25), (25, 40)])
    assert logits.shape == (3,)


@pytest.mark.parametrize("mode,pool", [("step", "mean"), ("causal", "mean"), ("causal", "max"), ("causal", "last")])
def test_later_steps_do_not_change_earlier_scores(mode, pool):
    torch.manual_seed(0)
    head = UHead(UHeadConfig(n_features=12, mode=mode, pool=pool, **SMALL)).eval()
    feats = torch.randn(30, 12)
    spans = [(0, 8), (8, 15), (15, 30)]
    base = head.step_logits(feats, spans)
    # rewrite everything after step 2: other features, another length, another split
    changed = torch.cat([feats[:15], torch.randn(22, 12)])
    out = head.step_logits(changed, [(0, 8), (8, 15), (15, 20), (20, 37)])
    assert torch.allclose(base[:2], out[:2], atol=1e-5)
    assert not torch.allclose(base[2], out[2], atol=1e-4)
    # and the batched forward agrees with the one-chain path, padding included
    batch = collate([(feats, spans), (changed, [(0, 8), (8, 15), (15, 20), (20, 37)])])
    logits = head(*batch)
    assert torch.allclose(logits[0, :3], base, atol=1e-5)
    assert torch.allclose(logits[1, :2], base[:2], atol=1e-5)


@pytest.mark.parametrize("pool", ["mean", "max", "last"])
def test_step_context_scores_a_step_by_its_own_tokens(pool):
    torch.manual_seed(0)
    head = UHead(UHeadConfig(n_features=12, mode="causal", pool=pool, context="step", **SMALL)).eval()
    feats = torch.randn(30, 12)
    spans = [(0, 8), (8, 15), (15, 30)]
    base = head.step_logits(feats, spans)
    # other earlier steps, more of them: the last step's score does not move
    before = torch.randn(21, 12)
    moved = head.step_logits(torch.cat([before, feats[15:]]), [(0, 5), (5, 13), (13, 21), (21, 36)])
    assert torch.allclose(moved[-1], base[-1], atol=1e-5)
    # the whole-chain context does see them
    chain = UHead(UHeadConfig(n_features=12, mode="causal", pool=pool, **SMALL)).eval()
    chain.load_state_dict(head.state_dict())
    a = chain.step_logits(feats, spans)[-1]
    b = chain.step_logits(torch.cat([before, feats[15:]]), [(0, 5), (5, 13), (13, 21), (21, 36)])[-1]
    assert not torch.allclose(a, b, atol=1e-4)
    # batched with padding: the same logits as one chain at a time
    logits = head(*collate([(feats, spans), (feats[:15], spans[:2])]))
    assert torch.allclose(logits[0], base, atol=1e-5)
    assert torch.allclose(logits[1, :2], base[:2], atol=1e-5)
    with pytest.raises(ValueError, match="context"):
        UHeadConfig(n_features=12, context="document")


def test_window_attention_ignores_how_much_mass_the_window_holds():
    torch.manual_seed(0)
    spec = CaptureSpec(window=3, top_k=2)
    n = feature_dim(2, 2, spec)  # 2 layers x 2 heads x 3 look-back + 2 probs + entropy + log-prob
    base = {"n_layers": 2, "n_heads": 2}
    head = UHead(UHeadConfig(n_features=n, mode="causal", attn="window", **SMALL), spec=spec, base=base).eval()
    feats = torch.rand(20, n)
    x = head.prepare(feats)
    assert torch.allclose(x[:, :12].unflatten(-1, (4, 3)).sum(-1), torch.ones(20, 4))
    assert torch.equal(x[:, 12:], feats[:, 12:])
    spans = [(0, 8), (8, 20)]
    shrunk = feats.clone()
    shrunk[:, :12] *= 0.25  # a longer context: less attention mass on the last few tokens
    assert torch.allclose(head.step_logits(feats, spans), head.step_logits(shrunk, spans), atol=1e-5)
    raw = UHead(UHeadConfig(n_features=n, mode="causal", **SMALL), spec=spec, base=base).eval()
    assert torch.equal(raw.prepare(feats), feats)
    with pytest.raises(ValueError, match="attn"):
        UHeadConfig(n_features=n, attn="softmax")


def test_step_mode_chunks_give_the_same_logits(monkeypatch):
    import uhead_viz.head_model as uhead_module

    torch.manual_seed(0)
    head = UHead(UHeadConfig(n_features=12, mode="step", **SMALL)).eval()
    batch = collate([(torch.randn(30, 12), [(0, 8), (8, 15), (15, 30)]), (torch.randn(12, 12), [(0, 5), (5, 12)])])
    with torch.no_grad():
        whole = head(*batch)
        monkeypatch.setattr(uhead_module, "ATTN_BUDGET", 1)  # one row per encoder call
        chunked = head(*batch)
    assert torch.allclose(whole, chunked, atol=1e-5)
    assert chunked[1, 2] == 0  # the padded step slot


@pytest.mark.parametrize("mode", ["step", "causal"])
def test_masking_end_to_end_on_a_tiny_model(qwen2_llm, mode):
    torch.manual_seed(0)
    head = UHead.for_llm(qwen2_llm, **SMALL, mode=mode).eval()
    a = make_chain(qwen2_llm, STEPS)
    b = make_chain(qwen2_llm, STEPS[:2] + ["Then 7 * 9 = 63 apples, not clips."])
    assert a.ids[: a.spans[1][1]] == b.ids[: b.spans[1][1]]
    la = head.step_logits(feats_for(qwen2_llm, a), a.spans)
    lb = head.step_logits(feats_for(qwen2_llm, b), b.spans)
    assert torch.allclose(la[:2], lb[:2], atol=1e-4)


# ----- checkpoints ------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["step", "causal"])
def test_save_load_round_trip(tmp_path, llama_llm, mode):
    torch.manual_seed(1)
    head = UHead.for_llm(llama_llm, **SMALL, mode=mode).eval()
    head.threshold = 0.3
    head.training_summary = {"steps": 5, "data": "unit test"}
    head.metrics = {"auroc": 0.5}
    save_head(head, tmp_path / "h")
    cfg = json.loads((tmp_path / "h" / "config.json").read_text())
    assert cfg["base_model"]["name"] == "tiny-llama"
    assert cfg["base_model"]["fingerprint"] == llama_llm.fingerprint
    assert cfg["base_model"]["precision"] == "fp32"
    assert cfg["features"] == {
        "window": 5,
        "top_k": 4,
        "hidden_layers": [],
        "n_layers": 2,
        "n_heads": 4,
        "hidden_size": 32,
        "n_features": head.config.n_features,
    }
    assert cfg["head"]["mode"] == mode and cfg["threshold"] == 0.3
    assert cfg["training"]["steps"] == 5 and cfg["metrics"] == {"auroc": 0.5}
    assert sorted(p.name for p in (tmp_path / "h").iterdir()) == ["config.json", "model.safetensors"]

    loaded = load_head(tmp_path / "h", llama_llm)
    assert loaded.config == head.config and loaded.threshold == 0.3 and loaded.metrics == {"auroc": 0.5}
    chain = make_chain(llama_llm)
    f = feats_for(llama_llm, chain)
    with torch.no_grad():
        assert torch.equal(head.step_logits(f, chain.spans), loaded.step_logits(f, chain.spans))


def test_refuses_head_for_another_architecture(tmp_path, tokenizer, llama_llm, qwen2_llm):
    save_head(UHead.for_llm(llama_llm, **SMALL), tmp_path / "h")
    deeper = other_llm(tokenizer, "tiny-llama", layers=3)
    with pytest.raises(HeadError, match="n_layers 2 vs 3"):
        load_head(tmp_path / "h", deeper, allow_other_build=True)
    with pytest.raises(HeadError, match="architecture llama vs qwen2"):
        load_head(tmp_path / "h", qwen2_llm, allow_other_build=True)
    assert isinstance(HeadError("x"), ValueError)
    fits = find_heads(tmp_path, deeper)
    assert len(fits) == 1 and fits[0].reason is not None


def test_refuses_other_build_unless_allowed(tmp_path, tokenizer, llama_llm, caplog):
    save_head(UHead.for_llm(llama_llm, **SMALL), tmp_path / "h")
    rebuilt = other_llm(tokenizer, "tiny-llama", seed=7)  # same name and shape, other weights
    assert rebuilt.fingerprint != llama_llm.fingerprint
    with pytest.raises(HeadError, match="another build.*--allow-other-build"):
        load_head(tmp_path / "h", rebuilt)
    with caplog.at_level(logging.WARNING, logger="uhead_viz.uhead"):
        load_head(tmp_path / "h", rebuilt, allow_other_build=True)
    assert "another build" in caplog.text
    stranger = other_llm(tokenizer, "some-other-model", seed=7)
    with pytest.raises(HeadError, match="not on some-other-model"):
        load_head(tmp_path / "h", stranger, allow_other_build=True)


def test_refuses_corrupt_weights(tmp_path, llama_llm):
    folder = save_head(UHead.for_llm(llama_llm, **SMALL), tmp_path / "h")
    w = folder / "model.safetensors"
    good = w.read_bytes()
    w.write_bytes(good[: len(good) // 2])  # truncated
    with pytest.raises(HeadError, match="corrupt"):
        load_head(folder, llama_llm)
    flipped = bytearray(good)
    flipped[-10] ^= 0xFF  # one byte of tensor data
    w.write_bytes(bytes(flipped))
    with pytest.raises(HeadError, match="sha256"):
        load_head(folder, llama_llm)
    w.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!" + good[24:])
    with pytest.raises(HeadError, match="corrupt"):
        load_head(folder, llama_llm)
    # without the recorded hash a truncated file is still caught by the safetensors reader
    cfg = json.loads((folder / "config.json").read_text())
    del cfg["weights"]["sha256"]
    (folder / "config.json").write_text(json.dumps(cfg))
    w.write_bytes(good[:-40])
    with pytest.raises(HeadError, match="corrupt"):
        load_head(folder, llama_llm)
    (folder / "config.json").write_text("{not json")
    with pytest.raises(HeadError, match="not valid JSON"):
        load_head(folder, llama_llm)


def test_refuses_pickle_files(tmp_path, llama_llm):
    folder = save_head(UHead.for_llm(llama_llm, **SMALL), tmp_path / "h")
    blob = pickle.dumps({"proj.0.weight": [1.0, 2.0]}, protocol=4)
    (folder / "model.safetensors").write_bytes(blob)
    with pytest.raises(HeadError, match="pickle"):
        load_head(folder, llama_llm)
    only_pickle = tmp_path / "p"
    only_pickle.mkdir()
    (only_pickle / "head.pt").write_bytes(blob)
    with pytest.raises(HeadError, match="pickle"):
        load_head(only_pickle, llama_llm)
    with pytest.raises(HeadError, match="pickle"):
        load_head(only_pickle / "head.pt", llama_llm)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["weights"] = {"file": "model.bin"}
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(HeadError, match="safetensors"):
        load_head(folder, llama_llm)


def test_refuses_unknown_or_missing_tensors(tmp_path, llama_llm):
    from safetensors.torch import load_file, save_file

    folder = save_head(UHead.for_llm(llama_llm, **SMALL), tmp_path / "h")
    w = folder / "model.safetensors"
    tensors = load_file(str(w))
    cfg = json.loads((folder / "config.json").read_text())
    del cfg["weights"]["sha256"]
    (folder / "config.json").write_text(json.dumps(cfg))
    save_file({**tensors, "extra.weight": torch.zeros(2)}, str(w))
    with pytest.raises(HeadError, match="unknown extra.weight"):
        load_head(folder, llama_llm)
    save_file({k: v for k, v in tensors.items() if k != "classifier.bias"}, str(w))
    with pytest.raises(HeadError, match="missing classifier.bias"):
        load_head(folder, llama_llm)
    save_file({**tensors, "classifier.bias": torch.zeros(3)}, str(w))
    with pytest.raises(HeadError, match="wrong shape"):
        load_head(folder, llama_llm)


# ----- training ---------------------------------------------------------------------------------
def test_short_training_run_and_round_trip(tmp_path, llama_llm):
    """A few BCE steps on the tiny model's features fit toy labels; the saved head scores the same."""
    torch.manual_seed(0)
    problems = [f"Tom has {a} apples and buys {b} more. How many apples?" for a, b in [(3, 4), (5, 6), (8, 2), (7, 7)]]
    items, labels = [], []
    for i, q in enumerate(problems):
        steps = (
            ["3 + 4 = 7 apples.", "7 * 2 = 15 apples.", "So 15 apples."]
            if i % 2
            else ["5 + 6 = 11 apples.", "11 - 1 = 10 apples."]
        )
        lab = [0, 1, 1] if i % 2 else [0, 0]
        chain = make_chain(llama_llm, steps, q)
        items.append((feats_for(llama_llm, chain), chain.spans))
        labels.append(lab + [0] * (3 - len(lab)))
    feats, valid, steps_mask = collate(items)
    y = torch.tensor(labels, dtype=torch.float32)
    head = UHead.for_llm(llama_llm, **SMALL, dropout=0.0)
    opt = torch.optim.AdamW(head.parameters(), lr=3e-3)
    losses = []
    head.train()
    for _ in range(30):
        loss = bce_loss(head(feats, valid, steps_mask), y, steps_mask)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    head.eval()
    head.training_summary = {"steps": 30, "final_loss": losses[-1]}
    save_head(head, tmp_path / "trained")
    loaded = load_head(tmp_path / "trained", llama_llm)
    with torch.no_grad():
        assert torch.equal(head(feats, valid, steps_mask), loaded(feats, valid, steps_mask))
    assert loaded.training_summary["steps"] == 30


def test_save_refuses_a_head_that_does_not_name_its_model(tmp_path):
    head = UHead(UHeadConfig(n_features=12, **SMALL))
    with pytest.raises(ValueError, match="which model it reads"):
        save_head(head, tmp_path / "h")
    assert not (tmp_path / "h").exists()


def test_a_safetensors_header_length_starting_with_0x80_is_not_taken_for_pickle(tmp_path):
    """A real safetensors file whose 8-byte header length has 0x80 as its first byte loads."""
    from safetensors.torch import save_file

    from uhead_viz.uhead import _read_weights

    for pad in range(0, 400):
        path = tmp_path / "w.safetensors"
        save_file({"x" * (1 + pad): torch.zeros(1)}, str(path))
        if path.read_bytes()[:1] == b"\x80":
            break
    else:
        pytest.skip("no header length with a 0x80 first byte in range")
    assert set(_read_weights(path, None)) == {"x" * (1 + pad)}
