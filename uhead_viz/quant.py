"""Int8 weights for CPU inference, cached as safetensors.

On CPUs without bf16 matrix units (AVX2 only), bf16 matmuls over many tokens run at
about 18 GFLOPS, fp32 at about 60, and PyTorch's dynamic int8 linear layers at about
190 GOPS; for one token at a time int8 also reads a quarter of fp32's bytes, which keeps
it the fastest for decoding on CPUs with bf16 units too (see ``precision.py``). So the
same int8 model serves generation and the teacher-forced capture pass, and the head
sees one set of numerics in training and in use. Every ``nn.Linear`` gets per-output-
channel int8 weights; embeddings, norms and attention stay in fp32.

Quantizing takes about 30 s, so the int8 weights, scales and zero points are stored
as plain tensors in safetensors (no pickle) and rebuilt in a few seconds.

Alignment: the tensors ``safetensors`` hands back are views into one file buffer and may
be only 8-byte aligned. AVX-512 builds of the int8 kernels use aligned vector loads and
fault on such pointers (AVX2 kernels tolerate them), so every tensor that reaches a native
kernel goes through :func:`aligned` first, which copies it into fresh 64-byte-aligned
memory when it is not already there.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

logger = logging.getLogger(__name__)

QLinear = torch.ao.nn.quantized.dynamic.Linear
ALIGNMENT = 64  # bytes: one AVX-512 register, and what PyTorch's CPU allocator guarantees


def is_aligned(t: torch.Tensor) -> bool:
    """Whether ``t`` is contiguous and starts on an ``ALIGNMENT``-byte boundary."""
    return t.is_contiguous() and t.data_ptr() % ALIGNMENT == 0


def aligned(t: torch.Tensor) -> torch.Tensor:
    """``t`` itself when it is safe for vector kernels, else a copy in fresh aligned memory."""
    if is_aligned(t):
        return t
    out = torch.empty(t.shape, dtype=t.dtype, device=t.device)
    out.copy_(t)
    if not is_aligned(out):  # the allocator's promise; fail loudly rather than crash natively
        raise RuntimeError(f"could not allocate {ALIGNMENT}-byte-aligned memory for a {tuple(t.shape)} tensor")
    return out


class W8Linear(torch.nn.Module):
    """Weight-only int8 linear layer: int8 weights with per-row scales, bf16 activations.

    Used where dynamic int8 hurts: the inputs of Qwen2's MLP down-projection and of the
    LM head have outlier channels that a per-tensor activation scale flattens. Measured on
    a GSM8K chain against fp32: every layer dynamic int8 gives KL 0.47 and 85 % top-1
    agreement; with these two weight-only, KL 0.009 and 100 % (bf16 alone: KL 0.002).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer("qweight", torch.zeros(out_features, in_features, dtype=torch.int8))
        self.register_buffer("scales", torch.ones(out_features, dtype=torch.bfloat16))
        self.register_buffer("bias", torch.zeros(out_features, dtype=torch.bfloat16) if bias else None)

    @classmethod
    def from_linear(cls, lin: torch.nn.Linear) -> W8Linear:
        w = lin.weight.detach().float()
        scale = (w.abs().amax(1) / 127).clamp(min=1e-8)
        m = cls(lin.in_features, lin.out_features, lin.bias is not None)
        m.qweight.copy_(torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8))
        m.scales.copy_(scale.to(torch.bfloat16))
        if lin.bias is not None:
            m.bias.copy_(lin.bias.detach().to(torch.bfloat16))
        return m

    def _realign(self) -> None:
        """Move buffers a loader left misaligned (a view into a file buffer) into aligned memory."""
        for name in ("qweight", "scales"):
            buf = getattr(self, name)
            if not is_aligned(buf):
                setattr(self, name, aligned(buf))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # No public op does weight-only int8 x bf16 at this speed; the private one is guarded
        # by alignment (see the module docstring), checked on every call because it costs
        # two pointer reads against a matmul.
        if not (is_aligned(self.qweight) and is_aligned(self.scales)):
            self._realign()
        shape = x.shape
        xb = x.reshape(-1, shape[-1]).to(torch.bfloat16).contiguous()
        y = torch._weight_int8pack_mm(aligned(xb), self.qweight, self.scales)
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*shape[:-1], self.out_features).to(x.dtype)
FORMAT = "uhead-viz-int8-v3"
W8_LAYERS = ("down_proj", "lm_head")  # weight-only int8: outlier inputs (see W8Linear)


def quantize_(model: torch.nn.Module) -> torch.nn.Module:
    """Quantize in place: MLP down-projections weight-only int8, every other Linear dynamic int8."""
    model.float()
    for mod in list(model.modules()):
        for child_name, child in list(mod.named_children()):
            if isinstance(child, torch.nn.Linear) and child_name in W8_LAYERS:
                setattr(mod, child_name, W8Linear.from_linear(child))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        qconfig = torch.ao.quantization.per_channel_dynamic_qconfig
        torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear: qconfig}, dtype=torch.qint8, inplace=True)
    return model


def to_w8_(model: torch.nn.Module) -> torch.nn.Module:
    """Weight-only int8 for every Linear, activations in bf16: bf16's accuracy, less memory traffic."""
    model.to(torch.bfloat16)
    for mod in list(model.modules()):
        for child_name, child in list(mod.named_children()):
            if isinstance(child, torch.nn.Linear):
                setattr(mod, child_name, W8Linear.from_linear(child))
    return model


def save_int8(model: torch.nn.Module, folder: str | Path, extra: dict[str, Any] | None = None) -> None:
    """Write a quantized model's tensors to ``folder/int8.safetensors`` atomically."""
    folder = Path(folder)
    tensors: dict[str, torch.Tensor] = {}
    qnames = []
    for name, mod in model.named_modules():
        if isinstance(mod, QLinear):
            w, b = mod._weight_bias()
            qnames.append(name)
            tensors[f"{name}.qweight"] = w.int_repr().contiguous()
            tensors[f"{name}.scales"] = w.q_per_channel_scales().contiguous()
            tensors[f"{name}.zero_points"] = w.q_per_channel_zero_points().contiguous()
            if b is not None:
                tensors[f"{name}.bias"] = b.detach().contiguous()
    qset = set(qnames)
    for name, p in list(model.named_parameters()) + list(model.named_buffers()):
        if any(name.startswith(q + ".") for q in qset) or not isinstance(p, torch.Tensor):
            continue
        tensors[name] = p.detach().contiguous()
    w8 = [n for n, m in model.named_modules() if isinstance(m, W8Linear)]
    meta = {"format": FORMAT, "qlinear": json.dumps(qnames), "w8linear": json.dumps(w8), "pad": ""}
    meta.update({k: json.dumps(v) for k, v in (extra or {}).items()})
    tmp = folder / "int8.safetensors.tmp"
    save_file(tensors, str(tmp), metadata=meta)
    start = data_start(tmp)
    if start % ALIGNMENT:  # pad the header so the tensors that follow start on aligned offsets
        meta["pad"] = " " * (ALIGNMENT - start % ALIGNMENT)
        save_file(tensors, str(tmp), metadata=meta)
    os.replace(tmp, folder / "int8.safetensors")


def data_start(path: str | Path) -> int:
    """Byte offset of a safetensors file's tensor data: 8 bytes of header length, then the header.

    The header holds the metadata (the source folder's path among it), so its length, and with
    it every tensor's alignment in the file, varies from one machine to the next; ``save_int8``
    pads it to a multiple of ``ALIGNMENT`` so that loads need no copies."""
    with open(path, "rb") as f:
        return 8 + int.from_bytes(f.read(8), "little")


def load_int8(folder: str | Path, config: Any) -> torch.nn.Module:
    """Rebuild a quantized causal LM from ``folder/int8.safetensors`` without re-quantizing."""
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM

    path = Path(folder) / "int8.safetensors"
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path} is not a {FORMAT} file")
    qnames = json.loads(meta["qlinear"])
    tensors = {k: aligned(v) for k, v in load_file(str(path)).items()}
    from .attention import NAME as ATTN

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32, attn_implementation=ATTN)
    for name in json.loads(meta.get("w8linear", "[]")):
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        old = getattr(parent, child)
        setattr(parent, child, W8Linear(old.in_features, old.out_features, f"{name}.bias" in tensors))
    def build(name: str) -> tuple[str, QLinear]:
        old = model.get_submodule(name)
        has_bias = f"{name}.bias" in tensors
        # built 1x1 then given the real weight, so fbgemm packs each weight once, not twice;
        # the private constructor wraps the stored int8 values as they are (the public
        # quantize_per_channel would need a float copy and is ~50x slower per layer)
        q = QLinear(1, 1, bias_=has_bias, dtype=torch.qint8)
        q.in_features, q.out_features = old.in_features, old.out_features
        w = torch._make_per_channel_quantized_tensor(
            tensors[f"{name}.qweight"], tensors[f"{name}.scales"], tensors[f"{name}.zero_points"], 0
        )
        q.set_weight_bias(w, tensors.get(f"{name}.bias"))
        return name, q

    # packing dominates load time and releases the GIL, so spread it over the cores
    with warnings.catch_warnings(), ThreadPoolExecutor(max_workers=max(1, os.cpu_count() or 1)) as pool:
        warnings.simplefilter("ignore")
        built = list(pool.map(build, sorted(qnames, key=lambda n: -tensors[f"{n}.qweight"].numel())))
    for name, q in built:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, q)
    qset = set(qnames)
    params = dict(model.named_parameters())
    for k, v in tensors.items():
        owner, _, leaf = k.rpartition(".")
        if owner in qset:
            continue
        mod = model.get_submodule(owner) if owner else model
        if k in params:
            setattr(mod, leaf, torch.nn.Parameter(v, requires_grad=False))
        else:
            mod.register_buffer(leaf, v)
    # a quantized lm_head (quantize_ unties it) must not be tied back to the embeddings
    if getattr(config, "tie_word_embeddings", False) and "lm_head.weight" not in tensors and "lm_head" not in qset:
        model.tie_weights()
    # non-persistent buffers (rotary frequencies) are not in the file: rebuild their modules
    for mname, mod in list(model.named_modules()):
        if any(b.is_meta for b in mod.buffers(recurse=False)):
            parent_name, _, child = mname.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, child, type(mod)(config=config))
    left = [n for n, p in list(model.named_parameters()) + list(model.named_buffers()) if p.is_meta]
    if left:
        raise ValueError(f"{path} lacks tensors for: {', '.join(left[:5])}")
    model.eval()
    return model


def ensure_int8(src: str | Path, dest: str | Path) -> Path:
    """Quantize the model in ``src`` once into ``dest`` (config, tokenizer and int8 tensors)."""
    return _ensure(src, dest, "int8")


def ensure_w8(src: str | Path, dest: str | Path) -> Path:
    """Weight-only int8 of every Linear (see :func:`to_w8_`), once, into ``dest``: loading it
    takes seconds, against about a minute to re-quantize the bf16 weights at every start."""
    return _ensure(src, dest, "w8")


def _ensure(src: str | Path, dest: str | Path, kind: str) -> Path:
    from transformers import AutoModelForCausalLM

    dest = Path(dest)
    if (dest / "int8.safetensors").is_file():
        return dest
    logger.info("Quantizing %s to %s once (about 30-60 s)", src, kind)
    dtype = torch.float32 if kind == "int8" else torch.bfloat16
    model = AutoModelForCausalLM.from_pretrained(str(src), dtype=dtype)
    if kind == "int8":
        quantize_(model)
    else:
        to_w8_(model)
    staging = dest.with_name(dest.name + ".staging")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for f in Path(src).iterdir():
        if f.is_file() and not f.name.endswith(".safetensors") and not f.name.startswith(".complete"):
            shutil.copy2(f, staging / f.name)
    save_int8(model, staging, {"source": str(src), "kind": kind})
    if dest.exists():
        shutil.rmtree(dest)
    os.replace(staging, dest)
    return dest
