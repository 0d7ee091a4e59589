"""Per-token feature vectors for the uncertainty head, from one capture's internals.

The recipe follows the uncertainty heads of Ni et al. (2025) / Shelmanov et al. (2025):
what a token attended to just before it (look-back attention, every layer and head) and
how sure the model was when it produced it (top-k probabilities, entropy, log-prob of the
token actually written), optionally plus a few layers' hidden states. The order of the
columns is fixed, because a trained head's first Linear depends on it:

    [ attn (L*H*window, layer-major, then head, then look-back distance)
    | top-k probs (k) | entropy (1) | token log-prob (1) | hidden[l] for l in spec.hidden_layers ]
"""

from __future__ import annotations

import torch

# covers and merge_specs stay importable from here (re-exported); they live in ``internals``
from .internals import CaptureSpec, Internals, covers, merge_specs, restrict  # noqa: F401


def feature_dim(n_layers: int, n_heads: int, spec: CaptureSpec, hidden_size: int = 0) -> int:
    """Width of ``token_features``' output; a head's first Linear is built from it.

    ``hidden_size`` only counts when the spec keeps hidden states.
    """
    return n_layers * n_heads * spec.window + spec.top_k + 2 + len(spec.hidden_layers) * hidden_size


def token_features(internals: Internals, spec: CaptureSpec) -> torch.Tensor:
    """``[T, F]`` float32 features, one row per chain token, in the column order above."""
    x = restrict(internals, spec)
    t = len(x)
    parts = [
        x.attn.reshape(t, -1),
        x.topk_probs,
        x.entropy[:, None],
        x.token_logprob[:, None],
    ]
    parts += [x.hidden[li] for li in spec.hidden_layers]
    return torch.cat([p.float() for p in parts], dim=1)


def internals_from_features(feats: torch.Tensor, n_layers: int, n_heads: int, spec: CaptureSpec) -> Internals:
    """Invert ``token_features``: the Internals a stored feature matrix was made from.

    Lets every scorer (the head and the baselines, which read probabilities and entropy)
    run from a feature store instead of re-running the LLM.
    """
    t = feats.shape[0]
    a = n_layers * n_heads * spec.window
    f = feats.float()
    hidden, col = {}, a + spec.top_k + 2
    if len(spec.hidden_layers):
        d = (f.shape[1] - col) // len(spec.hidden_layers)
        for li in spec.hidden_layers:
            hidden[li] = f[:, col : col + d]
            col += d
    if col != f.shape[1]:
        raise ValueError(f"{f.shape[1]} feature columns do not fit {n_layers} layers x {n_heads} heads and {spec}")
    return Internals(
        attn=f[:, :a].reshape(t, n_layers, n_heads, spec.window),
        topk_probs=f[:, a : a + spec.top_k],
        entropy=f[:, a + spec.top_k],
        token_logprob=f[:, a + spec.top_k + 1],
        hidden=hidden,
    )


def narrow_features(
    feats: torch.Tensor, n_layers: int, n_heads: int, have: CaptureSpec, need: CaptureSpec
) -> torch.Tensor:
    """Features stored with a wider recipe ``have`` as the columns ``need`` would have given.

    One capture with the middle layer's hidden state (or a longer window, more top-k) then
    serves heads with and without it, so comparing the two options costs one pass of the LLM.
    """
    if have == need:
        return feats
    if not covers(have, need):
        raise ValueError(f"Features captured with {have} do not hold what {need} needs.")
    return token_features(internals_from_features(feats, n_layers, n_heads, have), need).to(feats.dtype)
