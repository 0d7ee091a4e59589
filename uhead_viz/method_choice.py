"""Which methods a run uses: names resolved, the head found (or its methods dropped), scorers built.

``score`` and ``evaluate`` (and their parallel workers) make these choices the same way:
``resolve_methods`` turns ``--methods`` into names, ``resolve_head`` finds the head those
methods need or leaves them out, ``build_scorers_for`` builds what can run.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from .errors import InputError

logger = logging.getLogger(__name__)


def method_classes() -> dict[str, Any]:
    from .scorers import SCORERS

    SCORERS.load_all()
    return {n: c for n, c in SCORERS.items() if ":" not in n}


def resolve_methods(
    spec: str | None, prm_family: str | None = None, trust_remote_code: bool = False, evaluation: bool = False
) -> tuple[list[str], set[str]]:
    """Method names in run order (combined scores last) and the ones named explicitly.

    ``default`` = the head and every method that is not opt-in (with ``evaluation``, also the
    trivial baselines every report holds); ``all`` = every registered method;
    ``prm:<id>`` / ``combined:<verifier>`` are registered on the way.
    """
    from .scorers.combined import PREFIX as COMBINED
    from .scorers.combined import combined_method
    from .scorers.prm import PREFIX as PRM_PREFIX
    from .scorers.prm import prm_method

    static = method_classes()
    defaults = [
        n
        for n, c in static.items()
        if not getattr(c, "opt_in", False) and (evaluation or not getattr(c, "evaluation_only", False))
    ]
    out: list[str] = []
    explicit: set[str] = set()
    for tok in [t.strip() for t in (spec or "default").split(",") if t.strip()]:
        if tok == "default":
            out += defaults
        elif tok == "all":
            out += list(static)
        elif tok.startswith(PRM_PREFIX):
            prm_method(tok, prm_family, trust_remote_code)
            out.append(tok)
            explicit.add(tok)
        elif tok.startswith(COMBINED):
            verifier = tok[len(COMBINED) :]
            if verifier.startswith(PRM_PREFIX):
                prm_method(verifier, prm_family, trust_remote_code)
            combined_method(tok)
            out.append(tok)
            explicit.add(tok)
        elif tok in static:
            out.append(tok)
            explicit.add(tok)
        else:
            raise InputError(
                f"Unknown method {tok!r}. Known: default, all, {', '.join(sorted(static))}, prm:<id>, "
                "combined:<verifier>."
            )
    uniq = list(dict.fromkeys(out))
    is_comb = [n == "combined" or n.startswith(COMBINED) for n in uniq]
    order = [n for n, c in zip(uniq, is_comb) if not c] + [n for n, c in zip(uniq, is_comb) if c]
    # stable: the head first, as everywhere else; the trivial baselines last, as reference lines
    order.sort(key=lambda n: (n != "uhead", n in static and getattr(static[n], "evaluation_only", False)))
    return order, explicit


@dataclass
class HeadChoice:
    """The head a run uses (None: no method needs one, or none fits), where it came from, and the methods left."""

    head: Any
    source: str | None
    methods: list[str]
    unavailable: dict[str, str] = field(default_factory=dict)  # method -> why it was left out


def resolve_head(
    methods: list[str], llm: Any, head_path: str | None = None, allow_other_build: bool = False,
    explicit: set[str] | frozenset[str] = frozenset(),
) -> HeadChoice:
    """The head ``methods`` need: the folder given, else the newest one in the checkpoint folders that fits ``llm``.

    When none fits, the methods that need a head are left out with a warning, unless one
    was named explicitly (an InputError saying why there is no head); an InputError too
    when nothing is left to run.
    """
    from .scorers import SCORERS
    from .scoring import default_head
    from .uhead import load_head

    needing = [m for m in methods if SCORERS[m].needs_head]
    if not needing:
        return HeadChoice(None, None, list(methods))
    if head_path:
        return HeadChoice(load_head(head_path, llm, allow_other_build=allow_other_build), head_path, list(methods))
    head, why = default_head(llm, allow_other_build=allow_other_build)
    if head is not None:
        return HeadChoice(head, why, list(methods))
    named = [m for m in needing if m in explicit]
    if named:
        raise InputError(f"{', '.join(named)} needs a head, and none fits {llm.name}: {why}.")
    left = [m for m in methods if m not in needing]
    if not left:
        raise InputError(f"Only methods needing a head were asked for, and no head fits {llm.name}: {why}.")
    logger.warning(
        "UHead is unavailable for %s: %s. Leaving out %s and scoring with %s. Train a head for this model or "
        "pass --head FOLDER.", llm.name, why, ", ".join(needing), ", ".join(left),
    )
    return HeadChoice(None, None, left, {m: f"no head: {why}" for m in needing})


def build_scorers_for(
    methods: list[str], llm: Any, head: Any, cache: Any, explicit: set[str]
) -> tuple[dict[str, Any], dict[str, str]]:
    """The scorers that can run, sharing ``cache``, and why each other method cannot.

    A method named explicitly that cannot run is an error; one that came with ``default``
    or ``all`` is left out with a warning.
    """
    from .scorers import get_scorer

    scorers: dict[str, Any] = {}
    unavailable: dict[str, str] = {}
    for m in methods:
        try:
            scorers[m] = get_scorer(m, llm, head=head, cache=cache)
        except (InputError, KeyError, ValueError) as e:
            if m in explicit:
                raise InputError(f"Method {m} cannot run: {e}") from e
            unavailable[m] = str(e)
            logger.warning("Leaving out %s: %s", m, e)
    if not scorers:
        raise InputError("No method can run: " + "; ".join(f"{k}: {v}" for k, v in unavailable.items()))
    return scorers, unavailable


def add_model_arguments(p: Any) -> None:
    """The flags that choose the model, the head and the verifiers, shared by ``score`` and ``evaluate``."""
    p.add_argument("--head", default=None, help="head checkpoint folder (default: a matching one in checkpoints/)")
    p.add_argument("--model", default=None, help="packaged name, local folder or hub id")
    p.add_argument("--allow-other-build", action="store_true", help="use a head trained on another build of the model")
    p.add_argument("--prm-family", default=None, help="family of prm:<id> methods whose family is not detected")
    p.add_argument("--trust-remote-code", action="store_true", help="allow PRMs that ship their own model code")
