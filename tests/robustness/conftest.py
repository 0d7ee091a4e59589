"""Fixtures of the robustness suite: the app's engine on the real default model.

The model itself (``real_load``, ``real_llm``) is the session's one copy from ``tests/conftest.py``,
loaded under the network guard, so the offline test can also check that loading touched
nothing outside this machine. Tests that use it carry the ``integration``
marker; the rest of the folder runs on the tiny models of ``tests/conftest.py``.
"""

from __future__ import annotations

import pytest
from robust_support import BadInputLog


@pytest.fixture(scope="session")
def bad_inputs():
    """Collects (surface, input, response) for the artefact's list of bad inputs."""
    log = BadInputLog()
    yield log
    log.write()


@pytest.fixture(scope="session")
def real_engine(real_llm):
    """The app's engine on the shared model, with the head from checkpoints/ when one fits."""
    from uhead_viz.engine import Engine

    return Engine(real_llm)
