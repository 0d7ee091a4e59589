"""The combined score: the uncertainty head and a verifier must both find a step correct.

As in the paper, the two probabilities that a step is correct are multiplied:

    p_error = 1 - (1 - p_uhead) * (1 - p_verifier)

The verifier is the LLM judge (``combined``) or any other scorer, e.g. a PRM
(``combined:prm:<id>``, registered by ``combined_method``).

Neither part is scored twice in one run. Every scorer result goes through one small memo
per shared ``InternalsCache`` (``results_for(cache)``), keyed by method name and chain:
the evaluation loop puts each method's scores there as it computes (or reloads) them, so
when ``combined`` runs after ``uhead`` and ``judge`` it only multiplies; run on its own it
computes both parts once and leaves them in the memo for anyone after it.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import Any
from weakref import WeakKeyDictionary

from ..errors import InputError
from ..internals import Internals
from ..steps import Chain
from .base import SCORERS, InternalsCache, Scorer, chain_key, register

PREFIX = "combined:"
DEFAULT_VERIFIER = "judge"


def combine(p_head: float, p_verifier: float) -> float:
    """P(wrong) when a step is correct only if both say so (independent votes): 1 - (1-a)(1-b).

    The one place this rule is written: the scorer, the app's verifier column and the
    re-scored stored examples all call it.
    """
    return 1.0 - (1.0 - float(p_head)) * (1.0 - float(p_verifier))


def chain_id(chain: Chain) -> str:
    """Identity of a chain's scores: its forward-pass identity plus the step boundaries and texts."""
    h = hashlib.sha1(chain_key(chain).encode())
    h.update(repr((chain.spans, chain.steps, chain.problem)).encode())
    return h.hexdigest()


class StepResults:
    """Memo of per-step scores, keyed by (method name, chain); least recently used dropped past ``max_items``."""

    def __init__(self, max_items: int = 4096) -> None:
        self.max_items = max_items
        self._items: OrderedDict[tuple[str, str], list[float]] = OrderedDict()
        self.computed: dict[str, int] = {}  # chains actually scored, per method (for tests and logs)

    def put(self, method: str, chain: Chain, scores: list[float]) -> None:
        key = (method, chain_id(chain))
        self._items[key] = list(scores)
        self._items.move_to_end(key)
        while len(self._items) > self.max_items:
            self._items.popitem(last=False)

    def get(self, method: str, chain: Chain) -> list[float] | None:
        return self._items.get((method, chain_id(chain)))

    def scores(self, scorer: Scorer, chains: list[Chain]) -> list[list[float]]:
        """``scorer.score(chains)``, computing only the chains not in the memo (in one call)."""
        out: list[list[float] | None] = [self.get(scorer.name, c) for c in chains]
        todo = [i for i, r in enumerate(out) if r is None]
        if todo:
            fresh = scorer.score([chains[i] for i in todo])
            self.computed[scorer.name] = self.computed.get(scorer.name, 0) + len(todo)
            for i, r in zip(todo, fresh):
                self.put(scorer.name, chains[i], r)
                out[i] = r
        return [r for r in out if r is not None]

    def clear(self) -> None:
        self._items.clear()


_RESULTS: WeakKeyDictionary[InternalsCache, StepResults] = WeakKeyDictionary()


def results_for(cache: InternalsCache) -> StepResults:
    """The one results memo of the scorers that share ``cache`` (i.e. of one run)."""
    if cache not in _RESULTS:
        _RESULTS[cache] = StepResults()
    return _RESULTS[cache]


@register
class Combined(Scorer):
    """p_error = 1 - (1 - uhead)(1 - verifier); reads the head's internals through the shared cache."""

    name = "combined"
    needs_head = True
    opt_in = True  # as slow as its verifier (the judge by default): run when asked for
    verifier_name = DEFAULT_VERIFIER

    def __init__(self, llm: Any, cache: InternalsCache | None = None, head: Any = None) -> None:
        from . import get_scorer

        self.head_scorer = get_scorer("uhead", llm, head=head, cache=cache)
        self.spec = self.head_scorer.spec
        super().__init__(llm, self.head_scorer.cache)
        try:
            self.verifier = get_scorer(self.verifier_name, llm, head=head, cache=self.cache)
        except KeyError as e:
            raise InputError(f"The combined score's verifier {self.verifier_name!r} is not available: {e}") from e
        self.parts = ("uhead", self.verifier_name)
        self.label = f"UHead x {getattr(self.verifier, 'label', self.verifier_name)}"

    def _score_chains(self, chains: list[Chain]) -> list[list[float]]:
        memo = results_for(self.cache)
        heads = memo.scores(self.head_scorer, chains)
        verdicts = memo.scores(self.verifier, chains)
        return [self._combine(h, v) for h, v in zip(heads, verdicts)]

    def _score_internals(self, internals: Internals | None, chain: Chain, first: int) -> list[float]:
        """The head's part from ``internals`` (as it is scored live); the verifier's from the memo or computed."""
        head = self.head_scorer.score_internals(internals, chain, first)
        return self._combine(head, results_for(self.cache).scores(self.verifier, [chain])[0][first:])

    def _combine(self, heads: list[float], verdicts: list[float]) -> list[float]:
        if len(heads) != len(verdicts):
            raise ValueError(f"uhead gave {len(heads)} step scores but {self.verifier_name} gave {len(verdicts)}")
        return [combine(a, b) for a, b in zip(heads, verdicts)]


def combined_method(name: str) -> type[Combined]:
    """Register ``combined:<verifier>`` (e.g. ``combined:prm:<id>``) and return its class.

    The verifier must already be registered (for a PRM: ``prm_method`` first).
    """
    if name == Combined.name:
        return Combined
    if not name.startswith(PREFIX) or len(name) == len(PREFIX):
        raise InputError(f"A combined method is named combined or combined:<verifier>, not {name!r}.")
    verifier = name[len(PREFIX) :]
    if verifier in ("uhead", "combined") or verifier.startswith(PREFIX):
        raise InputError(f"{verifier!r} cannot be the verifier of a combined score.")
    SCORERS.lookup(verifier)  # KeyError naming the known methods if it is not registered
    cls = type("CombinedWith", (Combined,), {"name": name, "verifier_name": verifier, "__module__": __name__})
    SCORERS.register(cls)
    return cls
