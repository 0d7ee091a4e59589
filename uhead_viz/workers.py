"""What a parallel worker rebuilds from the setup its driver resolved, and the work it then runs.

A command run with ``--ray`` resolves everything in the driver first, the way it does in one
process (the model, the head that fits it, the methods that can run, the feature store), and
refuses bad input there. The result is a small picklable recipe. Each worker turns the recipe
back into a loaded model and scorers once (``open_*``) and then calls, batch after batch, the
very functions the single-process path calls (``score_batch``, ``evaluate_item``,
``capture_rows``): there is no second implementation of the work.

A worker refuses to run when the model it loaded is another build than the driver's (its
fingerprint differs): a node with other weights under the same name would otherwise mix
results from two models in one file.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import InputError

logger = logging.getLogger(__name__)

Work = Callable[[list[dict[str, Any]]], list[dict[str, Any]]]


@dataclass(frozen=True)
class ModelRecipe:
    """Which model a worker loads: by name, folder or hub id; ``precision`` None means the worker's default."""

    name: str
    precision: str | None
    fingerprint: str

    @classmethod
    def of(cls, llm: Any) -> ModelRecipe:
        """The recipe of the driver's ``llm``. Each worker loads it at its own default precision, as
        the driver did on its hardware: ``UHEAD_VIZ_PRECISION`` (forwarded to the workers) or int8
        on CPUs, bf16 on GPUs (the int8 kernels are CPU-only)."""
        kind, _, where = str(llm.source).partition(":")
        if kind not in ("pack", "folder", "hub") or not where:
            raise InputError(f"The model {llm.name} was not loaded by name, folder or hub id; workers cannot load it.")
        name = str(Path(where).resolve()) if kind == "folder" else where
        return cls(name, None, str(llm.fingerprint))

    def load(self) -> Any:
        from .llm import load_llm

        llm = load_llm(self.name, precision=self.precision)
        if llm.fingerprint != self.fingerprint:
            raise InputError(
                f"This worker loaded {self.name} with fingerprint {llm.fingerprint}, but the driver's has "
                f"{self.fingerprint}: the nodes hold different builds of the model. Give every node the same files."
            )
        return llm


def _head(path: str | None, llm: Any, allow_other_build: bool) -> Any:
    from .uhead import load_head

    return load_head(path, llm, allow_other_build=allow_other_build) if path else None


@dataclass(frozen=True)
class ScoreRecipe:
    """``score``: the methods the driver kept and the head it chose (a folder), or none."""

    model: ModelRecipe
    methods: tuple[str, ...]
    head: str | None = None
    allow_other_build: bool = False
    prm_family: str | None = None
    trust_remote_code: bool = False


def open_score(recipe: ScoreRecipe) -> Work:
    """Load once; then each call scores a batch of rows exactly as ``score_file`` does in one process."""
    from .method_choice import resolve_methods
    from .scoring import build_scorers, score_batch

    resolve_methods(",".join(recipe.methods), recipe.prm_family, recipe.trust_remote_code)  # registers prm:<id>
    llm = recipe.model.load()
    scorers = build_scorers(llm, list(recipe.methods), _head(recipe.head, llm, recipe.allow_other_build))
    return lambda rows: score_batch(rows, llm, scorers)


@dataclass(frozen=True)
class EvaluateRecipe:
    """``evaluate``: the methods asked for (the worker drops the same unavailable ones the driver did)."""

    model: ModelRecipe
    methods: tuple[str, ...]
    explicit: tuple[str, ...] = ()
    head: str | None = None
    allow_other_build: bool = False
    prm_family: str | None = None
    trust_remote_code: bool = False
    store: str | None = None  # a feature store folder (absolute) whose captures are reused
    store_spec: dict[str, Any] | None = None


class _Evaluator:
    """Evaluates items sent with the driver's cache identities, after checking they are its own."""

    def __init__(self, recipe: EvaluateRecipe) -> None:
        from .evaluate import head_digest, identities
        from .method_choice import build_scorers_for, resolve_methods
        from .scorers import InternalsCache

        resolve_methods(",".join(recipe.methods), recipe.prm_family, recipe.trust_remote_code)
        self.llm = recipe.model.load()
        head = _head(recipe.head, self.llm, recipe.allow_other_build)
        self.store = None
        if recipe.store:
            from .featstore import WorkerStore
            from .internals import CaptureSpec
            from .uhead import base_info

            self.store = WorkerStore(recipe.store, CaptureSpec.from_dict(recipe.store_spec or {}), base_info(self.llm))
        cache = InternalsCache(self.llm, store=self.store)
        self.scorers, _ = build_scorers_for(list(recipe.methods), self.llm, head, cache, set(recipe.explicit))
        self.by = identities(self.scorers, self.llm, head_digest(head) if head is not None else "")

    def __call__(self, work: list[dict[str, Any]]) -> list[dict[str, Any]]:
        from .evaluate import Item, evaluate_item

        out = []
        for w in work:
            if w["by"] != self.by:
                raise InputError(
                    f"This worker would score with {self.by}, the driver with {w['by']}: the nodes differ in "
                    "model, head or methods. Give every node the same files."
                )
            entries, error = evaluate_item(Item(**w["item"]), w["have"], self.scorers, self.llm, self.by)
            out.append({"entries": entries, "error": error})
        return out

    def flush(self) -> None:
        if self.store is not None:
            self.store.flush()


def open_evaluate(recipe: EvaluateRecipe) -> Work:
    return _Evaluator(recipe)


@dataclass(frozen=True)
class FeaturesRecipe:
    """``features``: the store folder (absolute; every node must reach it) and the capture recipe."""

    model: ModelRecipe
    store: str
    spec: dict[str, Any]


class _Capturer:
    """Captures into a part of the store of its own; the driver merges the parts."""

    def __init__(self, recipe: FeaturesRecipe) -> None:
        from .capture import TrunkCache
        from .featstore import WorkerStore
        from .internals import CaptureSpec
        from .uhead import base_info

        self.llm = recipe.model.load()
        self.spec = CaptureSpec.from_dict(recipe.spec)
        self.store = WorkerStore(recipe.store, self.spec, base_info(self.llm))
        self.trunks = TrunkCache()

    def __call__(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        from .train import capture_rows

        return capture_rows(rows, self.llm, self.store, self.spec, self.trunks)

    def flush(self) -> None:
        """Called after each batch: a row reported added is on disk before its result leaves."""
        self.store.flush()


def open_features(recipe: FeaturesRecipe) -> Work:
    return _Capturer(recipe)
