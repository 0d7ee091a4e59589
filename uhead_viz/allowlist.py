"""Which verifiers a web visitor may ask for: the judge, or a PRM from the server's own list.

A PRM named by a visitor would otherwise be resolved as a local folder first and a hub id
second, so a visitor could make the server read any folder it can see, learn from the
message whether a path exists, or pull any repository from the hub onto it. The web
surface (the app's PRM box and the ``verifier`` argument of ``/analyze``) therefore takes
only ids on a list the server's owner set, and checks the text before anything is read
from disk or the network. The command line is the owner's own tool and keeps accepting
folders.

The list: ``UHEAD_VIZ_PRM_ALLOW`` (comma-separated hub ids) if set, even empty; else
``prm_allowlist.txt`` at the repository root (one id a line, ``#`` comments).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from . import settings
from .errors import InputError

logger = logging.getLogger(__name__)

ENV = "UHEAD_VIZ_PRM_ALLOW"
LIST_FILE = Path(__file__).resolve().parents[1] / "prm_allowlist.txt"
# owner/name as the hub spells it: no leading dot or dash, no "..", no other slash
HUB_ID = re.compile(r"[A-Za-z0-9][\w-]*(?:\.[\w-]+)*/[A-Za-z0-9][\w-]*(?:\.[\w-]+)*")
FAMILY = re.compile(r"[a-z]+")
MAX_SHOWN = 60  # characters of a refused id echoed back


def allowed_prms() -> list[str]:
    """The PRM hub ids this server lets a visitor use (entries that are not hub ids are ignored)."""
    env = settings.prm_allow()
    if env is not None:
        raw = env
    else:
        try:
            raw = [ln.split("#", 1)[0] for ln in LIST_FILE.read_text(encoding="utf-8").splitlines()]
        except OSError:
            raw = []
    out = []
    for entry in (r.strip() for r in raw):
        if not entry:
            continue
        if HUB_ID.fullmatch(entry):
            out.append(entry)
        else:
            logger.warning("Ignoring PRM allow-list entry that is not a hub id (owner/name): %r", entry[:MAX_SHOWN])
    return out


def _listed(allowed: list[str]) -> str:
    return ", ".join(allowed) if allowed else "none: this server offers no PRM"


def web_prm(text: str) -> str:
    """``[<family>:]<hub id>`` as typed, if the id is on the list; InputError (saying nothing of the disk) if not."""
    s = (text or "").strip()
    allowed = allowed_prms()
    if not s:
        raise InputError(f"Give the PRM's hub id. This server offers: {_listed(allowed)}.")
    fam, sep, rest = s.partition(":")
    model_id = rest.strip() if sep and FAMILY.fullmatch(fam) else s
    if model_id in allowed:
        return f"{fam}:{model_id}" if model_id != s else model_id
    if HUB_ID.fullmatch(model_id) and len(model_id) <= MAX_SHOWN:
        raise InputError(f"The PRM '{model_id}' is not on this server's list. It offers: {_listed(allowed)}.")
    raise InputError(
        "PRMs are chosen by hub id from this server's list; folders and paths are not accepted here. "
        f"It offers: {_listed(allowed)}."
    )


def web_verifier(value: object) -> str | None:
    """The verifier a web request may run: None, ``judge`` or ``prm:<listed id>``; InputError otherwise."""
    v = str(value if value is not None else "").strip()
    if not v:
        return None
    if v == "judge":
        return v
    if v.startswith("prm:"):
        return "prm:" + web_prm(v[len("prm:") :])
    raise InputError(
        "verifier must be \"\" (none), \"judge\", or \"prm:<hub id>\" with an id this server offers "
        f"({_listed(allowed_prms())})."
    )
