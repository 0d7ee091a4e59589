"""Every ``UHEAD_VIZ_*`` environment variable, read in one place.

A Space, a container or a test configures the app through the environment; when each
module read its own variables, nobody could list them, and a typo in one name silently
did nothing. Here each variable has one typed accessor that reads it *when called* (so a
test's ``monkeypatch.setenv`` takes effect at once), checks it, and says in its
docstring what it does. ``describe()`` lists them for ``docs/settings.md``, which a test
keeps equal to this module.

Blank values count as unset, except for ``UHEAD_VIZ_PRM_ALLOW``, where an empty list says
"no PRM". A value that cannot be used raises ``SettingError`` (an ``InputError``) naming
the variable; the judge's raise ``JudgeConfigError``, as the rest of its configuration does.

This module imports nothing of the package but ``errors``, so any layer may read it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from .errors import InputError, JudgeConfigError

F = TypeVar("F", bound=Callable[..., object])


class SettingError(InputError):
    """An environment variable holds a value we cannot use; the message names it and says what fits."""


@dataclass(frozen=True)
class Described:
    """One variable as the docs show it."""

    var: str
    default: str
    doc: str
    accessor: str


_ACCESSORS: list[tuple[str, str, Callable[..., object]]] = []


def _setting(var: str, default: str) -> Callable[[F], F]:
    """Register an accessor under its variable, with the default as the docs should show it."""

    def deco(fn: F) -> F:
        if not fn.__doc__:
            raise TypeError(f"the accessor of {var} needs a docstring: it is the variable's documentation")
        _ACCESSORS.append((var, default, fn))
        return fn

    return deco


def _env(var: str) -> str | None:
    """The variable's value without surrounding spaces; None when unset or blank."""
    value = os.environ.get(var, "").strip()
    return value or None


def _positive(var: str, default: float, error: type[InputError] = SettingError) -> float:
    raw = _env(var)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise error(f"{var} must be a positive number, not {raw!r}.")
    return value


def _positive_int(var: str, default: int) -> int:
    value = _positive(var, default)
    if value != int(value):
        raise SettingError(f"{var} must be a whole number, not {_env(var)!r}.")
    return int(value)


# ----- the model ----------------------------------------------------------------------------------
@_setting("UHEAD_VIZ_MODEL", "the packaged `qwen-coder-1.5b`")
def model() -> str | None:
    """The model the app and the CLI load when none is named: a packaged name, a local folder or a hub id."""
    return _env("UHEAD_VIZ_MODEL")


@_setting("UHEAD_VIZ_DEVICE", "`cuda` when a GPU is present, else the CPU")
def device() -> str | None:
    """The torch device the model runs on (`cpu`, `cuda`, `cuda:1`...)."""
    return _env("UHEAD_VIZ_DEVICE")


PRECISIONS = ("int8", "w8", "bf16", "fp32")


@_setting("UHEAD_VIZ_PRECISION", "chosen for the machine (see `uhead_viz/precision.py`)")
def precision() -> str | None:
    """The numeric precision the model runs in: `int8`, `w8`, `bf16` or `fp32` (any case)."""
    value = _env("UHEAD_VIZ_PRECISION")
    if value is None:
        return None
    value = value.lower()
    if value not in PRECISIONS:
        raise SettingError(f"UHEAD_VIZ_PRECISION={value!r} is not a precision: use one of {', '.join(PRECISIONS)}.")
    return value


@_setting("UHEAD_VIZ_CACHE", "`$XDG_CACHE_HOME/uhead_viz`, else `~/.cache/uhead_viz`")
def cache_dir() -> Path:
    """Where converted models, the feature store and the API judge's replies are kept."""
    root = _env("UHEAD_VIZ_CACHE")
    if root is None:
        root = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "uhead_viz")
    return Path(root)


# ----- heads, examples and scoring ----------------------------------------------------------------
@_setting("UHEAD_VIZ_CHECKPOINTS", "`./checkpoints`, then the repository's `checkpoints/`")
def checkpoints_dir() -> Path | None:
    """The one folder searched for trained heads, instead of the defaults."""
    value = _env("UHEAD_VIZ_CHECKPOINTS")
    return Path(value).expanduser() if value else None


@_setting("UHEAD_VIZ_EXAMPLES", "`assets/examples/`")
def examples_dir() -> Path | None:
    """Where the app's stored example results are read and written."""
    value = _env("UHEAD_VIZ_EXAMPLES")
    return Path(value).expanduser() if value else None


@_setting("UHEAD_VIZ_BASELINE", "the first available of `minprob`, `mean_entropy`, `maxprob`...")
def baseline() -> str | None:
    """The baseline that colours the chain when no trained head fits the model (ignored if unknown)."""
    return _env("UHEAD_VIZ_BASELINE")


@_setting("UHEAD_VIZ_PRM_ALLOW", "the ids in `prm_allowlist.txt`")
def prm_allow() -> list[str] | None:
    """The PRM hub ids a web visitor may pick, comma-separated; set but empty, none may be picked."""
    raw = os.environ.get("UHEAD_VIZ_PRM_ALLOW")  # unlike the others, an empty value means something
    return None if raw is None else [s.strip() for s in raw.split(",") if s.strip()]


@_setting("UHEAD_VIZ_MAX_CHAIN_TOKENS", "12288")
def max_chain_tokens() -> int:
    """The most prompt + chain tokens one chain may have; a longer one is refused, never cut (read at start)."""
    return _positive_int("UHEAD_VIZ_MAX_CHAIN_TOKENS", 12288)


@_setting("UHEAD_VIZ_MAX_ROWS", "1000")
def max_rows() -> int:
    """The most rows of an uploaded file the app scores; the rest are left out with a note (read at start)."""
    return _positive_int("UHEAD_VIZ_MAX_ROWS", 1000)


@_setting("UHEAD_VIZ_MAX_UPLOAD_MB", "20")
def max_upload_bytes() -> int:
    """The largest file the app accepts, in MB (read at start: the page is built with it)."""
    return int(_positive("UHEAD_VIZ_MAX_UPLOAD_MB", 20) * 1024 * 1024)


# ----- the API judge (the `api-judge` labeler) ----------------------------------------------------
@_setting("UHEAD_VIZ_JUDGE_BASE_URL", "`$OPENAI_BASE_URL`; one of the two is required")
def judge_base_url() -> str | None:
    """The OpenAI-compatible endpoint of the API judge (`http(s)://host/v1`)."""
    return _env("UHEAD_VIZ_JUDGE_BASE_URL") or _env("OPENAI_BASE_URL")


@_setting("UHEAD_VIZ_JUDGE_MODEL", "none: required")
def judge_model() -> str | None:
    """The model the API judge asks."""
    return _env("UHEAD_VIZ_JUDGE_MODEL")


@_setting("UHEAD_VIZ_JUDGE_API_KEY", "`$OPENAI_API_KEY`, else none (local servers need none)")
def judge_api_key() -> str:
    """The API judge's key, sent as a bearer token."""
    return _env("UHEAD_VIZ_JUDGE_API_KEY") or _env("OPENAI_API_KEY") or ""


@_setting("UHEAD_VIZ_JUDGE_TIMEOUT", "120")
def judge_timeout() -> float:
    """Seconds the API judge waits for one reply."""
    return _positive("UHEAD_VIZ_JUDGE_TIMEOUT", 120.0, JudgeConfigError)


@_setting("UHEAD_VIZ_JUDGE_ATTEMPTS", "5")
def judge_attempts() -> int:
    """Requests the API judge makes for one call before it gives up on the chain."""
    return max(1, int(_positive("UHEAD_VIZ_JUDGE_ATTEMPTS", 5, JudgeConfigError)))


@_setting("UHEAD_VIZ_JUDGE_BACKOFF", "1")
def judge_backoff() -> float:
    """Seconds before the API judge's first retry; doubled per retry, up to a minute."""
    return _positive("UHEAD_VIZ_JUDGE_BACKOFF", 1.0, JudgeConfigError)


def describe() -> list[Described]:
    """Every variable, its default and what it does, in the order of this module (for the docs)."""
    return [
        Described(var, default, " ".join((fn.__doc__ or "").split()), fn.__name__) for var, default, fn in _ACCESSORS
    ]


def markdown_table() -> str:
    """``describe()`` as the Markdown table of ``docs/settings.md``."""
    rows = ["| Variable | Default | What it sets |", "| --- | --- | --- |"]
    rows += [f"| `{d.var}` | {d.default} | {d.doc} |" for d in describe()]
    return "\n".join(rows) + "\n"


if __name__ == "__main__":  # python -m uhead_viz.settings: the table of docs/settings.md
    print(markdown_table(), end="")
