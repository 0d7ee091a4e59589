"""Process reward models (PRMs) as step scorers: p_error = 1 - the PRM's step reward.

A PRM is a separate model trained to rate each step of a solution; it reads only the
problem and the step texts (``needs_internals = False``), never the scoring LLM's
internals. The families differ in two things only, so each family is one small file
(``prm_<family>.py``) that says

* how a problem and its steps become one token sequence, and at which positions the
  step rewards are read (``encode``), and
* which outputs at those positions give P(step is correct) (``correct_probs``);

everything else (finding the weights, loading them safely, batching, clamping, the
scorer glue) lives in the ``PRM`` base class below.

============ ===================================== ===============================================
family       examples                               reward
============ ===================================== ===============================================
``qwen``     Qwen/Qwen2.5-Math-PRM-7B               softmax over 2 labels at each ``<extra_0>``
``shepherd`` peiyi9979/math-shepherd-mistral-7b-prm P(``+``) vs P(``-``) at each ``ки`` tag
``rlhflow``  RLHFlow/Llama3.1-8B-PRM-Deepseek-Data  P(``+``) vs P(``-``) for each assistant turn
``skywork``  Skywork/Skywork-o1-Open-PRM-Qwen-2.5-1.5B sigmoid of a value head at each step end
``trl``      HuggingFaceH4/Qwen2.5-Math-1.5B-Instruct-PRM-0.2  token classification at separators
============ ===================================== ===============================================

**Choosing a PRM at run time.** A PRM is a scoring method named ``prm:<hub id or local
folder>``, or ``prm:<family>:<hub id or folder>`` to name the family explicitly. Without a
family it is detected from the name (``qwen2.5-math-prm``, ``shepherd``, ``rlhflow``,
``skywork``) and then from ``config.json`` (a ``...ProcessRewardModel`` architecture is
``qwen``, ``...PrmModel`` is ``skywork``, ``...ForTokenClassification`` is ``trl``);
``--prm-family`` (or ``family=`` in ``prm_method``) sets it for names without one.
``prm_method(name)`` registers the method under that name, after which ``get_scorer``
builds it like any other scorer.

**Weights.** Nothing here can score without the PRM's real weights: a hub id is fetched
with ``huggingface_hub`` (only safetensors, configs, tokenizer files and, if allowed,
remote code; pickled ``.bin`` weights are never read), a local folder is used as it is.
The unit tests run every family on tiny *random* models of the right architecture, which
checks the plumbing (formats, positions, loading) but says nothing about real scores.
``trust_remote_code`` is off unless the caller passes it (``--trust-remote-code``): the
official Qwen2.5-Math-PRM checkpoints need it, and loading them without it is refused
with a message saying so.

Models run in fp32 on a CPU and bf16 on a GPU; a 7B PRM in fp32 needs about 28 GB of RAM.
"""

from __future__ import annotations

import importlib
import json
import logging
import pkgutil
import re
from pathlib import Path
from typing import Any

import torch

from ..errors import InputError
from ..internals import Internals
from ..steps import Chain, step_body
from .base import SCORERS, InternalsCache, Scorer

logger = logging.getLogger(__name__)

PREFIX = "prm:"
FAMILIES: dict[str, type[PRM]] = {}
_LOADED: dict[tuple[str, str, bool], tuple[Any, Any]] = {}  # (family, folder, trust) -> (model, tokenizer)
_HUB_ID = re.compile(r"[\w.-]+/[\w.-]+")
_HUB_FILES = ["*.json", "*.safetensors", "*.model", "*.txt", "*.tiktoken", "*.jinja"]
# name patterns tried in order (lower-cased id or path); the first match wins
NAME_PATTERNS: list[tuple[str, str]] = [
    ("skywork", r"skywork"),
    ("rlhflow", r"rlhflow"),
    ("shepherd", r"shepherd"),
    ("qwen", r"qwen2\.5-math-prm|qwen2_5-math-prm"),
]


def family(name: str):
    """Class decorator: make a ``PRM`` subclass the adapter for family ``name``."""

    def deco(cls: type[PRM]) -> type[PRM]:
        cls.family = name
        FAMILIES[name] = cls
        return cls

    return deco


def load_families() -> dict[str, type[PRM]]:
    """Import every ``prm_*`` module of this package (each registers one family)."""
    pkg = importlib.import_module(__package__)
    for mod in pkgutil.iter_modules(pkg.__path__):
        if mod.name.startswith("prm_"):
            importlib.import_module(f"{__package__}.{mod.name}")
    return FAMILIES


# ----- finding and loading weights ------------------------------------------------------------
def resolve_folder(model_id: str, trust_remote_code: bool = False) -> Path:
    """A local folder as it is; a hub id downloaded (safetensors only) into the hub cache."""
    p = Path(model_id).expanduser()
    if p.is_dir():
        return p
    if not _HUB_ID.fullmatch(model_id):
        raise InputError(f"PRM '{model_id}' is neither a local folder nor a hub id like 'owner/name'.")
    try:
        from huggingface_hub import snapshot_download

        patterns = _HUB_FILES + (["*.py"] if trust_remote_code else [])
        return Path(snapshot_download(model_id, allow_patterns=patterns))
    except Exception as e:  # offline, unknown repo, gated repo...
        raise InputError(
            f"Could not fetch PRM '{model_id}' from the Hugging Face hub ({type(e).__name__}). Real PRM weights "
            "are needed for real scores: download them where the hub is reachable and pass the local folder."
        ) from e


def read_config(folder: Path) -> dict[str, Any]:
    f = folder / "config.json"
    if not f.is_file():
        raise InputError(f"{folder} has no config.json: not a saved model folder.")
    try:
        return json.loads(f.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise InputError(f"{f} does not parse: {e.msg}") from e


def detect_family(model_id: str, folder: Path | None = None) -> str:
    """The PRM family from the id's name, else from ``config.json``; InputError if unknown."""
    low = str(model_id).lower()
    for fam, pat in NAME_PATTERNS:
        if re.search(pat, low):
            return fam
    if folder is not None:
        cfg = read_config(folder)
        archs = [str(a) for a in cfg.get("architectures") or []]
        if any(a.endswith("ProcessRewardModel") for a in archs):
            return "qwen"
        if any(a.lower().endswith("prmmodel") or a == "PRM_MODEL" for a in archs):
            return "skywork"
        if any(a.endswith("ForTokenClassification") for a in archs):
            return "trl"
    raise InputError(
        f"Cannot tell which PRM family '{model_id}' is: name it with prm:<family>:<id> or --prm-family "
        f"({', '.join(sorted(load_families()))})."
    )


def torch_dtype() -> torch.dtype:
    return torch.bfloat16 if torch.cuda.is_available() else torch.float32


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_checked(auto_cls: Any, folder: Path, trust_remote_code: bool, native: bool = False) -> Any:
    """``auto_cls.from_pretrained`` from safetensors only.

    Remote code is refused unless allowed (``native=True`` loads transformers' own class for
    the config's model type and ignores any remote code); a checkpoint whose weights do not
    cover the model (layers that would be randomly initialized) is refused too.
    """
    cfg = read_config(folder)
    key = auto_cls.__name__
    if native:
        trust_remote_code = False
    elif key in (cfg.get("auto_map") or {}) and not trust_remote_code:
        raise InputError(
            f"The PRM in {folder} is defined by its own code ({cfg['auto_map'][key]}). Loading it runs that "
            "code: pass --trust-remote-code (trust_remote_code=True) if you trust its source."
        )
    if not any(folder.glob("*.safetensors")):
        raise InputError(f"{folder} has no .safetensors weights (pickled .bin weights are not loaded).")
    model, info = auto_cls.from_pretrained(
        str(folder),
        trust_remote_code=trust_remote_code,
        dtype=torch_dtype(),
        use_safetensors=True,
        output_loading_info=True,
    )
    missing = sorted(info.get("missing_keys") or [])
    if missing:
        raise InputError(
            f"The weights in {folder} do not fit {type(model).__name__}: {len(missing)} tensors are missing "
            f"(e.g. {missing[0]}). Is it a PRM of this family?"
        )
    return model.eval()


# ----- encoding helpers shared by the families ------------------------------------------------
def marked_positions(enc: Any, char_marks: list[int]) -> list[int]:
    """Token index holding each char offset (a fast tokenizer's encoding); ValueError if none does."""
    out = []
    for c in char_marks:
        t = enc.char_to_token(c)
        if t is None:
            raise ValueError(f"no token covers character {c} of the PRM input")
        out.append(int(t))
    return out


def one_line(text: str) -> str:
    """A step as a single line (for families whose separator is a newline)."""
    return " ".join(text.split())


class PRM(Scorer):
    """Base of the PRM adapters: loading, batching and the Scorer glue.

    Subclasses (one per family) implement ``load_model`` when the default auto class does
    not fit, ``encode`` and ``correct_probs``. Concrete scorers are made by ``prm_method``,
    which fixes ``model_id`` (and ``trust_remote_code``) on a subclass of the family class.
    """

    needs_internals = False
    family: str = ""
    model_id: str = ""
    trust_remote_code: bool = False
    batch_size: int = 4
    auto_class: str = "AutoModelForTokenClassification"

    def __init__(self, llm: Any = None, cache: InternalsCache | None = None) -> None:
        super().__init__(llm, cache)
        if not self.model_id:
            raise ValueError(f"{type(self).__name__} has no model_id: build it with prm_method('prm:<id>')")
        self.folder = resolve_folder(self.model_id, self.trust_remote_code)
        key = (self.family, str(self.folder.resolve()), self.trust_remote_code)
        if key not in _LOADED:
            from transformers import AutoTokenizer

            tok = AutoTokenizer.from_pretrained(str(self.folder), trust_remote_code=self.trust_remote_code)
            if not getattr(tok, "is_fast", False):
                raise InputError(f"The PRM tokenizer in {self.folder} is not a fast tokenizer (offsets are needed).")
            model = self.load_model(self.folder).to(device())
            _LOADED[key] = (model, tok)
            logger.info("Loaded PRM %s (%s family)", self.model_id, self.family)
        self.model, self.tokenizer = _LOADED[key]
        self.label = f"PRM {Path(self.model_id).name} ({self.family})"
        self.setup()

    # -- what a family implements --
    def load_model(self, folder: Path) -> Any:
        import transformers

        return load_checked(getattr(transformers, self.auto_class), folder, self.trust_remote_code)

    def setup(self) -> None:
        """Look up the family's special token ids once the tokenizer is loaded."""

    def encode(self, problem: str, steps: list[str]) -> tuple[list[int], list[int]]:
        """Token ids of the PRM input and one position per step where its reward is read."""
        raise NotImplementedError

    def correct_probs(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """P(correct) at every position: ``[B, T]`` from ``[B, T]`` ids and mask."""
        raise NotImplementedError

    # -- shared --
    def token_id(self, text: str) -> int:
        """The id of ``text`` as the tokenizer writes it on its own (the last piece if it splits)."""
        ids = self.tokenizer.encode(text, add_special_tokens=False)
        if not ids:
            raise InputError(f"The PRM tokenizer encodes {text!r} to nothing.")
        return int(ids[-1])

    def logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        out = self.model(input_ids=input_ids, attention_mask=attention_mask)
        x = out.logits if getattr(out, "logits", None) is not None else out[0]
        return x.float()

    def step_texts(self, chain: Chain) -> list[str]:
        return [step_body(s) for s in chain.steps]

    def _score_internals(self, internals: Internals | None, chain: Chain, first: int) -> list[float]:
        return self._score_chains([chain])[0][first:]

    @torch.inference_mode()
    def _score_chains(self, chains: list[Chain]) -> list[list[float]]:
        """Chains in padded batches of ``batch_size`` (one forward pass of the PRM per batch)."""
        items = []
        for c in chains:
            steps = self.step_texts(c)
            ids, pos = self.encode(c.problem, steps)
            if len(pos) != len(steps):
                raise ValueError(f"PRM input has {len(pos)} reward positions for {len(steps)} steps")
            items.append((ids, pos))
        pad = self.tokenizer.pad_token_id
        pad = pad if pad is not None else (self.tokenizer.eos_token_id or 0)
        dev = next(self.model.parameters()).device
        out: list[list[float]] = []
        for s in range(0, len(items), self.batch_size):
            batch = items[s : s + self.batch_size]
            t = max(len(ids) for ids, _ in batch)
            input_ids = torch.full((len(batch), t), pad, dtype=torch.long)
            mask = torch.zeros(len(batch), t, dtype=torch.long)
            for i, (ids, _) in enumerate(batch):  # right padding: real tokens keep positions 0..n-1
                input_ids[i, : len(ids)] = torch.tensor(ids)
                mask[i, : len(ids)] = 1
            probs = self.correct_probs(input_ids.to(dev), mask.to(dev)).float().cpu()
            for i, (_, pos) in enumerate(batch):
                out.append([1.0 - float(probs[i, p]) for p in pos])
        return out


# ----- choosing a PRM by name -----------------------------------------------------------------
def parse_method(name: str, default_family: str | None = None) -> tuple[str | None, str]:
    """``prm:<id>`` or ``prm:<family>:<id>`` -> (family or None, id)."""
    if not name.startswith(PREFIX) or len(name) == len(PREFIX):
        raise InputError(f"A PRM method is named prm:<hub id or folder> (or prm:<family>:<id>), not {name!r}.")
    rest = name[len(PREFIX) :]
    head, sep, tail = rest.partition(":")
    if sep and head in load_families():
        return head, tail
    return default_family, rest


def prm_method(name: str, family: str | None = None, trust_remote_code: bool = False) -> type[PRM]:
    """Register the scorer ``name`` (``prm:<id>`` / ``prm:<family>:<id>``) and return its class.

    The family is the one in the name, else ``family``, else detected (see the module
    docstring). The weights are loaded when the scorer is built (``get_scorer(name, ...)``).
    """
    fams = load_families()
    fam, model_id = parse_method(name, family)
    if fam is None:
        try:
            fam = detect_family(model_id)
        except InputError:
            fam = detect_family(model_id, resolve_folder(model_id, trust_remote_code))
    if fam not in fams:
        raise InputError(f"Unknown PRM family {fam!r}. Known: {', '.join(sorted(fams))}.")
    cls = type(
        f"PRM_{fam}",
        (fams[fam],),
        {"name": name, "model_id": model_id, "trust_remote_code": bool(trust_remote_code), "__module__": __name__},
    )
    SCORERS.register(cls)
    return cls
