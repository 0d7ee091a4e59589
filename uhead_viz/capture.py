"""Capture a forward pass's internals once, for every consumer (features, baselines, plots).

Hooks on each layer's attention module keep only what the features need: for every
query token, its attention weights to the previous ``window`` tokens, per head. The
full T x T matrices never leave the attention module, and the chain is fed in chunks
on top of the prompt's KV cache, so memory grows linearly with the chain's length.
Hooks are removed on exit, as in TransformerLens's ``run_with_cache``.

Every hook on the model goes on and comes off here, through one ``Hooks`` context: the
teacher-forced pass's (``Recorder``, ``teacher_force``) and the live capture's, which keeps
the same rows while ``LLM.generate`` writes a chain (``LiveCapture``).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .internals import CaptureSpec, Internals, covers, restrict
from .steps import Chain

logger = logging.getLogger(__name__)


def attention_modules(model: Any) -> list[torch.nn.Module]:
    """The self-attention module of each decoder layer, for Llama/Qwen2/Mistral-style models."""
    base = model.get_decoder() if hasattr(model, "get_decoder") else model.model
    layers = getattr(base, "layers", None)
    if layers is None:
        raise ValueError(f"Cannot find decoder layers in {type(model).__name__}")
    return [layer.self_attn for layer in layers]


def decoder_layers(model: Any) -> list[torch.nn.Module]:
    base = model.get_decoder() if hasattr(model, "get_decoder") else model.model
    return list(base.layers)


def lookback(weights: torch.Tensor, window: int) -> torch.Tensor:
    """Band of an attention matrix: for each query, weights on the ``window`` previous keys.

    ``weights`` is [B, H, q, K] where the q queries are the last q of K cache slots.
    Returns [B, q, H, window], zero where the key would fall before slot 0.
    """
    b, h, q, k = weights.shape
    qpos = torch.arange(k - q, k, device=weights.device)
    offs = torch.arange(1, window + 1, device=weights.device)
    idx = qpos[:, None] - offs[None, :]  # [q, window]
    valid = idx >= 0
    idx = idx.clamp(min=0)
    band = torch.gather(weights, 3, idx[None, None].expand(b, h, q, window))
    band = band * valid[None, None].to(band.dtype)
    return band.permute(0, 2, 1, 3)


@dataclass(frozen=True)
class HookPoint:
    """One forward hook to put on a module: before its forward (``pre``) or after it."""

    module: torch.nn.Module
    hook: Callable[..., Any]
    pre: bool = False
    with_kwargs: bool = False


class Hooks:
    """Forward hooks registered together on entry and all removed on exit, also when the pass raises.

    As TransformerLens's ``run_with_cache`` does, a model is never left hooked: every hook
    a capture needs (teacher-forced or live) goes through here.
    """

    def __init__(self, points: Sequence[HookPoint]) -> None:
        self.points = list(points)
        self.handles: list[Any] = []

    def __enter__(self) -> Hooks:
        try:
            for p in self.points:
                reg = p.module.register_forward_pre_hook if p.pre else p.module.register_forward_hook
                self.handles.append(reg(p.hook, with_kwargs=p.with_kwargs))
        except BaseException:
            self.remove()
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        self.remove()

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles.clear()


class Recorder:
    """Forward hooks that keep look-back attention (and chosen hidden states) for each call.

    ``extra`` hook points (a live capture's) are registered and removed with these, in one
    ``Hooks`` context.
    """

    def __init__(self, model: Any, spec: CaptureSpec, extra: Sequence[HookPoint] = ()) -> None:
        self.model = model
        self.spec = spec
        self.extra = list(extra)
        self.attn: list[list[torch.Tensor]] = []  # per call: per layer [B, q, H, w]
        self.hidden: dict[int, list[torch.Tensor]] = {i: [] for i in spec.hidden_layers}
        self._current: list[torch.Tensor | None] = []
        self._hooks = Hooks([])
        self.enabled = True

    @property
    def handles(self) -> list[Any]:
        """The hooks on the model now (none outside the ``with`` block)."""
        return self._hooks.handles

    def points(self) -> list[HookPoint]:
        mods = attention_modules(self.model)
        self._current = [None] * len(mods)
        pts = [HookPoint(m, self._attn_hook(li)) for li, m in enumerate(mods)]
        layers = decoder_layers(self.model)
        pts += [HookPoint(layers[li], self._hidden_hook(li)) for li in self.spec.hidden_layers]
        return pts + self.extra

    def __enter__(self) -> Recorder:
        self._hooks = Hooks(self.points())
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._hooks.__exit__(*exc)

    def _attn_hook(self, li: int):
        def hook(module: Any, args: Any, output: Any) -> Any:
            if not self.enabled:
                return None
            weights = output[1] if isinstance(output, tuple) and len(output) > 1 else None
            if weights is None:
                raise RuntimeError(
                    "The attention module returned no weights. Load the model with attn_implementation='eager'."
                )
            self._current[li] = lookback(weights.detach(), self.spec.window).float()
            if li == len(self._current) - 1:
                self.attn.append([t for t in self._current])  # type: ignore[misc]
                self._current = [None] * len(self._current)
            return (output[0], None) + tuple(output[2:])

        return hook

    def _hidden_hook(self, li: int):
        def hook(module: Any, args: Any, output: Any) -> None:
            if self.enabled:
                hs = output[0] if isinstance(output, tuple) else output
                self.hidden[li].append(hs.detach().float())

        return hook

    def stacked_attn(self) -> torch.Tensor:
        """All recorded calls as [B, T, L, H, w]."""
        return torch.cat([torch.stack(call, dim=2) for call in self.attn], dim=1)


def distribution_features(logits: torch.Tensor, top_k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Log-probabilities, top-k probabilities and entropy of the distributions in [..., V] logits.

    The one place the probability features are computed: teacher forcing reads the token
    it feeds from these at once (``prob_features``), a live capture keeps them until the
    next decoding call says which token was chosen.
    """
    logp = torch.log_softmax(logits.float(), dim=-1)
    p = logp.exp()
    return logp, p.topk(top_k, dim=-1).values, -(p * logp).sum(-1)


def prob_features(logits: torch.Tensor, targets: torch.Tensor, top_k: int) -> tuple[torch.Tensor, ...]:
    """Top-k probabilities, log-prob of the actual token, and entropy, from [..., V] logits."""
    logp, topk, ent = distribution_features(logits, top_k)
    tok = logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return topk, tok, ent


def _common(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def _crop(past: Any, keep: int) -> None:
    """Drop cache slots beyond the first ``keep`` (transformers 5 crops by a negative count)."""
    extra = past.get_seq_length() - keep
    if extra > 0:
        past.crop(-extra)


@dataclass
class _Trunk:
    prompt_ids: list[int]
    ids: list[int]
    past: Any
    internals: Internals
    spec: CaptureSpec


class TrunkCache:
    """The last few chains' KV caches and internals, so a chain that shares a token prefix
    with one of them (a chain growing step by step while it streams, or PRM800K's
    alternative steps branching off one trajectory) only runs its new tokens.

    Prefix reuse is exact: in a causal model a token's attention, probabilities and hidden
    states do not depend on anything after it.
    """

    def __init__(self, max_items: int = 2) -> None:
        self.max_items = max_items
        self.items: list[_Trunk] = []
        self.reused_tokens = 0

    def best(self, chain: Chain, spec: CaptureSpec) -> tuple[_Trunk | None, int]:
        """The cached trunk sharing the longest chain-token prefix with ``chain`` (same prompt and spec)."""
        best, n = None, 0
        for t in self.items:
            if t.prompt_ids == list(chain.prompt_ids) and covers(t.spec, spec):
                k = _common(t.ids, list(chain.ids))
                if k > n:
                    best, n = t, k
        if best is not None:  # least recently *used* goes first, so a trajectory that many
            self.items.remove(best)  # branches fork from stays cached while they run
            self.items.append(best)
        return best, n

    def add(self, trunk: _Trunk) -> None:
        self.items.append(trunk)
        if len(self.items) > self.max_items:
            self.items.pop(0)


@torch.inference_mode()
def teacher_force(
    llm: Any, chain: Chain, spec: CaptureSpec, chunk: int = 256, trunks: TrunkCache | None = None
) -> Internals:
    """One pass over prompt + chain that returns the chain tokens' internals.

    The prompt is prefilled without recording; the chain follows in chunks of ``chunk``
    tokens on top of the KV cache, with hooks recording each chunk's look-back band.
    With ``trunks``, a chain that shares its first tokens with a recent chain reuses that
    chain's KV cache and internals and runs only from the first differing token (one
    token earlier, whose logits give the next token's probabilities).
    """
    model = llm.model
    device = next(model.parameters()).device
    all_ids = list(chain.ids)
    if not all_ids:
        raise ValueError("The chain has no tokens to score.")
    trunk, shared = trunks.best(chain, spec) if trunks is not None else (None, 0)
    if trunk is not None and shared == len(all_ids):  # the chain is (a prefix of) a cached one
        trunks.reused_tokens += shared
        x = restrict(trunk.internals, spec)
        return Internals(
            attn=x.attn[:shared], topk_probs=x.topk_probs[:shared], token_logprob=x.token_logprob[:shared],
            entropy=x.entropy[:shared], hidden={li: h[:shared] for li, h in x.hidden.items()},
        )
    rec = Recorder(model, spec)
    topks, toks, ents = [], [], []
    with rec:
        rec.enabled = False
        if trunk is not None and shared >= 2:
            start = shared - 1  # re-run the last shared token: its logits predict the first new one
            past = copy.deepcopy(trunk.past)
            _crop(past, len(chain.prompt_ids) + start)
            trunks.reused_tokens += start
            last_logits = None
        elif hasattr(llm, "prefill"):  # reuses the shared template prefix's KV cache
            start = 0
            pad = llm.tokenizer.pad_token_id if llm.tokenizer.pad_token_id is not None else 0
            past, last_logits, _ = llm.prefill([list(chain.prompt_ids)], pad)
        else:
            start = 0
            prompt = torch.tensor([chain.prompt_ids], device=device)
            res = model(input_ids=prompt, use_cache=True, logits_to_keep=1)
            past, last_logits = res.past_key_values, res.logits[:, -1, :]
        rec.enabled = True
        ids = torch.tensor([all_ids[start:]], device=device)
        for s in range(0, ids.shape[1], chunk):
            part = ids[:, s : s + chunk]
            res = model(input_ids=part, past_key_values=past, use_cache=True)
            past = res.past_key_values
            # the logits that produced this chunk's tokens: the previous position's, shifted by one
            # (no concatenated copy: a chunk's logits are the biggest tensor of the pass)
            if last_logits is not None:
                tk, tl, en = prob_features(last_logits, part[0, :1], spec.top_k)
                topks.append(tk)
                toks.append(tl)
                ents.append(en)
            # (resumed: the first position repeats the trunk's last shared token, so it has no row)
            tk, tl, en = prob_features(res.logits[0, :-1], part[0, 1:], spec.top_k)
            topks.append(tk)
            toks.append(tl)
            ents.append(en)
            last_logits = res.logits[:, -1, :]
    attn = rec.stacked_attn()[0]
    hidden = {li: torch.cat([h[0] for h in rec.hidden[li]], dim=0) for li in rec.hidden} if rec.hidden else {}
    new = Internals(
        attn=attn, topk_probs=torch.cat(topks), token_logprob=torch.cat(toks), entropy=torch.cat(ents), hidden=hidden
    )
    if start:
        old = restrict(trunk.internals, spec)
        new = Internals(
            attn=torch.cat([old.attn[:start], new.attn]),
            topk_probs=torch.cat([old.topk_probs[: start + 1], new.topk_probs]),
            token_logprob=torch.cat([old.token_logprob[: start + 1], new.token_logprob]),
            entropy=torch.cat([old.entropy[: start + 1], new.entropy]),
            hidden={li: torch.cat([old.hidden[li][:start], h]) for li, h in new.hidden.items()},
        )
    if trunks is not None:
        trunks.add(_Trunk(list(chain.prompt_ids), all_ids, past, new, spec))
    return new


class LiveCapture:
    """Hooks that keep each fed token's internals while ``LLM.generate`` runs (batch of one).

    Calls to the model are either prompt calls (several tokens: the shared-prefix cache, then
    the prompt's own tail, which ends with the forced ``Step 1:`` tokens) or decoding calls
    (one token, the one just chosen). The last prompt call resets the chain to those forced
    tokens; each decoding call appends the token it feeds. For every chain token the rows
    match ``teacher_force``: the look-back band of its own position and the probability
    features of the distribution that produced it. Its hooks ride on a ``Recorder``, so they
    go on and come off the model together with the attention hooks.
    """

    def __init__(self, llm: Any, spec: CaptureSpec, n_prefix: int) -> None:
        self.llm = llm
        self.model = llm.model
        self.spec = spec
        self.n_prefix = n_prefix
        norm = getattr(self.model.get_decoder(), "norm", None)
        if norm is None:
            raise ValueError(f"{type(self.model).__name__} has no final norm to read the prompt's last positions from.")
        self.rec = Recorder(
            self.model,
            spec,
            extra=[
                HookPoint(self.model, self._pre, pre=True, with_kwargs=True),
                HookPoint(norm, self._norm),
                HookPoint(self.model, self._post, with_kwargs=True),
            ],
        )
        self.ids: list[int] = []
        self.attn: list[torch.Tensor] = []
        self.hidden: dict[int, list[torch.Tensor]] = {li: [] for li in spec.hidden_layers}
        self.topk: list[torch.Tensor] = []
        self.logprob: list[float] = []
        self.entropy: list[float] = []
        self._multi = False
        self._n_reset = 0
        self._call_ids: list[int] = []
        self._prev: tuple[torch.Tensor, torch.Tensor, float] | None = None

    def __enter__(self) -> LiveCapture:
        self.rec.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.rec.__exit__(*exc)

    def _pre(self, module: Any, args: Any, kwargs: dict) -> None:
        ids = kwargs.get("input_ids")
        if ids is None and args:
            ids = args[0]
        if ids is None:
            raise ValueError("LiveCapture needs input_ids")
        self._multi = ids.shape[1] > 1
        if self._multi:
            self._call_ids = ids[0].tolist()
            return
        x = int(ids[0, 0])
        if self._prev is None:  # a one-token call with no distribution before it: nothing to read
            self.topk.append(torch.zeros(self.spec.top_k))
            self.logprob.append(0.0)
            self.entropy.append(0.0)
        else:
            logp, tk, ent = self._prev
            self.topk.append(tk)
            self.logprob.append(float(logp[x]))
            self.entropy.append(float(ent))
        self.ids.append(x)

    def _norm(self, module: Any, args: Any, output: Any) -> None:
        if not self._multi:
            return
        h = output[0] if isinstance(output, tuple) else output
        q = h.shape[1]
        n = min(self.n_prefix, q - 1)
        self.ids = self._call_ids[q - n :] if n else []
        self.topk, self.logprob, self.entropy = [], [], []
        if n:
            logits = self.model.get_output_embeddings()(h[0, q - n - 1 : q - 1])
            tk, tok, ent = prob_features(logits, torch.tensor(self.ids, device=logits.device), self.spec.top_k)
            self.topk = list(tk.detach().float().cpu())
            self.logprob = tok.float().cpu().tolist()
            self.entropy = ent.float().cpu().tolist()
        self._n_reset = n

    def _post(self, module: Any, args: Any, kwargs: dict, output: Any) -> None:
        logp, tk, ent = distribution_features(output.logits[0, -1], self.spec.top_k)
        self._prev = (logp.detach().cpu(), tk.detach().float().cpu(), float(ent))
        n = self._n_reset
        calls = self.rec.attn
        if calls:
            a = torch.stack(calls[-1], dim=2)[0].detach().float().cpu()  # [q, L, H, w]
            calls.clear()
            if self._multi:
                self.attn = list(a[a.shape[0] - n :]) if n else []
            else:
                self.attn.append(a[-1])
        for li, hs in self.rec.hidden.items():
            if hs:
                x = hs[-1][0].detach().float().cpu()
                hs.clear()
                if self._multi:
                    self.hidden[li] = list(x[x.shape[0] - n :]) if n else []
                else:
                    self.hidden[li].append(x[-1])

    def internals(self, n: int) -> Internals:
        """The first ``n`` chain tokens' internals, in teacher_force's shape."""
        n = min(n, len(self.attn), len(self.logprob))
        return Internals(
            attn=torch.stack(self.attn[:n]),
            topk_probs=torch.stack(self.topk[:n]),
            token_logprob=torch.tensor(self.logprob[:n]),
            entropy=torch.tensor(self.entropy[:n]),
            hidden={li: torch.stack(v[:n]) for li, v in self.hidden.items()},
        )
