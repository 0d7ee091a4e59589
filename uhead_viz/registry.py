"""Name -> class registries for plugins (scorers, labelers): adding one is one file.

A package's plugins register themselves with a class decorator when their module is
imported; ``load_all`` imports every module of the package first, so a lookup by name
finds plugins nobody imported by hand.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any


class Registry(dict):
    """Plugin classes of one kind, keyed by their ``name`` attribute."""

    def __init__(self, kind: str, package: str) -> None:
        super().__init__()
        self.kind = kind
        self.package = package

    def register(self, cls: Any) -> Any:
        """Class decorator: make ``cls`` findable under ``cls.name``."""
        if not getattr(cls, "name", ""):
            raise ValueError(f"{cls.__name__} has no name")
        self[cls.name] = cls
        return cls

    def load_all(self) -> None:
        pkg = importlib.import_module(self.package)
        for mod in pkgutil.iter_modules(pkg.__path__):
            if mod.name != "base":
                importlib.import_module(f"{self.package}.{mod.name}")

    def lookup(self, name: str) -> Any:
        self.load_all()
        if name not in self:
            raise KeyError(f"Unknown {self.kind} '{name}'. Known: {', '.join(sorted(self))}.")
        return self[name]
