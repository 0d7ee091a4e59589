"""The uncertainty head: a small transformer that reads token features and scores steps.

As in Ni et al. (2025), "Reasoning with Confidence" (arXiv 2511.06209): the frozen LLM
writes (or is teacher-forced on) a chain, every token becomes a feature vector (see
features.py), and a head of a few million parameters predicts, per step, whether the
step is wrong. Two ways to run it:

* ``mode="step"`` (the paper's setup): one encoder pass per step. The step's tokens are
  marked with a learned embedding, tokens after the step are masked out, and the step's
  encoded tokens are mean-pooled into one logit. Exact, and costs n_steps passes.
* ``mode="causal"``: one causally-masked pass over the whole chain; each step is read from
  its tokens' outputs (mean, or its last token). The marker embedding then flags the first
  token of every step, since no single step is "the one being scored". n_steps times
  cheaper to train, and a token still sees only what came before it. With ``context="step"`` a
  token sees only the earlier tokens of its own step: trained on 3-5-step GSM8K chains, a
  head that sees the whole chain learns "later step, more likely wrong" (later steps
  more often follow a chain's first error) and carries it to 20-step chains, where it scores
  position rather than content.

A step's score is always read through ``step_logit``: the features up to the step's end
and nothing after, so it is the same number whether the chain is still being written or
finished, and the same one attribution explains. Training runs ``forward`` on padded
batches of whole chains, which gives the same logits up to float rounding.

There are no position embeddings: the look-back attention features already say how a
token relates to its neighbours, and a learned position table would cap chain length.

Checkpoints (``model.safetensors`` + ``config.json``) are read and written by ``uhead``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .features import feature_dim
from .internals import CaptureSpec

ATTN_BUDGET = 1 << 25  # attention-map elements per encoder call in step mode (128 MB in fp32)


@dataclass
class UHeadConfig:
    """Sizes of the head. ``n_features`` must equal ``feature_dim`` of the base model and spec."""

    n_features: int
    d_model: int = 256
    n_layers: int = 2
    n_heads: int = 4
    d_ff: int = 1024
    dropout: float = 0.1
    mode: str = "step"  # "step" | "causal"
    pool: str = "mean"  # "mean" | "max" | "last" (causal mode only; step mode always mean-pools)
    # What a token's encoder output may attend to (causal mode): "chain", every earlier token;
    # "step", only the earlier tokens of its own step. "step" keeps a step's score from
    # depending on how many steps came before (see the module docstring).
    context: str = "chain"
    # Look-back attention as captured ("raw"), or each layer-head's window rescaled to sum to
    # one ("window"): the raw mass on the last few tokens shrinks as the context grows, so a
    # head trained on short chains reads a long chain's attention as out of range.
    attn: str = "raw"
    # Pool only a step's body into its score, not its ``Step k:`` marker tokens: those say
    # where a step starts (and, through k, how late it is), not whether it is right. Off for
    # heads saved before the option existed (their config.json lacks it), on for new ones.
    pool_body: bool = False
    # The last ``n_hidden`` feature columns are LLM hidden states (``CaptureSpec.hidden_layers``):
    # a Linear projects them to ``d_hidden`` before they join the other features, so a
    # 1,536-wide state does not swamp the few hundred attention and probability columns.
    # 0: no separate projection (heads saved before the option; hidden columns, if any, go
    # through the first Linear like the rest).
    n_hidden: int = 0
    d_hidden: int = 0

    def __post_init__(self) -> None:
        if self.mode not in ("step", "causal"):
            raise ValueError(f"mode must be 'step' or 'causal', not {self.mode!r}")
        if self.pool not in ("mean", "max", "last"):
            raise ValueError(f"pool must be 'mean', 'max' or 'last', not {self.pool!r}")
        if self.context not in ("chain", "step"):
            raise ValueError(f"context must be 'chain' or 'step', not {self.context!r}")
        if self.attn not in ("raw", "window"):
            raise ValueError(f"attn must be 'raw' or 'window', not {self.attn!r}")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model={self.d_model} is not divisible by n_heads={self.n_heads}")
        if not 0 <= self.n_hidden < self.n_features or (self.n_hidden > 0) != (self.d_hidden > 0):
            raise ValueError(
                f"n_hidden={self.n_hidden} and d_hidden={self.d_hidden}: give both (hidden columns and their "
                f"projection size, fewer than the {self.n_features} features) or neither"
            )


def base_info(llm: Any) -> dict[str, Any]:
    """What a head records about the model whose internals it reads (name, build, shape)."""
    cfg = llm.model.config
    return {
        "name": llm.name,
        "fingerprint": llm.fingerprint,
        "precision": llm.precision,
        "model_type": str(cfg.model_type),
        "architecture": type(llm.model).__name__,
        "n_layers": int(cfg.num_hidden_layers),
        "n_heads": int(cfg.num_attention_heads),
        "hidden_size": int(cfg.hidden_size),
    }


def spans_to_mask(spans: list[tuple[int, int]] | list[list[int]], t: int) -> torch.Tensor:
    """``[S, T]`` bool: row k is True on step k's tokens."""
    m = torch.zeros(len(spans), t, dtype=torch.bool)
    for k, (a, b) in enumerate(spans):
        m[k, a:b] = True
    return m


class UHead(nn.Module):
    """Per-token projection -> step marker -> TransformerEncoder -> pooled step logit."""

    def __init__(
        self,
        config: UHeadConfig,
        spec: CaptureSpec | None = None,
        base: dict[str, Any] | None = None,
        threshold: float = 0.5,
    ) -> None:
        super().__init__()
        c = self.config = config
        self.spec = spec or CaptureSpec()
        self.base = dict(base or {})  # base_info() of the model it reads
        self.threshold = float(threshold)
        self.training_summary: dict[str, Any] = {}  # (nn.Module already owns `.training`)
        self.metrics: dict[str, Any] = {}
        # per-feature standardization, set from the training set (``set_normalization``):
        # attention weights, probabilities and log-probs live on very different scales
        self.register_buffer("feat_mean", torch.zeros(c.n_features))
        self.register_buffer("feat_std", torch.ones(c.n_features))
        n_in = c.n_features
        if c.n_hidden:
            self.hidden_proj = nn.Linear(c.n_hidden, c.d_hidden)
            n_in = c.n_features - c.n_hidden + c.d_hidden
        self.proj = nn.Sequential(
            nn.Linear(n_in, c.d_model), nn.LayerNorm(c.d_model), nn.GELU(), nn.Linear(c.d_model, c.d_model)
        )
        self.marker = nn.Embedding(2, c.d_model)
        layer = nn.TransformerEncoderLayer(
            c.d_model, c.n_heads, c.d_ff, c.dropout, activation="gelu", batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(
            layer, c.n_layers, norm=nn.LayerNorm(c.d_model), enable_nested_tensor=False
        )
        self.classifier = nn.Linear(c.d_model, 1)

    @classmethod
    def for_llm(cls, llm: Any, spec: CaptureSpec | None = None, **sizes: Any) -> UHead:
        """A fresh (untrained) head sized for ``llm``'s features."""
        spec = spec or CaptureSpec()
        info = base_info(llm)
        n = feature_dim(info["n_layers"], info["n_heads"], spec, info["hidden_size"])
        return cls(UHeadConfig(n_features=n, **sizes), spec=spec, base=info)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def set_normalization(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Standardize inputs with training-set statistics (tiny stds are floored, so a
        constant feature stays finite)."""
        self.feat_mean.copy_(mean.float())
        self.feat_std.copy_(std.float().clamp(min=1e-3))

    def prepare(self, feats: torch.Tensor) -> torch.Tensor:
        """Raw stored features -> the head's inputs before standardization (see ``attn``)."""
        if self.config.attn == "raw":
            return feats
        n_attn = int(self.base["n_layers"]) * int(self.base["n_heads"]) * self.spec.window
        attn = feats[..., :n_attn].unflatten(-1, (-1, self.spec.window))
        attn = attn / attn.sum(-1, keepdim=True).clamp(min=1e-6)
        return torch.cat([attn.flatten(-2), feats[..., n_attn:]], -1)

    def embed(self, feats: torch.Tensor) -> torch.Tensor:
        """Stored features -> the encoder's token inputs: standardized, hidden states projected down."""
        x = (self.prepare(feats) - self.feat_mean) / self.feat_std
        if self.config.n_hidden:
            cut = self.config.n_features - self.config.n_hidden
            x = torch.cat([x[..., :cut], self.hidden_proj(x[..., cut:])], -1)
        return self.proj(x)

    def _encode(self, x: torch.Tensor, marker: torch.Tensor, valid: torch.Tensor, causal: bool) -> torch.Tensor:
        h = x + self.marker(marker.long())
        mask = None
        if causal:
            t = h.shape[1]
            mask = torch.ones(t, t, dtype=torch.bool, device=h.device).triu(1)
            if self.config.context == "step":  # also block earlier steps' tokens
                seg = marker.long().cumsum(-1)  # [B, T]: which step a token is in
                other = seg[:, :, None] != seg[:, None, :]
                mask = (mask[None] | other).repeat_interleave(self.config.n_heads, 0)
                return self.encoder(h, mask=mask, src_key_padding_mask=~valid)
        return self.encoder(h, mask=mask, src_key_padding_mask=~valid, is_causal=causal)

    def forward(
        self, feats: torch.Tensor, valid: torch.Tensor, steps: torch.Tensor, pool: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Batched logits: feats [B,T,F], valid [B,T] (not padding), steps [B,S,T] -> [B,S].

        ``pool`` [B,S,T] marks the tokens pooled into each step's score: its body without the
        ``Step k:`` marker (``body_mask``). A head with ``pool_body`` needs it; others ignore it.
        Padded step rows (all False) get logit 0; mask them out of any loss.
        """
        if not self.config.pool_body:
            pool = steps
        elif pool is None:
            raise ValueError("This head pools step bodies only: pass pool=body_mask(...) (see steps.body_spans).")
        else:
            pool = pool & steps
            pool = torch.where(pool.any(-1, keepdim=True), pool, steps)  # a step that is all marker: its tokens
        x = self.embed(feats)
        b, s, t = steps.shape
        present = steps.any(-1)
        pos = torch.arange(t, device=feats.device)
        if self.config.mode == "step":
            bi, si = present.nonzero(as_tuple=True)
            m = steps[bi, si]  # [R, T] one row per step to score
            pm = pool[bi, si]
            end = ((pos + 1) * m).amax(-1)  # one past the step's last token
            tmax = int(end.max()) if len(end) else 1
            # rows in chunks, so the R x heads x T x T attention maps stay within ATTN_BUDGET
            per = max(1, ATTN_BUDGET // (self.config.n_heads * tmax * tmax))
            out = []
            for i in range(0, len(bi), per):
                e = end[i : i + per]
                tc = int(e.max())
                mc = m[i : i + per, :tc]
                vis = valid[bi[i : i + per], :tc] & (pos[None, :tc] < e[:, None])  # later tokens masked out
                h = self._encode(x[bi[i : i + per], :tc], mc, vis, causal=False)
                mf = pm[i : i + per, :tc].unsqueeze(-1).to(h.dtype)
                out.append(self.classifier((h * mf).sum(1) / mf.sum(1).clamp(min=1)).squeeze(-1))
            logits = torch.cat(out) if out else x.new_zeros(0)
            return x.new_zeros(b, s).index_put((bi, si), logits)
        starts = steps & ~nn.functional.pad(steps, (1, 0))[..., :t]  # first token of each step
        h = self._encode(x, starts.any(1), valid, causal=True)  # [B, T, d]
        if self.config.pool == "last":
            last = (((pos + 1) * steps).amax(-1) - 1).clamp(min=0)  # [B, S]
            pooled = torch.gather(h, 1, last.unsqueeze(-1).expand(b, s, h.shape[-1]))
        elif self.config.pool == "max":  # one odd token (a slip, a surprising number) can carry the step
            neg = torch.finfo(h.dtype).min
            pooled = h[:, None].masked_fill(~pool[..., None], neg).amax(2)  # [B, S, d]
            pooled = pooled.masked_fill(~present[..., None], 0.0)
        else:
            sf = pool.to(h.dtype)
            pooled = torch.einsum("bst,btd->bsd", sf, h) / sf.sum(-1, keepdim=True).clamp(min=1)
        return self.classifier(pooled).squeeze(-1).masked_fill(~present, 0.0)

    def step_logits(
        self,
        feats: torch.Tensor,
        spans: list[tuple[int, int]] | list[list[int]],
        bodies: list[tuple[int, int]] | list[list[int]] | None = None,
    ) -> torch.Tensor:
        """Logits for one chain: feats [T, F] and one ``[start, end)`` span per step -> [n_steps].

        ``bodies``: each step's span without its marker (``steps.body_spans``), for a ``pool_body`` head.
        """
        t = feats.shape[0]
        steps = spans_to_mask(spans, t).to(feats.device)[None]
        pool = spans_to_mask(bodies, t).to(feats.device)[None] if bodies is not None else None
        valid = torch.ones(1, t, dtype=torch.bool, device=feats.device)
        return self(feats[None], valid, steps, pool)[0]


    def step_logit(
        self,
        feats: torch.Tensor,
        spans: list[tuple[int, int]] | list[list[int]],
        k: int,
        bodies: list[tuple[int, int]] | list[list[int]] | None = None,
    ) -> torch.Tensor:
        """Step k's logit (a 0-d tensor), read from the features up to the step's end only.

        The one definition of a step's score: the scorer (live or final) and attribution all
        call it, so a page's number and the logit attribution explains are the same. Later
        tokens are never passed, so a step's logit does not depend on what follows it: in
        step mode the step is encoded on its own (its span only); in causal mode every step
        start up to k is marked, as in a pass over the whole chain. ``bodies`` (the steps'
        spans without their ``Step k:`` markers, ``steps.body_spans``) are pooled by a
        ``pool_body`` head and ignored by others.
        """
        end = int(spans[k][1])
        x = feats[:end]
        use = [tuple(b) for b in bodies] if bodies is not None and self.config.pool_body else None
        if self.config.mode == "step":
            return self.step_logits(x, [tuple(spans[k])], [use[k]] if use else None)[0]
        return self.step_logits(x, [tuple(s) for s in spans[: k + 1]], use[: k + 1] if use else None)[k]


def collate(
    items: list[tuple[torch.Tensor, list[tuple[int, int]]]], device: torch.device | str | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pad (feats [T,F], spans) pairs into forward()'s (feats, valid, steps) batch."""
    tmax = max(f.shape[0] for f, _ in items)
    smax = max(len(sp) for _, sp in items)
    device = device if device is not None else items[0][0].device
    feats = torch.zeros(len(items), tmax, items[0][0].shape[1], device=device)
    valid = torch.zeros(len(items), tmax, dtype=torch.bool, device=device)
    steps = torch.zeros(len(items), smax, tmax, dtype=torch.bool)
    for i, (f, sp) in enumerate(items):
        feats[i, : f.shape[0]] = f.to(device=device, dtype=feats.dtype)
        valid[i, : f.shape[0]] = True
        steps[i, : len(sp)] = spans_to_mask(sp, tmax)
    return feats, valid, steps.to(device)


def body_mask(
    bodies: list[list[tuple[int, int]]] | list[list[list[int]]], t: int, device: torch.device | str | None = None
) -> torch.Tensor:
    """forward()'s ``pool`` [B, S, T] from each chain's body spans, padded like ``collate``'s steps."""
    smax = max((len(b) for b in bodies), default=0)
    m = torch.zeros(len(bodies), smax, t, dtype=torch.bool)
    for i, b in enumerate(bodies):
        m[i, : len(b)] = spans_to_mask(b, t)
    return m.to(device) if device is not None else m


def bce_loss(logits: torch.Tensor, labels: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy over the steps that exist (label 1 = the step is wrong)."""
    present = steps.any(-1)
    return nn.functional.binary_cross_entropy_with_logits(logits[present], labels[present].float())
