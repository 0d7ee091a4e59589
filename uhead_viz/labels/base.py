"""The labeler interface and its registry.

A labeler answers, per step of a chain, "is this step wrong?" with a label (0 fine,
1 wrong, None unknown) and a confidence, so that scorers can be trained and evaluated
against it. Labels come from very different places (cheap self-supervised checks,
human annotations) and differ in how much they can be trusted, which is why every
label carries a confidence and every set of labels names its ``source``: downstream
code can weight or filter instead of treating all labels as gold.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..registry import Registry
from ..steps import Chain


@dataclass
class StepLabels:
    """One chain's step labels: ``labels[i]`` is 0 (fine), 1 (wrong) or None (unlabelled).

    ``confidence[i]`` in [0, 1] says how much ``labels[i]`` can be trusted (0 for None).
    ``notes`` optionally explains a label (e.g. the failing equation) so a viewer can show why.
    """

    labels: list[int | None]
    confidence: list[float]
    source: str
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if len(self.labels) != len(self.confidence):
            raise ValueError(f"{len(self.labels)} labels but {len(self.confidence)} confidences")
        if self.notes and len(self.notes) != len(self.labels):
            raise ValueError(f"{len(self.labels)} labels but {len(self.notes)} notes")
        for i, (lab, c) in enumerate(zip(self.labels, self.confidence)):
            if lab not in (0, 1, None) or isinstance(lab, bool):
                raise ValueError(f"step {i}: label must be 0, 1 or None, not {lab!r}")
            if not (isinstance(c, (int, float)) and math.isfinite(c) and 0.0 <= c <= 1.0):
                raise ValueError(f"step {i}: confidence must be in [0, 1], not {c!r}")

    def __len__(self) -> int:
        return len(self.labels)


def first_error_labels(first_error: int, n_steps: int) -> list[int | None]:
    """Per-step labels from the index of the first wrong step (ProcessBench's ``label``; -1: none).

    Steps before it are 0, it is 1, and steps after it are None: once a chain has gone
    wrong, later steps build on a wrong premise, so "is this step right?" has no clean
    answer there and they are left out of training and metrics. -1 makes every step 0.
    """
    if not -1 <= first_error < n_steps:
        raise ValueError(f"first wrong step {first_error} is out of range for {n_steps} steps (-1 means none)")
    if first_error == -1:
        return [0] * n_steps
    return [0] * first_error + [1] + [None] * (n_steps - first_error - 1)


class Labeler:
    """One labelling method. Subclasses set ``name`` and implement ``label``.

    ``reference`` is the gold answer when one is known (a GSM8K ``answer`` string ending
    ``#### N``, or a plain answer); labelers that do not need it ignore it.
    """

    name: str = ""

    def label(self, chain: Chain, reference: str | None) -> StepLabels:
        """Labels for every step of ``chain`` (one per ``chain.steps`` entry)."""
        raise NotImplementedError


LABELERS = Registry("labeler", "uhead_viz.labels")
register = LABELERS.register
