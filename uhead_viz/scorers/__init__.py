"""Step scorers: the uncertainty head and unsupervised baselines behind one interface.

Adding a method is one file in this package: subclass ``Scorer``, give it a ``name`` and
decorate it with ``@register``; every module here is imported on first lookup.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

from .base import SCORERS, InternalsCache, Scorer, register

__all__ = ["SCORERS", "InternalsCache", "Scorer", "available", "get_scorer", "register"]


def _load_all() -> None:
    for mod in pkgutil.iter_modules(__path__):
        if mod.name != "base":
            importlib.import_module(f"{__name__}.{mod.name}")


def available() -> list[str]:
    """Names of every registered scorer, the head first."""
    _load_all()
    return sorted(SCORERS, key=lambda n: (n != "uhead", n))


def get_scorer(name: str, llm: Any, head: Any = None, cache: InternalsCache | None = None) -> Scorer:
    """Build the scorer called ``name``; pass one ``cache`` to all scorers of a run to share internals."""
    _load_all()
    if name not in SCORERS:
        raise KeyError(f"Unknown scoring method '{name}'. Known: {', '.join(available())}.")
    cls = SCORERS[name]
    if cls.needs_head:
        return cls(llm, cache, head=head)  # type: ignore[call-arg]
    return cls(llm, cache)
