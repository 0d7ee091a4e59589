"""Typed results: one scored step, and one analysed chain.

Two shapes of the same thing, both plain JSON:

- the *record* (``to_record`` / ``from_record``): everything the page needs to draw a chain
  and its "why" plots (tokens, attention, attribution, the chain's ids and spans). It is what
  a stored example holds, what an exported chain's JSON holds, and what the engine returns;
  a record read and written again is the same dict, keys unknown to this module included.
- the *API* shape (``to_json`` / ``from_json``): what the ``analyze`` endpoint returns, each
  step with its text (marker dropped) and its score by every method.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .public import shown_path

# The record's keys that have a typed field; every other key (the views' data, a dataset
# row's id, an example's id, timings) is carried through untouched in ``fields``.
TYPED = ("question", "steps", "primary", "threshold", "model", "head", "answer", "stop_reason", "verifier", "notes")
STEP_KEYS = ("index", "text", "body", "span", "scores")


@dataclass
class StepResult:
    """One step: its text as written (``text``, with its ``Step k:`` marker), without the marker
    (``body``), and its score by every method (probability that it is wrong for the head)."""

    index: int
    text: str
    body: str
    scores: dict[str, float]
    span: list[int] | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. a dataset row's ``label``
    present: tuple[str, ...] = STEP_KEYS  # the record's own keys, so it is written back as it came

    @classmethod
    def from_record(cls, d: dict[str, Any]) -> StepResult:
        return cls(
            index=int(d["index"]),
            text=d.get("text", ""),
            body=d.get("body", d.get("text", "")),
            scores=dict(d.get("scores") or {}),
            span=list(d["span"]) if d.get("span") is not None else None,
            extra={k: v for k, v in d.items() if k not in STEP_KEYS},
            present=tuple(k for k in STEP_KEYS if k in d),
        )

    def to_record(self) -> dict[str, Any]:
        values = {"index": self.index, "text": self.text, "body": self.body, "span": self.span,
                  "scores": dict(self.scores)}
        return {**{k: values[k] for k in self.present}, **self.extra}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> StepResult:
        return cls(index=int(d["index"]), text=d["text"], body=d["text"], scores=dict(d["scores"]))

    def to_json(self) -> dict[str, Any]:
        """The step as the API returns it."""
        return {"index": self.index, "text": self.body, "scores": dict(self.scores)}


@dataclass
class Analysis:
    """One analysed chain: its steps, the model and head that scored them, and what the views draw."""

    question: str | None
    steps: list[StepResult]
    primary: str | None = None
    threshold: float | None = None
    model: dict[str, Any] = field(default_factory=dict)
    head: dict[str, Any] | None = None
    answer: str | None = None
    stop_reason: str | None = None
    verifier: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)
    # what the page's views and a re-scoring need; absent from the API's answer
    fields: dict[str, Any] = field(default_factory=dict)
    present: tuple[str, ...] = TYPED  # the record's keys in their order, so it is written back as it came

    @classmethod
    def from_record(cls, d: dict[str, Any]) -> Analysis:
        return cls(
            question=d.get("question"),
            steps=[StepResult.from_record(s) for s in d.get("steps") or []],
            primary=d.get("primary"),
            threshold=d.get("threshold"),
            model=d.get("model") or {},
            head=d.get("head"),
            answer=d.get("answer"),
            stop_reason=d.get("stop_reason"),
            verifier=d.get("verifier"),
            notes=list(d.get("notes") or []),
            fields={k: v for k, v in d.items() if k not in TYPED},
            present=tuple(d),
        )

    def to_record(self) -> dict[str, Any]:
        """The analysis as the engine wrote it: the same keys, in the same order."""
        typed = {
            "question": self.question, "steps": [s.to_record() for s in self.steps], "primary": self.primary,
            "threshold": self.threshold, "model": self.model, "head": self.head, "answer": self.answer,
            "stop_reason": self.stop_reason, "verifier": self.verifier, "notes": list(self.notes),
        }
        if self.notes and "notes" not in self.present:
            self.present += ("notes",)
        out = {k: typed[k] if k in TYPED else self.fields[k] for k in self.present if k in TYPED or k in self.fields}
        out.update((k, v) for k, v in self.fields.items() if k not in out)
        return out

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Analysis:
        """An analysis from the API's answer (the views' data is not in it)."""
        model = {"name": d["model"]} if d.get("model") is not None else {}
        head = {"path": d["head"]} if d.get("head") is not None else None
        verifier = {"name": d["verifier"]} if d.get("verifier") is not None else None
        return cls(
            question=d.get("question"), steps=[StepResult.from_json(s) for s in d.get("steps") or []],
            primary=d.get("primary"), threshold=d.get("threshold"), model=model, head=head,
            answer=d.get("answer"), stop_reason=d.get("stop_reason"), verifier=verifier,
            notes=list(d.get("notes") or []),
        )

    def to_json(self) -> dict[str, Any]:
        """What the ``analyze`` endpoint returns."""
        return {
            "question": self.question,
            "model": self.model.get("name"),
            "head": shown_path((self.head or {}).get("path")),  # never the server's absolute path
            "primary": self.primary,
            "threshold": self.threshold,
            "answer": self.answer,
            "stop_reason": self.stop_reason,
            "verifier": (self.verifier or {}).get("name"),
            "steps": [s.to_json() for s in self.steps],
            "notes": list(self.notes),
        }


def partial_json(view: dict[str, Any]) -> dict[str, Any]:
    """A streamed update of the API: the steps of a live view that are scored so far, marked ``partial``."""
    steps = [StepResult.from_record(s).to_json() for s in view.get("steps", []) if s.get("scores")]
    return {"question": view.get("question"), "partial": True, "steps": steps}
