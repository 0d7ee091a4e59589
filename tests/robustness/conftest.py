"""Fixtures of the robustness suite: the real default model, loaded once per session.

The model is loaded under the network guard, so the offline test can also check that
loading touched nothing outside this machine. Tests that use it carry the ``integration``
marker; the rest of the folder runs on the tiny models of ``tests/conftest.py``.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from robust_support import BadInputLog, NetGuard, record


@pytest.fixture(scope="session")
def bad_inputs():
    """Collects (surface, input, response) for the artefact's list of bad inputs."""
    log = BadInputLog()
    yield log
    log.write()


@pytest.fixture(scope="session")
def real_load() -> dict[str, Any]:
    """The default model, loaded once for the whole session, with what the load tried on the network."""
    from uhead_viz.llm import load_llm

    t0 = time.perf_counter()
    with NetGuard() as guard:
        llm = load_llm()
    seconds = time.perf_counter() - t0
    record("model_load", {"model": llm.name, "precision": llm.precision, "seconds": round(seconds, 1)})
    return {"llm": llm, "guard": guard, "seconds": seconds}


@pytest.fixture(scope="session")
def real_llm(real_load):
    return real_load["llm"]


@pytest.fixture(scope="session")
def real_engine(real_llm):
    """The app's engine on the shared model, with the head from checkpoints/ when one fits."""
    from uhead_viz.engine import Engine

    return Engine(real_llm)
