"""GSM8K reference solutions as chains that another author wrote: correct text the model did not write.

Why: the head is trained on the default model's own greedy chains, where almost every token
is the model's first choice. Users also score chains written by other models or people
(the PRM800K set is GPT-4's), which the model reads with lower probabilities everywhere. A
head that has only seen its own text learns "unlikely token = wrong step" and calls most
foreign steps wrong. The human-written GSM8K train solutions are the cheapest foreign text
whose steps are known to be right: one step per line, calculator annotations
(``<<48/2=24>>``) removed, the ``#### N`` line turned into the chain's answer. They are
labelled like any other chain (``label``), so a wrong reference would show up there.
"""

from __future__ import annotations

from typing import Any

from .jsonl import problem_of
from .labels.reference import strip_annotations


def gold_row(row: dict[str, Any], row_id: str) -> dict[str, Any] | None:
    """A chain row (``id, problem, steps, answer, model``) from one GSM8K row, or None if it has no steps."""
    question = (problem_of(row) or "").strip()
    solution = str(row.get("answer") or "")
    if not question or "####" not in solution:
        return None
    body, answer = solution.rsplit("####", 1)
    steps = [line.strip() for line in strip_annotations(body).splitlines() if line.strip()]
    answer = answer.strip().replace(",", "")
    if not steps or not answer:
        return None
    return {
        "id": row_id,
        "problem": question,
        "steps": steps,
        "answer": answer,
        "model": "gsm8k-reference",  # not the scoring model: its steps are re-tokenized
    }
