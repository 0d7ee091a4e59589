"""Load a causal LM, build the reasoning prompt, and generate step-formatted chains.

One loader serves three sources: a packaged offline model (the default), a local
folder, or a hub id. The decoding loop and its stop rules live in :mod:`uhead_viz.generate`;
``decode``, ``StopRules`` and ``pad_tails`` are re-exported here for older imports.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from . import attention, settings
from .errors import InputError, PackError
from .generate import StopRules, _common_prefix, decode, pad_tails  # noqa: F401 (StopRules: re-export)
from .packs import DEFAULT_PACK, PACKS, cache_dir, ensure_converted
from .precision import PRECISIONS, default_precision
from .steps import Chain, chain_from_ids, clean_text

logger = logging.getLogger(__name__)

SYSTEM_PROMPT = (
    "You are a careful math tutor. Solve the problem step by step, one calculation per line, "
    "each line starting 'Step k:'. Write every calculation out with its result. Plain text only. "
    "Finish with the final number on its own line as 'Answer: <number>'."
)
# Two worked examples (GSM8K train) as earlier chat turns: small chat models follow a
# shown format far more reliably than a described one (no plans, no LaTeX, an Answer line).
EXAMPLES = [
    (
        "Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes of babysitting. "
        "How much did she earn?",
        "Step 1: Weng earns 12 / 60 = $0.2 per minute.\n"
        "Step 2: For 50 minutes she earns 0.2 * 50 = $10.\n"
        "Answer: 10",
    ),
    (
        "Betty is saving money for a new wallet which costs $100. Betty has only half of the money she needs. "
        "Her parents decided to give her $15 for that purpose, and her grandparents twice as much as her "
        "parents. How much more money does Betty need to buy the wallet?",
        "Step 1: Betty has 100 / 2 = $50.\n"
        "Step 2: Her grandparents give her 15 * 2 = $30.\n"
        "Step 3: In total she now has 50 + 15 + 30 = $95.\n"
        "Step 4: She still needs 100 - 95 = $5.\n"
        "Answer: 5",
    ),
]
# The assistant turn is opened with this text, so the model starts in the step format
# instead of a preamble; it counts as part of the chain (the first step's marker).
ASSISTANT_PREFIX = "Step 1:"
_SENTINEL = "\u2063UHEAD_QUESTION\u2063"
MAX_QUESTION_CHARS = 8000


def model_env_default() -> str:
    """The model to use when none is named: ``UHEAD_VIZ_MODEL`` or the packaged default (a Space's choice too)."""
    return settings.model() or DEFAULT_PACK


@dataclass
class LLM:
    """A loaded model with its tokenizer and a short identity used to match heads to models."""

    model: Any
    tokenizer: Any
    name: str
    source: str
    fingerprint: str
    eos_ids: set[int] = field(default_factory=set)
    precision: str = "bf16"
    _template_prefix: list[int] = field(default_factory=list, repr=False)
    _prefix_kv: tuple[tuple[int, ...], Any] | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def n_layers(self) -> int:
        return int(self.model.config.num_hidden_layers)

    @property
    def n_heads(self) -> int:
        return int(self.model.config.num_attention_heads)

    @property
    def context(self) -> int | None:
        """How many positions the model was trained to read (``max_position_embeddings``), if it says.

        Past it, rotary positions the model never saw give meaningless text and scores, so
        generation stops there and longer chains are refused.
        """
        n = getattr(getattr(self.model, "config", None), "max_position_embeddings", None)
        return int(n) if isinstance(n, int) and n > 0 else None

    # ----- prompt -----------------------------------------------------------------
    def prompt_ids(self, question: str, system_prompt: str = SYSTEM_PROMPT) -> list[int]:
        """Chat-template the question, treating anything the user typed as plain text.

        The template is rendered around a sentinel and the question is tokenized on its own
        with special tokens split, so a typed ``<|im_start|>`` can never open a new turn.
        """
        question = clean_question(question)
        messages = []
        for q, a in EXAMPLES:
            messages += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
        messages.append({"role": "user", "content": _SENTINEL})
        if system_prompt:
            messages.insert(0, {"role": "system", "content": system_prompt})
        rendered = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        pre, post = rendered.split(_SENTINEL)
        enc = self.tokenizer
        pre_ids = enc(pre, add_special_tokens=False)["input_ids"]
        if system_prompt == SYSTEM_PROMPT:
            self._template_prefix = list(pre_ids)
        return (
            pre_ids
            + enc(question, add_special_tokens=False, split_special_tokens=True)["input_ids"]
            + enc(post, add_special_tokens=False)["input_ids"]
        )

    @torch.inference_mode()
    def prefill(self, prompts: list[list[int]], pad: int) -> tuple[Any, torch.Tensor, torch.Tensor]:
        """Run the prompts, reusing the KV cache of the shared template prefix.

        The system prompt and worked examples are the same for every question, so their KV
        cache is computed once and copied into each batch. Rows are laid out as
        ``[shared prefix][padding][own tail]``; the attention mask hides the padding and
        position ids skip it, so each row sees exactly its own prompt.
        Returns (cache, last-position logits [B, V], attention mask [B, total]).
        """
        device = next(self.model.parameters()).device
        b = len(prompts)
        shared = _common_prefix([self._template_prefix] + prompts) if self._template_prefix else 0
        shared = min(shared, min(len(p) for p in prompts) - 1)
        past = None
        if shared >= 8:
            key = tuple(prompts[0][:shared])
            with self._lock:
                if self._prefix_kv is None or self._prefix_kv[0] != key:
                    prefix_ids = torch.tensor([list(key)], device=device)
                    res = self.model(input_ids=prefix_ids, use_cache=True, logits_to_keep=1)
                    self._prefix_kv = (key, res.past_key_values)
                past = copy.deepcopy(self._prefix_kv[1])
            if b > 1:
                past.batch_repeat_interleave(b)
        else:
            shared = 0
        ids, mask, pos = pad_tails([p[shared:] for p in prompts], shared, pad, device)
        res = self.model(
            input_ids=ids, attention_mask=mask, position_ids=pos, past_key_values=past, use_cache=True,
            logits_to_keep=1,
        )
        return res.past_key_values, res.logits[:, -1, :], mask

    # ----- generation ---------------------------------------------------------------
    def generate(
        self,
        questions: list[str],
        max_new_tokens: int = 320,
        temperature: float = 0.0,
        seed: int = 0,
        on_token: Callable[[int, str], None] | None = None,
        progress: bool = False,
    ) -> list[Chain]:
        """Generate one chain per question in a single batch.

        ``max_new_tokens`` is cut (with a warning) where it would run past the model's
        context; a question that leaves no room at all is refused with InputError.
        """
        prompts = [self.prompt_ids(q) for q in questions]
        prefix = self.tokenizer(ASSISTANT_PREFIX, add_special_tokens=False)["input_ids"]
        max_new_tokens = self.room(max(len(p) for p in prompts) + len(prefix), max_new_tokens)
        results: list[Chain | None] = [None] * len(questions)
        for i, ids, reason in decode(
            self, prompts, max_new_tokens, temperature, seed, on_token, progress, prefix=prefix
        ):
            results[i] = chain_from_ids(
                self.tokenizer, questions[i], prompts[i], ids, stop_reason=reason, model=self.name
            )
        return [r for r in results if r is not None]

    def room(self, n_prompt: int, max_new_tokens: int) -> int:
        """``max_new_tokens``, cut to what fits after ``n_prompt`` tokens in the model's context."""
        ctx = self.context
        if ctx is None or n_prompt + max_new_tokens <= ctx:
            return max_new_tokens
        if n_prompt >= ctx:
            raise InputError(
                f"The question is {n_prompt:,} tokens long with the prompt; {self.name} reads at most {ctx:,}. "
                "Shorten it."
            )
        logger.warning(
            "max_new_tokens %d would run past %s's context of %d tokens (the prompt takes %d); writing at most %d",
            max_new_tokens, self.name, ctx, n_prompt, ctx - n_prompt,
        )
        return ctx - n_prompt


def clean_question(question: str) -> str:
    """Refuse empty or over-long questions; drop NUL and other control characters and
    replace lone surrogates (which the tokenizer refuses)."""
    if not isinstance(question, str):
        raise InputError("The question must be text.")
    q = clean_text(question).strip()
    if not q:
        raise InputError("The question is empty. Type a math problem to solve.")
    if len(q) > MAX_QUESTION_CHARS:
        raise InputError(
            f"The question is {len(q):,} characters long; the limit is {MAX_QUESTION_CHARS:,}. Shorten it."
        )
    return q


# ----- loading -----------------------------------------------------------------------------
def _fingerprint(model: Any) -> str:
    """A short identity of the base weights, the same at every precision.

    Hashes the config's shape and samples of the input embedding and the final norm, which
    stay unquantized, so an int8 and a bf16 load of one checkpoint agree.
    """
    h = hashlib.sha256()
    cfg = model.config
    h.update(f"{cfg.model_type}:{cfg.num_hidden_layers}:{cfg.hidden_size}:{cfg.vocab_size}".encode())
    emb = model.get_input_embeddings().weight.detach()
    rows = torch.linspace(0, emb.shape[0] - 1, 64).long()
    h.update(emb[rows, :64].float().cpu().numpy().tobytes())
    norm = getattr(model.get_decoder(), "norm", None)
    if norm is not None and getattr(norm, "weight", None) is not None:
        h.update(norm.weight.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def load_llm(
    name: str | None = None,
    precision: str | None = None,
    trust_remote_code: bool = False,
    device: str | None = None,
) -> LLM:
    """Load a causal LM by packaged name, local folder or hub id, with eager attention.

    Eager attention is required: the features read attention weights, which SDPA does
    not return (or returns wrong). ``precision`` is int8 (CPU, cached once), w8, bf16 or fp32;
    without one, :mod:`uhead_viz.precision` picks it for this machine.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    name = name or model_env_default()
    try:
        precision = precision or default_precision()
    except ValueError as e:  # a bad UHEAD_VIZ_PRECISION
        raise PackError(str(e)) from e
    if precision not in PRECISIONS:
        raise PackError(f"Unknown precision '{precision}': use int8, w8, bf16 or fp32.")
    t0 = time.time()
    if name in PACKS:
        path = str(ensure_converted(name))
        display = PACKS[name].display_name
        source = f"pack:{name}"
    elif Path(name).expanduser().is_dir():
        path = str(Path(name).expanduser())
        display = Path(path).name
        source = f"folder:{path}"
    elif re.fullmatch(r"[\w.-]+/[\w.-]+", name):
        path = name
        display = name.split("/")[-1]
        source = f"hub:{name}"
    else:
        raise PackError(
            f"Unknown model '{name}': not a packaged model ({', '.join(PACKS)}), a local folder, "
            "or a hub id like 'Qwen/Qwen2.5-1.5B-Instruct'."
        )
    try:
        tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
        if precision in ("int8", "w8"):  # quantized once, cached as safetensors
            from .quant import ensure_int8, ensure_w8, load_int8

            if source.startswith("hub:"):
                from huggingface_hub import snapshot_download

                path = snapshot_download(path)
            if precision == "int8":
                qdir = ensure_int8(path, cache_dir() / "int8-v4" / _safe_name(path))
            else:
                qdir = ensure_w8(path, cache_dir() / "w8-v1" / _safe_name(path))
            model = load_int8(qdir, AutoConfig.from_pretrained(qdir, trust_remote_code=trust_remote_code))
        else:
            dtype = torch.float32 if precision == "fp32" else torch.bfloat16
            model = AutoModelForCausalLM.from_pretrained(
                path, dtype=dtype, attn_implementation=attention.NAME, trust_remote_code=trust_remote_code
            )
    except OSError as e:
        if source.startswith("hub:"):
            raise PackError(
                f"Could not load '{name}' from the Hugging Face hub ({e.__class__.__name__}). Offline, use a "
                f"packaged model ({', '.join(PACKS)}) or a local folder."
            ) from e
        raise
    model.eval()
    if not device and precision not in ("int8", "w8"):  # the int8 kernels are CPU-only
        device = settings.device() or ("cuda" if torch.cuda.is_available() else None)
    if device:
        model.to(device)
    eos = set()
    for x in (model.generation_config.eos_token_id, tok.eos_token_id):
        if isinstance(x, int):
            eos.add(x)
        elif isinstance(x, list):
            eos.update(x)
    for special in ("<|im_end|>", "<|endoftext|>", "<|eot_id|>"):
        tid = tok.convert_tokens_to_ids(special)
        if isinstance(tid, int) and tid != tok.unk_token_id and tid is not None:
            eos.add(tid)
    llm = LLM(
        model=model,
        tokenizer=tok,
        name=display,
        source=source,
        fingerprint=_fingerprint(model),
        eos_ids=eos,
        precision=precision,
    )
    logger.info("Loaded %s (%s) in %.1f s", display, source, time.time() - t0)
    return llm


def _safe_name(path: str) -> str:
    """A cache folder name for a model path: readable tail plus a hash of the full path."""
    tail = re.sub(r"[^\w.-]+", "_", Path(path).name)[:60]
    return f"{tail}-{hashlib.sha256(str(Path(path).resolve()).encode()).hexdigest()[:10]}"


def last_number(answer: str | None) -> float | None:
    """The last number literal in an answer string (commas, $ and % dropped; ``a/b`` divided), or None.

    Plain text only, for scoring a model's final answers against GSM8K's whole numbers;
    ``labels.checks.answer_value`` also evaluates expressions (``\\frac{1}{2}``, ``x = 3 + 4``).
    """
    if not answer:
        return None
    s = answer.replace(",", "").replace("$", "")
    nums = re.findall(r"-?\d+(?:\.\d+)?(?:/\d+)?", s)
    if not nums:
        return None
    x = nums[-1]
    try:
        if "/" in x:
            a, b = x.split("/")
            return float(a) / float(b)
        return float(x)
    except (ValueError, ZeroDivisionError):
        return None
