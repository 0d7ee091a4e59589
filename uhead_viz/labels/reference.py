"""Step labels from the reference solution's results: where did a wrong chain leave the gold path?

The ``checks`` labeler knows which chains end wrong but rarely which step went wrong
(only when the arithmetic itself is broken). A reference solution says more: GSM8K
solutions annotate every intermediate result (``<<48/2=24>>24``), and a MATH solution
writes its intermediate results in the text. A step of a wrong-answer chain whose stated
result is none of the reference's results has most likely left the gold path there (a
misread quantity, a wrong operation, a wrong unit), so:

- answer correct (``answer_correct``: the answer's number, or any number it states, is the
  gold; for a two-part gold, the same set of numbers): as ``checks`` (every step 0 with the
  correct-answer confidence, a step with broken arithmetic 1); an off-reference result here is
  a valid detour, not an error;
- answer wrong: the first step that either has broken arithmetic or states an off-reference
  result is 1; the steps before it are 0 (they stayed on the gold path, ``CONF_ON_PATH``);
  later steps are unlabelled (ProcessBench convention);
- answer wrong but every step stays on the path (often: the chain answered another
  quantity, or stopped early): nothing says which step is to blame, so the chain is left
  unlabelled (a guess at the last step would be a coin flip, and teaches "last = wrong");
- no reference: nothing to compare with, so the ``checks`` labels as they are.

A step's stated results are the written results of its equations (``... = 24``), else its
numbers that are new to the chain (not in the problem or an earlier step). They are checked
against the reference's *results* (``reference_results``: what its calculations and equations
produce, the numbers it writes that the problem does not, and the gold answer), not against
the problem's numbers: a slip whose result restates a given (``72 - 24 = 48`` where 48 is
April's count and May's was asked) is off the path. Numbers match within ``REL_TOL``, and
also as percentages (x100 / /100) and as 60ths (minutes/hours), the two conversions GSM8K
solutions often leave implicit. The labeler is cheap (no model) and its figures against
human labels are in docs/benchmarks.md; it is the default for training on self-generated chains
because the local judge is ~100x slower and, on human-labelled data, not more accurate (see
``benchmarks/label_stats.py``).
"""

from __future__ import annotations

import math
import re

from ..steps import Chain, step_body
from .base import Labeler, StepLabels, first_error_labels, register
from .checks import (
    CONF_ARITH_ERROR,
    NUM_RE,
    REL_TOL,
    ChecksLabeler,
    answer_correct,
    arithmetic_errors,
    find_equations,
    reference_answer,
    safe_eval,
)

CONF_OFF_PATH = 0.7  # the first off-reference result of a wrong chain: usually the culprit
CONF_ON_PATH = 0.6  # a step of a wrong chain whose results the reference also reaches
_ANNOT = re.compile(r"<<([^<>]*)>>")
_AFTER_EQ = re.compile(r"=\s*\\?\$?\s*(-?[\d,]*\.?\d+)")


def strip_annotations(text: str) -> str:
    """A GSM8K solution without its calculator notes (``48/2 = <<48/2=24>>24`` -> ``48/2 = 24``)."""
    return _ANNOT.sub("", text)


def numbers(text: str) -> set[float]:
    """Every number written in ``text`` (thousands commas removed), as floats."""
    out: set[float] = set()
    for m in NUM_RE.findall(text.replace("−", "-")):
        v = safe_eval(m.lstrip("-"), percent=False)
        if v is not None:
            out.add(abs(v))
    return out


def reference_results(problem: str, reference: str) -> set[float]:
    """The values a correct solution reaches: results of the reference's calculator notes and
    equations, the numbers after its ``=`` signs, the numbers it writes that the problem does
    not, and the gold answer. A number of the problem counts only when the reference computes it."""
    vals: set[float] = set()
    for a in _ANNOT.findall(reference):  # GSM8K calculator notes: "48/2=24"
        v = safe_eval(a.rsplit("=", 1)[-1], percent=False)
        if v is not None:
            vals.add(abs(v))
    text = strip_annotations(reference)
    vals |= {abs(e.written) for e in find_equations(text)}
    for m in _AFTER_EQ.finditer(text):  # "x = 5", "Drive to work: 100(.60)=60"
        vals |= numbers(m.group(1))
    vals |= numbers(text) - numbers(problem)
    gold = reference_answer(reference)
    if gold is not None:
        vals |= numbers(gold)
    return vals


def _known(v: float, vals: set[float]) -> bool:
    for c in (v, v * 100, v / 100, v * 60, v / 60):
        if any(math.isclose(c, w, rel_tol=REL_TOL, abs_tol=1e-6) for w in vals):
            return True
    return False


def stated_results(body: str, seen: set[float]) -> list[float]:
    """What a step claims: its equations' written results, else its numbers new to the chain."""
    eqs = find_equations(body)
    if eqs:
        return [abs(e.written) for e in eqs]
    return [v for v in numbers(body) if not _known(v, seen)]


@register
class ReferenceLabeler(Labeler):
    """Arithmetic checks plus "first step off the reference's numbers" (rules in the module docstring)."""

    name = "reference"

    def label(self, chain: Chain, reference: str | None) -> StepLabels:
        correct = answer_correct(chain.answer, reference)
        if correct is None or correct or not chain.steps:
            # no reference, or a correct answer: exactly the ``checks`` rules
            got = ChecksLabeler().label(chain, reference)
            return StepLabels(labels=got.labels, confidence=got.confidence, source=self.name, notes=got.notes)
        n = len(chain.steps)
        bodies = [step_body(s) for s in chain.steps]
        arith = [arithmetic_errors(b) for b in bodies]
        notes = ["; ".join(f"wrong arithmetic: {e}" for e in errs) for errs in arith]
        vals = reference_results(chain.problem, str(reference))
        seen = numbers(chain.problem)
        first, why = None, ""
        for i, b in enumerate(bodies):
            if arith[i]:
                first, why = i, "arith"
                break
            off = [v for v in stated_results(b, seen) if not _known(v, vals)]
            if off:
                first, why = i, "off"
                notes[i] = f"states {', '.join(f'{v:g}' for v in off)}, which the reference never reaches"
                break
            seen |= numbers(b)
        if first is None:
            note = "the chain ends with a wrong answer, but every step matched the reference's results: unlabelled"
            return StepLabels(labels=[None] * n, confidence=[0.0] * n, source=self.name, notes=[note] * n)
        labels = first_error_labels(first, n)
        conf = [CONF_ON_PATH if y == 0 else 0.0 for y in labels]
        conf[first] = CONF_ARITH_ERROR if why == "arith" else CONF_OFF_PATH
        return StepLabels(labels=labels, confidence=conf, source=self.name, notes=notes)
