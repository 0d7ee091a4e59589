"""Hugging Face ZeroGPU support, and a no-op everywhere else.

On a ZeroGPU Space a GPU is attached only while a function decorated with ``@spaces.GPU``
runs, and that function runs in a forked worker process. So the model is loaded (and
placed on ``cuda``) when the app is imported, and only the model work, not the page's HTML
or plots, runs inside the decorator: ``model_work`` wraps one engine call.

Two things cross the process boundary: results are pickled (our analyses are plain dicts),
and an exception reaches the app as a generic ``gr.Error``. ``model_work`` therefore carries
an ``InputError`` across as a value and raises it again on the app's side, so a visitor
still reads the message that says what to fix.

``spaces`` must be imported before anything initialises CUDA, which is why this module
imports it at once and does not import torch at the top: ``app.py`` imports it first.
"""

from __future__ import annotations

import functools
import inspect
import logging
import os
from collections.abc import Callable, Iterator
from typing import Any

logger = logging.getLogger(__name__)

try:
    import spaces  # type: ignore[import-not-found]
except ImportError:  # not on a Space, or a Space without the package
    spaces = None

_ERROR = "__uhead_viz_input_error__"


def on_zero_gpu() -> bool:
    """Whether this is a ZeroGPU Space (the ``spaces`` package and the platform's flag)."""
    if spaces is None:
        return False
    try:
        from spaces.config import Config  # type: ignore[import-not-found]

        return bool(Config.zero_gpu)
    except (ImportError, AttributeError):
        return os.environ.get("SPACES_ZERO_GPU", "").lower() in ("1", "t", "true")


def enabled() -> bool:
    """``spaces`` is importable and a GPU is present: load at import, decorate the model work."""
    if spaces is None:
        return False
    if on_zero_gpu():
        return True
    import torch

    return torch.cuda.is_available()


def gpu(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``spaces.GPU(fn)`` when enabled, else ``fn`` itself."""
    if not enabled():
        return fn
    return spaces.GPU(fn)


def model_work(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Run ``fn`` (a function or a generator function) under ``gpu``, with InputError kept intact."""
    from .errors import InputError

    if inspect.isgeneratorfunction(fn):

        def boxed_gen(*args: Any, **kw: Any) -> Iterator[Any]:
            try:
                for item in fn(*args, **kw):
                    yield None, item
            except InputError as e:
                yield _ERROR, str(e)

        boxed_gen.__name__ = boxed_gen.__qualname__ = f"{fn.__name__}_on_gpu"
        inner_gen = gpu(boxed_gen)

        @functools.wraps(fn)
        def outer_gen(*args: Any, **kw: Any) -> Iterator[Any]:
            gen = inner_gen(*args, **kw)
            try:
                for tag, item in gen:
                    if tag == _ERROR:
                        raise InputError(item)
                    yield item
            finally:
                close = getattr(gen, "close", None)
                if close is not None:
                    close()  # a cancelled request stops the model work at once

        return outer_gen

    def boxed(*args: Any, **kw: Any) -> tuple[str | None, Any]:
        try:
            return None, fn(*args, **kw)
        except InputError as e:
            return _ERROR, str(e)

    boxed.__name__ = boxed.__qualname__ = f"{fn.__name__}_on_gpu"
    inner = gpu(boxed)

    @functools.wraps(fn)
    def outer(*args: Any, **kw: Any) -> Any:
        tag, value = inner(*args, **kw)
        if tag == _ERROR:
            raise InputError(value)
        return value

    return outer
