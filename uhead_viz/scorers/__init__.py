"""Step scorers: the uncertainty head and unsupervised baselines behind one interface.

Adding a method is one file in this package: subclass ``Scorer``, give it a ``name`` and
decorate it with ``@register``; every module here is imported on first lookup.
"""

from __future__ import annotations

from typing import Any

from .base import SCORERS, InternalsCache, Scorer, register, sanitize_score

__all__ = ["SCORERS", "InternalsCache", "Scorer", "available", "get_scorer", "register", "sanitize_score"]


def available() -> list[str]:
    """Names of every registered scorer, the head first."""
    SCORERS.load_all()
    return sorted(SCORERS, key=lambda n: (n != "uhead", n))


def get_scorer(name: str, llm: Any, head: Any = None, cache: InternalsCache | None = None) -> Scorer:
    """Build the scorer called ``name``; pass one ``cache`` to all scorers of a run to share internals."""
    cls = SCORERS.lookup(name)
    if cls.needs_head:
        return cls(llm, cache, head=head)  # type: ignore[call-arg]
    return cls(llm, cache)
