"""The ``/analyze`` endpoint: a question in, the scored steps out as JSON (streamed while written)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import closing
from typing import Any

from .. import allowlist
from ..analysis import request_settings
from ..errors import InputError
from ..llm import clean_question
from ..public import scrub
from ..results import Analysis, partial_json
from . import examples as ex
from .base import OOPS, HandlerBase
from .holder import model_example, model_stream

logger = logging.getLogger("uhead_viz.app")

API_DOC = """### Use it from code
```python
from gradio_client import Client
result = Client("http://127.0.0.1:7860").predict("What is 17 * 23?", api_name="/analyze")
for step in result["steps"]:
    print(step["scores"][result["primary"]], step["text"])
```
`analyze(question, max_new_tokens=320, temperature=0.0, verifier="")` returns the steps, each with its
text and its score by every method (probability that the step is wrong). `verifier` may be `"judge"`
or `"prm:<hub id>"` with an id this server offers (the PRM box lists them); the verifier and the combined
score `1 - (1 - head)(1 - verifier)` are then added.
While the chain is written, updates marked `"partial": true` stream (`Client.submit`); `predict` returns the
final result, and `job.cancel()` stops the work at once.
"""


def api_result(analysis: dict[str, Any]) -> dict[str, Any]:
    """The JSON the ``analyze`` endpoint returns: the chain's steps, each with its text and per-method scores."""
    return Analysis.from_record(analysis).to_json()


def partial_result(view: dict[str, Any]) -> dict[str, Any]:
    """A streamed update of the API: the steps scored so far, marked ``partial``."""
    return partial_json(view)


class ApiHandlers(HandlerBase):
    def analyses(self, question: Any, max_new_tokens: Any, temperature: Any, verifier: Any) -> Iterator[dict[str, Any]]:
        """The API's answer as it grows: a partial result per streamed update, then the final one.

        Yielding while the chain is written is what lets a client's ``job.cancel()`` stop the
        work: Gradio closes a generator between two yields (which ends generation and frees
        the model at once), but cannot stop a plain function that is running.
        """
        try:
            vname = allowlist.web_verifier(verifier)  # before anything is read or loaded
            q = clean_question(question if question is not None else "")
            tokens, temp, _ = request_settings(max_new_tokens, temperature)  # refuses what is not a number
            self.holder.get()
            default = tokens == ex.DEFAULT_SETTINGS["max_new_tokens"] and temp == 0.0
            a = model_example(self.holder, q)[0] if default and not vname else None
            if a is None:
                # closed explicitly, so a cancel (GeneratorExit at a yield) stops generation at once
                with closing(model_stream(self.holder, q, max_new_tokens, temperature, vname)) as st:
                    for ev in st:
                        if ev["phase"] == "stream":
                            yield partial_result(ev["view"])
                        elif ev["phase"] == "final" and vname:
                            yield partial_result(ev["analysis"])
                        else:
                            a = ev["analysis"]
            assert a is not None
            yield api_result(a)
        except InputError as e:
            yield {"error": scrub(str(e)), "steps": []}
        except Exception as e:
            logger.exception("analyze failed")
            yield {"error": OOPS.format(e.__class__.__name__), "steps": []}

    def analyze(self, question: str, max_new_tokens: int = 320, temperature: float = 0.0, verifier: str = "") -> dict:
        """The final result of ``analyze_api`` (the stream drained)."""
        *_, final = self.analyses(question, max_new_tokens, temperature, verifier)
        return final

    def analyze_api(
        self, question: str, max_new_tokens: int = 320, temperature: float = 0.0, verifier: str = ""
    ) -> Iterator[dict]:
        """Generate a step-by-step chain for a question and score every step.

        Returns JSON: ``steps``, each with its ``text`` and ``scores`` (method -> probability the
        step is wrong), plus the model, the head, the method that colours the page (``primary``),
        the answer, and ``notes`` (e.g. a setting moved into range). ``verifier``: "" (none),
        "judge", or "prm:<hub id>" with an id on the server's list (``UHEAD_VIZ_PRM_ALLOW`` or
        ``prm_allowlist.txt``). Errors come back as ``{"error": message, "steps": []}``.
        While the chain is written, updates marked ``"partial": true`` stream first; a client's
        ``predict()`` returns the final result, and ``job.cancel()`` stops the work.
        """
        yield from self.analyses(question, max_new_tokens, temperature, verifier)
