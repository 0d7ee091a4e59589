"""The int8 kernels only ever see 64-byte-aligned memory, whatever the loader hands back.

AVX-512 builds of ``torch._weight_int8pack_mm`` fault on 8-byte-aligned weights, which is
what a view into a safetensors file buffer can be; AVX2 builds do not. These tests check
the alignment itself, so they fail on every CPU when it is lost, not only where it crashes.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from uhead_viz import quant
from uhead_viz.quant import ALIGNMENT, W8Linear, aligned, ensure_int8, is_aligned, load_int8, quantize_

ROOT = Path(__file__).resolve().parents[1]
X = torch.tensor([[5, 17, 42, 99, 3, 250, 7, 8, 12]])


def misaligned_copy(t: torch.Tensor, offset: int = 8) -> torch.Tensor:
    """A copy of ``t`` whose data starts ``offset`` bytes past a 64-byte boundary, as in a file buffer."""
    nbytes = t.numel() * t.element_size()
    raw = torch.empty(nbytes + 2 * ALIGNMENT, dtype=torch.uint8)
    start = (offset - raw.data_ptr()) % ALIGNMENT
    out = raw[start : start + nbytes].view(t.dtype).view(t.shape)
    out.copy_(t)
    assert out.data_ptr() % ALIGNMENT == offset
    return out


def test_aligned_copies_only_what_needs_it():
    t = torch.arange(300, dtype=torch.int8)
    assert is_aligned(t) and aligned(t) is t
    bad = misaligned_copy(t)
    assert not is_aligned(bad)
    good = aligned(bad)
    assert is_aligned(good) and torch.equal(good, t)
    strided = torch.arange(64, dtype=torch.float32).reshape(8, 8).t()
    assert not is_aligned(strided) and is_aligned(aligned(strided))


@pytest.fixture
def int8_cache(make_model, tokenizer, tmp_path) -> tuple[Path, torch.nn.Module]:
    """A tiny Qwen2 quantized into its safetensors cache, and the in-memory reference model."""
    src = tmp_path / "src"
    make_model("qwen2", seed=7).save_pretrained(src)
    tokenizer.save_pretrained(src)
    dest = ensure_int8(src, tmp_path / "int8")
    return dest, quantize_(make_model("qwen2", seed=7))


def test_int8_kernel_sees_aligned_tensors_from_a_misaligned_file(int8_cache, monkeypatch):
    folder, ref = int8_cache
    real_load = quant.load_file
    monkeypatch.setattr(quant, "load_file", lambda p: {k: misaligned_copy(v) for k, v in real_load(p).items()})
    seen: list[tuple[int, int, int]] = []
    real_mm = torch._weight_int8pack_mm

    def spy(x: torch.Tensor, w: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
        seen.append((x.data_ptr() % ALIGNMENT, w.data_ptr() % ALIGNMENT, scales.data_ptr() % ALIGNMENT))
        return real_mm(x, w, scales)

    model = load_int8(folder, ref.config)
    for name, t in list(model.named_parameters()) + list(model.named_buffers()):
        assert is_aligned(t), f"{name} is not {ALIGNMENT}-byte aligned after loading"
    monkeypatch.setattr(torch, "_weight_int8pack_mm", spy)
    with torch.no_grad():
        out = model(input_ids=X).logits
    assert seen, "the weight-only int8 kernel was not called"
    assert all(ptrs == (0, 0, 0) for ptrs in seen), f"misaligned kernel inputs: {sorted(set(seen))}"
    with torch.no_grad():
        assert torch.equal(out, ref(input_ids=X).logits)


def test_w8linear_realigns_buffers_assigned_after_construction(monkeypatch):
    lin = torch.nn.Linear(64, 32)
    m = W8Linear.from_linear(lin)
    m.qweight = misaligned_copy(m.qweight)
    m.scales = misaligned_copy(m.scales)
    seen = []
    real_mm = torch._weight_int8pack_mm
    monkeypatch.setattr(
        torch, "_weight_int8pack_mm", lambda x, w, s: seen.append(w.data_ptr() % ALIGNMENT) or real_mm(x, w, s)
    )
    x = torch.randn(3, 64)
    y = m(x)
    assert seen == [0] and is_aligned(m.qweight) and is_aligned(m.scales)
    assert torch.nn.functional.cosine_similarity(y.flatten(), lin(x).flatten(), dim=0) > 0.99


CHILD = textwrap.dedent(
    """
    import json, sys
    import torch
    from transformers import AutoConfig
    from uhead_viz import quant
    folder, offset = sys.argv[1], int(sys.argv[2])
    real_load = quant.load_file

    def shifted(t):  # the tensor's bytes at ``offset`` past a 64-byte boundary, as in some cache files
        n = t.numel() * t.element_size()
        raw = torch.empty(n + 128, dtype=torch.uint8)
        start = (offset - raw.data_ptr()) % 64
        out = raw[start : start + n].view(t.dtype).view(t.shape)
        out.copy_(t)
        return out

    quant.load_file = lambda p: {k: shifted(v) for k, v in real_load(p).items()}
    model = quant.load_int8(folder, AutoConfig.from_pretrained(folder))
    x = torch.tensor([[5, 17, 42, 99, 3, 250, 7, 8, 12]])
    with torch.no_grad():
        logits = model(input_ids=x).logits
        out = model.generate(x, max_new_tokens=6, do_sample=False, pad_token_id=0)
    print(json.dumps({"sum": float(logits.double().sum()), "ids": out[0].tolist()}))
    """
)


@pytest.mark.parametrize("offset", [0, 8])
def test_int8_forward_from_cache_in_a_subprocess(int8_cache, offset):
    """Loads the cached int8 model, its tensors read at ``offset`` bytes past alignment, and runs it
    in a fresh process: on AVX-512 the kernels fault on offset 8 unless the load realigns, and a
    native crash fails here with its stack, never a hang."""
    folder, ref = int8_cache
    try:
        proc = subprocess.run(
            [sys.executable, "-X", "faulthandler", "-c", CHILD, str(folder), str(offset)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=180,
        )
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"the int8 forward hung for {e.timeout} s; stderr tail:\n{(e.stderr or '')[-3000:]}")
    if proc.returncode != 0:
        pytest.fail(f"the int8 forward exited with status {proc.returncode}; stderr tail:\n{proc.stderr[-4000:]}")
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    with torch.no_grad():
        want = ref(input_ids=X).logits.double().sum().item()
    assert got["sum"] == pytest.approx(want, rel=1e-6, abs=1e-6)
    assert len(got["ids"]) > X.shape[1]


@pytest.mark.parametrize("source_len", [0, 1, 7, 8, 13, 31, 64, 65])
def test_saved_int8_file_puts_tensor_data_on_an_aligned_offset(make_model, tmp_path, source_len):
    """The header holds the source path, whose length varies by machine; the data must start aligned anyway."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    quant.save_int8(quantize_(make_model("qwen2", seed=7)), tmp_path, {"source": "x" * source_len})
    path = tmp_path / "int8.safetensors"
    assert quant.data_start(path) % ALIGNMENT == 0
    with safe_open(str(path), framework="pt") as f:
        assert json.loads(f.metadata()["source"]) == "x" * source_len
    loaded = load_file(str(path))
    # the tensors whose running offset stays aligned are aligned as stored: no copy at load
    assert sum(is_aligned(t) for t in loaded.values()) >= len(loaded) // 2
