"""The scorer interface, the registry, and the shared cache of forward-pass internals.

Every scoring method answers one question per step: how likely is this step wrong? The
interface is one method, ``score_internals(internals, chain) -> per-step p_error in
[0, 1]`` (``score(chains)`` fetches the internals and calls it), so methods can be
compared on the same rows. Most methods read the same teacher-forced forward pass, which
is by far the expensive part, so (as in LM-Polygraph, where estimators declare the
statistics they depend on) a scorer declares that it needs internals and which
``CaptureSpec``; one ``InternalsCache`` runs ``teacher_force`` once per chain with the
union of those specs and hands every scorer its view.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections import OrderedDict
from typing import Any

import torch

from ..capture import TrunkCache, teacher_force
from ..features import internals_from_features, token_features
from ..internals import CaptureSpec, Internals, covers, merge_specs, restrict
from ..registry import Registry
from ..steps import Chain

logger = logging.getLogger(__name__)


def chain_key(chain: Chain) -> str:
    """Identity of a forward pass: the exact prompt and chain token ids (not the row id,
    which two files may reuse for different chains)."""
    h = hashlib.sha1()
    h.update(torch.tensor(chain.prompt_ids, dtype=torch.int64).numpy().tobytes())
    h.update(b"|")
    h.update(torch.tensor(chain.ids, dtype=torch.int64).numpy().tobytes())
    return h.hexdigest()


def sanitize_score(p: float) -> float:
    """A step's p_error as every scorer hands it on: clipped to [0, 1], and 1 where it is NaN or infinite.

    Rounding and transforms can step a hair outside [0, 1], and a degenerate step (no
    tokens to average, a PRM that overflowed) can give NaN. An unknown score counts as
    "likely wrong" rather than "fine", so such a step is looked at, not passed over.
    """
    p = float(p)
    return min(1.0, max(0.0, p)) if math.isfinite(p) else 1.0


class InternalsCache:
    """Runs ``teacher_force`` once per chain and serves every scorer from that one capture.

    Specs are merged as scorers register (``want``); a request for more than the cached
    capture holds re-runs the pass with the wider spec. Least-recently used captures are
    dropped beyond ``max_items`` so a long scoring job keeps bounded memory.
    """

    def __init__(self, llm: Any, spec: CaptureSpec | None = None, max_items: int = 64, store: Any = None) -> None:
        self.llm = llm
        self.store = store  # optional FeatureStore: captures are read from it and added to it
        self.spec = spec or CaptureSpec()
        self.max_items = max_items
        self._items: OrderedDict[str, tuple[CaptureSpec, Internals]] = OrderedDict()
        # chains that extend or branch off a recent one (a streamed chain growing step by
        # step, PRM800K's alternatives to one trajectory) run only their new tokens
        self.trunks = TrunkCache()
        self.hits = 0
        self.misses = 0

    def want(self, spec: CaptureSpec | None) -> None:
        """Widen the capture so it also covers ``spec``."""
        if spec is not None:
            self.spec = merge_specs(self.spec, spec)

    def get(self, chain: Chain, spec: CaptureSpec | None = None, longer: Chain | None = None) -> Internals:
        """The chain's internals, restricted to ``spec`` (default: everything captured).

        ``longer``: the chain this one was cut from (``evaluate`` scores a labelled row only up to
        its last labelled step), whose stored capture serves it when its own is not stored.
        """
        key = chain_key(chain)
        need = merge_specs(self.spec, spec) if spec is not None else self.spec
        hit = self._items.get(key)
        if hit is not None and covers(hit[0], need):
            self._items.move_to_end(key)
            self.hits += 1
            internals = hit[1]
        else:
            self.misses += 1
            self.spec = need
            internals = self._from_store(key, need)
            if internals is None and longer is not None:
                internals = self._prefix_from_store(chain, longer, need)
            if internals is None:
                internals = teacher_force(self.llm, chain, need, trunks=self.trunks)
                if self.store is not None and covers(need, self.store.spec) and not self.store.spec.hidden_layers:
                    self.store.add(key, key, token_features(restrict(internals, self.store.spec), self.store.spec),
                                   chain.spans)
            self._items[key] = (need, internals)
            while len(self._items) > self.max_items:
                self._items.popitem(last=False)
        return restrict(internals, spec) if spec is not None else internals

    def _from_store(self, key: str, need: CaptureSpec) -> Internals | None:
        if self.store is None or key not in self.store or not covers(self.store.spec, need):
            return None
        feats, _ = self.store.load([key])[key]
        cfg = self.llm.model.config
        return internals_from_features(feats, int(cfg.num_hidden_layers), int(cfg.num_attention_heads), self.store.spec)

    def _prefix_from_store(self, chain: Chain, longer: Chain, need: CaptureSpec) -> Internals | None:
        """``chain``'s rows of ``longer``'s stored capture, when ``chain`` is ``longer`` cut short
        (same prompt, its token ids a prefix of ``longer``'s)."""
        n = len(chain.ids)
        if list(chain.prompt_ids) != list(longer.prompt_ids) or list(longer.ids[:n]) != list(chain.ids):
            return None
        full = self._from_store(chain_key(longer), need)
        return full.first(n) if full is not None else None

    def clear(self) -> None:
        self._items.clear()
        self.trunks = TrunkCache()


class Scorer:
    """One scoring method: captured internals and a chain in, one p_error per step out.

    ``score_internals`` is the one scoring path: the live view (on the internals captured
    so far), the final pass, ``score``, ``evaluate`` and attribution all reach a method's
    numbers through it, so the same chain and internals give the same scores wherever they
    are asked for. Subclasses set ``name`` and implement ``_score_internals``; the base
    clips every score and checks there is one per step, once, here. A method that reads no
    internals (a verifier) is handed None; one that scores several chains faster together
    (a PRM's padded batch) may override ``_score_chains`` as well.

    ``needs_internals`` / ``spec`` tell the shared cache what to capture; scorers that
    need nothing from the forward pass (e.g. an external verifier) set it False.
    """

    name: str = ""
    needs_internals: bool = True
    needs_head: bool = False
    spec: CaptureSpec | None = None

    def __init__(self, llm: Any, cache: InternalsCache | None = None) -> None:
        self.llm = llm
        self.cache = cache if cache is not None else InternalsCache(llm)
        if self.needs_internals:
            self.cache.want(self.spec)

    def score(self, chains: list[Chain]) -> list[list[float]]:
        """Per chain, per step: probability that the step is wrong, in [0, 1]."""
        raw = self._score_chains(chains)
        return [self._finish(r, c, 0) for r, c in zip(raw, chains, strict=True)]

    def score_internals(self, internals: Internals | None, chain: Chain, first: int = 0) -> list[float]:
        """Per step of ``chain`` from step ``first`` on: p_error in [0, 1], from ``internals`` (rows for
        ``chain.ids``, or a prefix of them that reaches the end of its last step).

        A step's score never depends on which other steps are asked for, so the live view asks
        only for the steps completed since its last update (``first``).
        """
        return self._finish(self._score_internals(internals, chain, first), chain, first)

    def internals_of(self, chain: Chain) -> Internals | None:
        """What ``_score_internals`` reads for ``chain``: its capture from the shared cache, or None."""
        return self.cache.get(chain, self.spec) if self.needs_internals else None

    def _score_chains(self, chains: list[Chain]) -> list[list[float]]:
        """Unchecked scores of several chains; by default one at a time from the shared capture."""
        return [self._score_internals(self.internals_of(c), c, 0) for c in chains]

    def _score_internals(self, internals: Internals | None, chain: Chain, first: int) -> list[float]:
        """Unchecked scores of steps ``first``.. of ``chain``."""
        raise NotImplementedError

    def _finish(self, raw: Any, chain: Chain, first: int) -> list[float]:
        out = [sanitize_score(p) for p in raw]
        want = len(chain.steps) - first
        if len(out) != want:
            raise ValueError(f"{self.name or type(self).__name__} gave {len(out)} scores for {want} steps")
        return out


SCORERS = Registry("scoring method", "uhead_viz.scorers")
register = SCORERS.register
