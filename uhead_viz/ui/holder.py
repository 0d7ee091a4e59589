"""The model behind the page: loaded once, in the background, and the model work requests run.

The page is served before the model has loaded; the first request waits for it. The
``model_*`` functions are the only code that runs the model: on ZeroGPU each runs inside
``@spaces.GPU`` (a forked worker), everywhere else it is a plain call. A holder crosses that
process boundary by reference (its key), since the worker is a fork that already holds it.
"""

from __future__ import annotations

import itertools
import logging
import threading
import weakref
from collections.abc import Iterator
from contextlib import closing
from typing import Any

from .. import settings, zerogpu
from ..engine import Engine
from ..errors import InputError, PackError
from ..llm import load_llm, model_env_default
from ..public import scrub
from . import examples as ex
from . import render

logger = logging.getLogger(__name__)

_KEYS = itertools.count()
_HOLDERS: weakref.WeakValueDictionary[int, EngineHolder] = weakref.WeakValueDictionary()


def _holder(key: int) -> EngineHolder:
    """The holder with this key (how a pickled holder is found again in a forked worker)."""
    return _HOLDERS[key]


class EngineHolder:
    """Loads the model (and finds its head) once, in the background, and hands the engine to requests."""

    def __init__(self, name: str | None = None, engine: Engine | None = None) -> None:
        self.name = name or (engine.llm.name if engine else model_env_default())
        self.engine = engine
        self.error: str | None = None
        self.ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self.key = next(_KEYS)
        _HOLDERS[self.key] = self
        if engine is not None:
            self.ready.set()

    def __reduce__(self) -> tuple[Any, tuple[int]]:
        # a model, threads and locks cannot be pickled; the worker already has this holder
        return _holder, (self.key,)

    def start(self) -> None:
        with self._start_lock:
            if not self.ready.is_set() and self._thread is None:
                self._thread = threading.Thread(target=self._load, daemon=True, name="uhead-load")
                self._thread.start()

    def load(self, warm: bool = True) -> None:
        """Load now, in this thread (ZeroGPU places the model when the app is imported)."""
        if not self.ready.is_set():
            self._load(warm)

    def _load(self, warm: bool = True) -> None:
        try:
            import torch

            device = settings.device() or ("cuda" if torch.cuda.is_available() else None)
            self.engine = Engine(load_llm(self.name, device=device))
            if warm:  # a forward pass: on ZeroGPU only inside @spaces.GPU
                self.engine.warm()
        except (PackError, OSError, ValueError) as e:
            self.error = str(e)
            logger.error("Model failed to load: %s", e)
        except Exception as e:  # never leave requests waiting forever
            self.error = f"{e.__class__.__name__}: {e}"
            logger.exception("Model failed to load")
        finally:
            if self.engine is None and not self.error:  # e.g. SystemExit or MemoryError in the loader
                self.error = "the model loader stopped without a result"
            self.ready.set()

    def get(self) -> Engine:
        """The engine, once loaded; InputError at once if loading failed or the loader died."""
        self.start()  # a request before the app started the loader starts it
        while not self.ready.wait(0.5):
            th = self._thread
            if th is not None and not th.is_alive() and not self.ready.is_set():
                self.error = self.error or "the model loader stopped without a result"
                self.ready.set()
        if self.engine is None:
            raise InputError(f"The model is not available: {scrub(self.error or 'unknown error')}")
        return self.engine

    def status_html(self) -> str:
        if not self.ready.is_set():
            return render.status_html(None, loading=self.name)
        if self.engine is None:
            return render.status_html(None, error=scrub(self.error or ""))
        self.engine.refresh_head()
        return render.status_html(self.engine.status())


# ----- model work (inside @spaces.GPU on ZeroGPU; plain calls elsewhere) --------------------------
@zerogpu.model_work
def model_stream(
    holder: EngineHolder, question: str, max_new_tokens: Any, temperature: Any, verifier: str | None
) -> Iterator[dict]:
    """The engine's stream events; closing this generator stops generation at once."""
    with closing(holder.get().stream(question, max_new_tokens, temperature, verifier=verifier)) as st:
        yield from st


@zerogpu.model_work
def model_example(holder: EngineHolder, question: str) -> tuple[dict[str, Any] | None, str]:
    """An example's stored result (re-scored when only the head changed), or (None, why not)."""
    return ex.load(holder.get(), question)


@zerogpu.model_work
def model_verify(holder: EngineHolder, analysis: dict[str, Any], name: str) -> dict[str, Any]:
    return holder.get().verify(analysis, name)


@zerogpu.model_work
def model_paste(holder: EngineHolder, problem: str, steps: str, answer: str | None) -> dict[str, Any]:
    return holder.get().analyze_pasted(problem, steps, answer)


@zerogpu.model_work
def model_row(holder: EngineHolder, row: dict[str, Any]) -> dict[str, Any]:
    return holder.get().analyze_row(row)


@zerogpu.model_work
def model_score_file(
    holder: EngineHolder, path: str
) -> Iterator[tuple[int, int, list[dict[str, Any]], list[str]]]:
    yield from holder.get().score_file(path)
