"""What one forward pass keeps, and how the specs of several consumers combine.

``CaptureSpec`` says what to keep (the look-back window, how many top probabilities,
which hidden layers); ``Internals`` holds what was kept, per chain token. The capture
(``capture``), the features (``features``), the head and the scorers' shared cache all
read these, so they live below all of them, in a module that imports nothing of the
package: a capture can widen or narrow a spec without importing the features, and the
features can read a capture without importing the hooks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


@dataclass
class CaptureSpec:
    """What to keep from the forward pass. Stored in a head's config as its feature recipe."""

    window: int = 5
    top_k: int = 4
    hidden_layers: tuple[int, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"window": self.window, "top_k": self.top_k, "hidden_layers": list(self.hidden_layers)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CaptureSpec:
        return cls(window=int(d["window"]), top_k=int(d["top_k"]), hidden_layers=tuple(d.get("hidden_layers", ())))


@dataclass
class Internals:
    """Per chain token: look-back attention, token probabilities, optional hidden states.

    Row t describes assistant token t: ``attn[t, l, h, j]`` is the weight token t puts on
    token t-1-j in layer l, head h; the probability features come from the distribution
    that produced token t (the logits at position t-1).
    """

    attn: torch.Tensor  # [T, L, H, window], float32
    topk_probs: torch.Tensor  # [T, k]
    token_logprob: torch.Tensor  # [T]
    entropy: torch.Tensor  # [T]
    hidden: dict[int, torch.Tensor] = field(default_factory=dict)  # layer -> [T, d]

    def __len__(self) -> int:
        return int(self.attn.shape[0])

    def first(self, n: int) -> Internals:
        """The rows of the first ``n`` tokens: what a capture of only those tokens holds, since the
        forward pass is causal (a token's internals never depend on later tokens)."""
        return Internals(
            attn=self.attn[:n],
            topk_probs=self.topk_probs[:n],
            token_logprob=self.token_logprob[:n],
            entropy=self.entropy[:n],
            hidden={li: h[:n] for li, h in self.hidden.items()},
        )


def merge_specs(*specs: CaptureSpec | None) -> CaptureSpec:
    """The smallest spec that covers all of ``specs``, so one capture can serve every scorer."""
    real = [s for s in specs if s is not None]
    if not real:
        return CaptureSpec()
    return CaptureSpec(
        window=max(s.window for s in real),
        top_k=max(s.top_k for s in real),
        hidden_layers=tuple(sorted({li for s in real for li in s.hidden_layers})),
    )


def covers(have: CaptureSpec, need: CaptureSpec) -> bool:
    """Whether a capture taken with ``have`` holds everything ``need`` asks for."""
    return (
        have.window >= need.window and have.top_k >= need.top_k and set(need.hidden_layers) <= set(have.hidden_layers)
    )


def restrict(internals: Internals, spec: CaptureSpec) -> Internals:
    """View a capture taken with a wider spec as if it had been taken with ``spec``.

    Look-back column j is distance j+1 and top-k probabilities are sorted, so the first
    ``window`` / ``top_k`` columns are exactly what a narrower capture would have kept.
    """
    have_w = internals.attn.shape[-1]
    have_k = internals.topk_probs.shape[-1]
    missing = [li for li in spec.hidden_layers if li not in internals.hidden]
    if spec.window > have_w or spec.top_k > have_k or missing:
        raise ValueError(
            f"The capture holds window={have_w}, top_k={have_k}, hidden layers {sorted(internals.hidden)}; "
            f"the features need window={spec.window}, top_k={spec.top_k}, hidden layers {list(spec.hidden_layers)}."
        )
    return Internals(
        attn=internals.attn[..., : spec.window],
        topk_probs=internals.topk_probs[:, : spec.top_k],
        token_logprob=internals.token_logprob,
        entropy=internals.entropy,
        hidden={li: internals.hidden[li] for li in spec.hidden_layers},
    )
