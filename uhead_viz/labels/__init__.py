"""Step labelers: self-supervised checks and human-label importers behind one interface.

Adding a labeler is one file in this package: subclass ``Labeler``, give it a ``name``
and decorate it with ``@register``; every module here is imported on first lookup.
Importers of human-labelled data sets live in ``human``.
``api_judge`` asks an OpenAI-compatible API for a critique, then a JSON verdict per step.
"""

from __future__ import annotations

from typing import Any

from .base import LABELERS, Labeler, StepLabels, register

__all__ = ["LABELERS", "Labeler", "StepLabels", "available", "get_labeler", "register"]


def available() -> list[str]:
    """Names of every registered labeler, sorted."""
    LABELERS.load_all()
    return sorted(LABELERS)


def get_labeler(name: str, **kw: Any) -> Labeler:
    """Build the labeler called ``name``; keyword arguments go to its constructor."""
    return LABELERS.lookup(name)(**kw)
