"""Int8 weights: quantize, save as safetensors, rebuild without re-quantizing."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from uhead_viz import llm as llm_mod
from uhead_viz.quant import (
    FORMAT,
    QLinear,
    W8Linear,
    ensure_int8,
    ensure_w8,
    load_int8,
    quantize_,
    save_int8,
    to_w8_,
)

X = torch.tensor([[5, 17, 42, 99, 3, 250, 7, 8, 12]])


def logits(model, x=X):
    with torch.no_grad():
        return model(input_ids=x).logits


def meta_keys(folder):
    with safe_open(str(folder / "int8.safetensors"), framework="pt") as f:
        return set(f.keys())


def linear_names(model, cls):
    return sorted(n for n, m in model.named_modules() if isinstance(m, cls))


@pytest.mark.parametrize("kind, tie", [("llama", False), ("qwen2", False), ("qwen2", True)])
def test_round_trip_gives_identical_logits(make_model, tmp_path, kind, tie):
    model = make_model(kind, seed=3, tie=tie)
    dense = logits(model)
    dense_names = linear_names(model, torch.nn.Linear)
    quantize_(model)
    w8_names = [n for n in dense_names if n.endswith(("down_proj", "lm_head"))]
    dyn_names = [n for n in dense_names if n not in w8_names]
    assert w8_names and linear_names(model, W8Linear) == w8_names
    assert linear_names(model, QLinear) == dyn_names
    assert linear_names(model, torch.nn.Linear) == []
    q = logits(model)
    # int8 is close to fp32, not equal to it
    assert not torch.equal(q, dense)
    assert torch.nn.functional.cosine_similarity(q.flatten(), dense.flatten(), dim=0) > 0.99

    save_int8(model, tmp_path, {"source": "unit-test", "n": 3})
    assert not (tmp_path / "int8.safetensors.tmp").exists()
    with safe_open(str(tmp_path / "int8.safetensors"), framework="pt") as f:
        meta = f.metadata()
        assert f.get_tensor("model.layers.0.self_attn.q_proj.qweight").dtype == torch.int8
    assert meta["format"] == FORMAT
    assert json.loads(meta["source"]) == "unit-test" and json.loads(meta["n"]) == 3
    assert sorted(json.loads(meta["qlinear"])) == dyn_names
    assert sorted(json.loads(meta["w8linear"])) == w8_names
    assert f"{w8_names[0]}.qweight" in meta_keys(tmp_path)

    loaded = load_int8(tmp_path, model.config)
    assert not loaded.training
    assert linear_names(loaded, QLinear) == dyn_names
    assert linear_names(loaded, W8Linear) == w8_names
    assert not any(p.is_meta for p in list(loaded.parameters()) + list(loaded.buffers()))
    assert torch.equal(logits(loaded), q)
    longer = torch.arange(40).reshape(2, 20) + 3
    assert torch.equal(logits(loaded, longer), logits(model, longer))
    # the fingerprint reads unquantized tensors only, so it matches the dense model's
    assert llm_mod._fingerprint(loaded) == llm_mod._fingerprint(make_model(kind, seed=3, tie=tie))


def test_load_int8_refuses_other_formats(make_model, tmp_path):
    save_file({"x": torch.zeros(2)}, str(tmp_path / "int8.safetensors"), metadata={"format": "something-else"})
    with pytest.raises(ValueError, match=f"not a {FORMAT} file"):
        load_int8(tmp_path, make_model("llama").config)
    save_file({"x": torch.zeros(2)}, str(tmp_path / "int8.safetensors"))  # no metadata at all
    with pytest.raises(ValueError, match=FORMAT):
        load_int8(tmp_path, make_model("llama").config)


def test_load_int8_refuses_missing_tensors(make_model, tmp_path):
    model = quantize_(make_model("llama"))
    save_int8(model, tmp_path)
    path = tmp_path / "int8.safetensors"
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
        names = f.keys()
        tensors = {k: f.get_tensor(k) for k in names if k != "model.norm.weight"}
    save_file(tensors, str(path), metadata=meta)
    with pytest.raises(ValueError, match="lacks tensors for: model.norm.weight"):
        load_int8(tmp_path, model.config)


def test_ensure_int8_quantizes_once_and_load_llm_uses_it(make_model, tokenizer, tmp_path, monkeypatch):
    src = tmp_path / "src"
    dense = make_model("qwen2", seed=4, tie=True)
    dense.save_pretrained(src)
    tokenizer.save_pretrained(src)
    dest = ensure_int8(src, tmp_path / "q" / "m")
    assert (dest / "int8.safetensors").is_file()
    assert (dest / "config.json").is_file() and (dest / "tokenizer.json").is_file()
    assert not (dest / "model.safetensors").exists()
    assert not (tmp_path / "q" / "m.staging").exists()
    stamp = (dest / "int8.safetensors").stat().st_mtime_ns
    assert ensure_int8(src, dest) == dest
    assert (dest / "int8.safetensors").stat().st_mtime_ns == stamp

    monkeypatch.setenv("UHEAD_VIZ_CACHE", str(tmp_path / "cache"))
    loaded = llm_mod.load_llm(str(src), precision="int8")
    assert loaded.precision == "int8"
    assert linear_names(loaded.model, torch.nn.Linear) == []
    assert list((tmp_path / "cache" / "int8-v4").iterdir())  # cached under UHEAD_VIZ_CACHE
    assert loaded.fingerprint == llm_mod._fingerprint(dense)
    x = torch.tensor([loaded.prompt_ids("What is 2 + 3?")])
    ref = quantize_(make_model("qwen2", seed=4, tie=True))
    assert torch.equal(logits(loaded.model, x), logits(ref, x))
    (chain,) = loaded.generate(["What is 2 + 3?"], max_new_tokens=4)
    assert len(chain.ids) > 0


def test_ensure_w8_caches_weight_only_int8_and_load_llm_uses_it(make_model, tokenizer, tmp_path, monkeypatch):
    src = tmp_path / "src"
    make_model("qwen2", seed=5, tie=True).to(torch.bfloat16).save_pretrained(src)
    tokenizer.save_pretrained(src)
    dest = ensure_w8(src, tmp_path / "w8" / "m")
    with safe_open(str(dest / "int8.safetensors"), framework="pt") as f:
        meta = f.metadata()
    assert json.loads(meta["kind"]) == "w8" and json.loads(meta["qlinear"]) == []
    stamp = (dest / "int8.safetensors").stat().st_mtime_ns
    assert ensure_w8(src, dest) == dest and (dest / "int8.safetensors").stat().st_mtime_ns == stamp

    monkeypatch.setenv("UHEAD_VIZ_CACHE", str(tmp_path / "cache"))
    loaded = llm_mod.load_llm(str(src), precision="w8")
    assert loaded.precision == "w8"
    assert list((tmp_path / "cache" / "w8-v1").iterdir())  # cached, not re-quantized at each start
    dense = make_model("qwen2", seed=5, tie=True).to(torch.bfloat16)
    names = linear_names(dense, torch.nn.Linear)
    assert linear_names(loaded.model, W8Linear) == names and linear_names(loaded.model, torch.nn.Linear) == []
    x = torch.tensor([loaded.prompt_ids("What is 2 + 3?")])
    # the cached model computes exactly what quantizing the bf16 weights in memory computes
    assert torch.equal(logits(loaded.model, x), logits(to_w8_(dense), x))
    (chain,) = loaded.generate(["What is 2 + 3?"], max_new_tokens=4)
    assert len(chain.ids) > 0
