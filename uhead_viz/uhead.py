"""The uncertainty head's checkpoints: save, load (never unpickling), and find the ones that fit a model.

The head itself (``UHead``, its config and batching helpers) lives in ``head_model`` and is
re-exported here, where callers have always found it.

Checkpoints are a folder with ``model.safetensors`` and ``config.json`` (never pickle):
the config names the base model and its weights fingerprint, so a head is never applied
to internals of a model it was not trained on.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from .errors import HeadError
from .features import feature_dim
from .head_model import (  # noqa: F401  (re-exported: the head's home is head_model)
    ATTN_BUDGET,
    UHead,
    UHeadConfig,
    base_info,
    bce_loss,
    body_mask,
    collate,
    spans_to_mask,
)
from .internals import CaptureSpec

logger = logging.getLogger(__name__)

FORMAT = "uhead-viz-head"
FORMAT_VERSION = 1
WEIGHTS = "model.safetensors"
CONFIG = "config.json"
PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".pkl", ".pickle", ".ckpt")


# ----- checkpoints -------------------------------------------------------------------------
def save_head(head: UHead, folder: str | Path) -> Path:
    """Write ``model.safetensors`` and ``config.json`` into ``folder`` (each replaced atomically)."""
    from safetensors.torch import save_file

    missing = [
        k for k in ("name", "fingerprint", "model_type", "n_layers", "n_heads", "hidden_size") if not head.base.get(k)
    ]
    if missing:
        raise ValueError(
            f"The head does not say which model it reads (no {', '.join(missing)}); build it with "
            "UHead.for_llm(llm) so the checkpoint can be matched to its model."
        )
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().float().cpu().contiguous() for k, v in head.state_dict().items()}
    tmp = folder / (WEIGHTS + ".tmp")
    save_file(tensors, str(tmp), metadata={"format": FORMAT})
    digest = _sha256(tmp)
    os.replace(tmp, folder / WEIGHTS)
    cfg = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "base_model": {k: head.base.get(k) for k in ("name", "fingerprint", "precision", "model_type", "architecture")},
        "features": {
            **head.spec.to_dict(),
            "n_layers": head.base.get("n_layers"),
            "n_heads": head.base.get("n_heads"),
            "hidden_size": head.base.get("hidden_size"),
            "n_features": head.config.n_features,
        },
        "head": asdict(head.config),
        "n_parameters": head.num_parameters(),
        "threshold": head.threshold,
        "training": head.training_summary,
        "metrics": head.metrics,
        "weights": {"file": WEIGHTS, "sha256": digest},
    }
    tmp = folder / (CONFIG + ".tmp")
    tmp.write_text(json.dumps(cfg, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, folder / CONFIG)
    return folder


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def _norm_name(name: Any) -> str:
    return str(name or "").strip().rstrip("/").split("/")[-1].lower()


def read_config(folder: str | Path) -> tuple[Path, dict[str, Any]]:
    """Locate a head folder and parse its config.json; HeadError if it is not a head checkpoint."""
    p = Path(folder).expanduser()
    if p.is_file():
        if p.suffix.lower() in PICKLE_SUFFIXES:
            raise HeadError(
                f"{p} is a pickle file ({p.suffix}); heads load only from safetensors, because unpickling "
                "runs arbitrary code. Give the folder that holds model.safetensors and config.json."
            )
        p = p.parent
    if not p.is_dir():
        raise HeadError(f"No head checkpoint at {p}: the folder does not exist.")
    if not (p / CONFIG).is_file():
        pickles = sorted(x.name for x in p.iterdir() if x.suffix.lower() in PICKLE_SUFFIXES)
        why = (
            f"it holds only pickle files ({', '.join(pickles)}), which are never loaded because unpickling runs code"
            if pickles
            else "it has no config.json"
        )
        raise HeadError(f"{p} is not a head checkpoint: {why}. A head folder has model.safetensors and config.json.")
    try:
        cfg = json.loads((p / CONFIG).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise HeadError(f"{p / CONFIG} is not valid JSON ({e}); the checkpoint is damaged.") from e
    if not isinstance(cfg, dict) or cfg.get("format") != FORMAT:
        raise HeadError(f"{p / CONFIG} is not a uhead_viz head config (its 'format' is not '{FORMAT}').")
    if int(cfg.get("format_version", 0)) > FORMAT_VERSION:
        raise HeadError(
            f"{p} was written by a newer uhead_viz (head format {cfg.get('format_version')}, this one reads "
            f"up to {FORMAT_VERSION}). Upgrade uhead_viz to use it."
        )
    for key in ("base_model", "features", "head"):
        if not isinstance(cfg.get(key), dict):
            raise HeadError(f"{p / CONFIG} lacks its '{key}' section; the checkpoint is damaged.")
    return p, cfg


def check_compatible(
    cfg: dict[str, Any], llm: Any, allow_other_build: bool = False, where: str = "", warn: bool = True
) -> None:
    """Raise HeadError unless the head's features can come from ``llm``; warn on a tolerated mismatch."""
    have = base_info(llm)
    want = cfg["base_model"]
    feats = cfg["features"]
    label = f"The head {where} ".replace("  ", " ") if where else "The head "
    shape = [(k, feats.get(k), have[k]) for k in ("n_layers", "n_heads", "hidden_size") if feats.get(k) != have[k]]
    if want.get("model_type") and want["model_type"] != have["model_type"]:
        shape.insert(0, ("architecture", want["model_type"], have["model_type"]))
    if shape:
        diffs = ", ".join(f"{k} {a} vs {b}" for k, a, b in shape)
        raise HeadError(
            f"{label}was trained on {want.get('name')} and cannot read {have['name']}: the models differ "
            f"({diffs}), so its features would mean something else. Train a head for {have['name']} or load "
            "the model it was trained on (--model)."
        )
    spec = CaptureSpec.from_dict(feats)
    if int(cfg["head"].get("n_features", -1)) != feature_dim(
        have["n_layers"], have["n_heads"], spec, have["hidden_size"]
    ):
        raise HeadError(f"{label}has a feature recipe that does not add up to its input size; the config is damaged.")
    if any(not 0 <= li < have["n_layers"] for li in spec.hidden_layers):
        raise HeadError(f"{label}reads hidden layers {list(spec.hidden_layers)}, which {have['name']} does not have.")
    if want.get("fingerprint") == have["fingerprint"]:
        if warn and want.get("precision") and want["precision"] != have["precision"]:
            logger.warning(
                "%strained on %s internals; this model runs at %s, so scores may shift slightly.",
                label,
                want["precision"],
                have["precision"],
            )
        return
    same_name = _norm_name(want.get("name")) == _norm_name(have["name"])
    if not same_name:
        raise HeadError(
            f"{label}was trained on {want.get('name')} (weights {want.get('fingerprint')}), not on "
            f"{have['name']} (weights {have['fingerprint']}). Load the model it was trained on, or train "
            f"a head for {have['name']}."
        )
    if not allow_other_build:
        raise HeadError(
            f"{label}was trained on another build of {have['name']}: weights fingerprint "
            f"{want.get('fingerprint')}, this model's is {have['fingerprint']}. Its scores would not be "
            "calibrated for these weights. Pass --allow-other-build (allow_other_build=True) to use it anyway."
        )
    if warn:
        logger.warning(
            "%sis for another build of %s (fingerprint %s, this one %s); using it as asked, scores may be off.",
            label,
            have["name"],
            want.get("fingerprint"),
            have["fingerprint"],
        )


def _read_weights(path: Path, expected_sha: str | None) -> dict[str, torch.Tensor]:
    """Load a safetensors file after checking it is one (not pickle) and is intact."""
    from safetensors.torch import load_file

    if path.suffix.lower() != ".safetensors":
        raise HeadError(f"{path.name} is not a .safetensors file; heads load only from safetensors.")
    if not path.is_file():
        pickles = sorted(x.name for x in path.parent.iterdir() if x.suffix.lower() in PICKLE_SUFFIXES)
        extra = f" (found pickle files {', '.join(pickles)}, which are never loaded)" if pickles else ""
        raise HeadError(f"The head folder {path.parent} has no {path.name}{extra}.")
    head = path.read_bytes()[:16]
    size = path.stat().st_size
    n = int.from_bytes(head[:8], "little") if len(head) >= 8 else -1
    valid = 0 < n and 8 + n <= size and head[8:9] == b"{"
    # a pickle starts 0x80 <protocol>, a torch.save zip "PK"; a safetensors header length can
    # start with 0x80 too, so the signature only counts when the header is not valid safetensors
    if not valid and (head[:1] == b"\x80" or head[:4] == b"PK\x03\x04"):
        raise HeadError(
            f"{path} is a pickle / torch.save file with a .safetensors name. It was not loaded: unpickling "
            "runs arbitrary code. Re-save the head with save_head()."
        )
    if not valid:
        raise HeadError(f"{path} is not a valid safetensors file (bad header); the checkpoint is corrupt.")
    if expected_sha and _sha256(path) != expected_sha:
        raise HeadError(
            f"{path} does not match the sha256 recorded in config.json; the weights are corrupt or were "
            "replaced. Re-copy or re-train the head."
        )
    try:
        return load_file(str(path))
    except Exception as e:  # safetensors raises its own error types for damaged files
        raise HeadError(f"{path} could not be read as safetensors ({e}); the checkpoint is corrupt.") from e


def load_head(folder: str | Path, llm: Any = None, allow_other_build: bool = False) -> UHead:
    """Load a head saved by ``save_head``, refusing it if it cannot read ``llm``'s internals.

    Checks, in order: a real head folder and config; the base model's architecture,
    shape and feature recipe; the weights fingerprint (another build only with
    ``allow_other_build``); a genuine, intact safetensors file; exactly the expected
    tensor names and shapes. Never unpickles anything.
    """
    p, cfg = read_config(folder)
    if llm is not None:
        check_compatible(cfg, llm, allow_other_build, where=f"at {p}")
    wfile = str(cfg.get("weights", {}).get("file", WEIGHTS))
    if Path(wfile).name != wfile:
        raise HeadError(f"{p / CONFIG} names weights outside its folder ({wfile!r}); refusing it.")
    tensors = _read_weights(p / wfile, cfg.get("weights", {}).get("sha256"))
    try:
        config = UHeadConfig(**cfg["head"])
        spec = CaptureSpec.from_dict(cfg["features"])
    except (TypeError, ValueError, KeyError) as e:
        raise HeadError(f"{p / CONFIG} has an invalid head or feature section ({e}).") from e
    base = {**cfg["base_model"], **{k: cfg["features"].get(k) for k in ("n_layers", "n_heads", "hidden_size")}}
    head = UHead(config, spec=spec, base=base, threshold=float(cfg.get("threshold", 0.5)))
    head.training_summary = dict(cfg.get("training") or {})
    head.metrics = dict(cfg.get("metrics") or {})
    expected = head.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unknown = sorted(set(tensors) - set(expected))
    if missing or unknown:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
        if unknown:
            parts.append(f"unknown {', '.join(unknown[:5])}{' ...' if len(unknown) > 5 else ''}")
        raise HeadError(f"{p / wfile} does not fit the head its config describes: {'; '.join(parts)} tensors.")
    bad = [k for k, v in expected.items() if tuple(tensors[k].shape) != tuple(v.shape)]
    if bad:
        raise HeadError(
            f"{p / wfile} has tensors of the wrong shape for its config ({', '.join(bad[:5])}); "
            "the checkpoint is damaged."
        )
    head.load_state_dict({k: v.float() for k, v in tensors.items()}, strict=True)
    head.eval()
    return head


@dataclass
class HeadCandidate:
    """A head found in a checkpoints folder, and whether it fits the loaded model."""

    path: Path
    config: dict[str, Any] = field(default_factory=dict)
    reason: str | None = None  # why it does not fit, or None


def find_heads(root: str | Path, llm: Any, allow_other_build: bool = False) -> list[HeadCandidate]:
    """Every ``root/*/config.json`` head, with why it does or does not fit ``llm``.

    Fitting heads come first, newest first."""
    root = Path(root)
    out = []
    if not root.is_dir():
        return out
    for cfg_path in sorted(root.glob(f"*/{CONFIG}")):
        try:
            p, cfg = read_config(cfg_path.parent)
            check_compatible(cfg, llm, allow_other_build, warn=False)
            out.append(HeadCandidate(p, cfg))
        except HeadError as e:
            out.append(HeadCandidate(cfg_path.parent, {}, str(e)))
    fp = llm.fingerprint

    def rank(c: HeadCandidate) -> tuple[bool, bool, float]:
        other_build = c.config.get("base_model", {}).get("fingerprint") != fp
        return (c.reason is not None, other_build, -c.path.joinpath(CONFIG).stat().st_mtime)

    out.sort(key=rank)
    return out
