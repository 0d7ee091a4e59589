"""PRM800K phase-1 *train* as training chains: people's step ratings of GPT-4 solutions to MATH problems.

Why this set: in the self-labelled GSM8K chains a step's label comes from the answer and the
arithmetic, and most wrong steps sit late in short chains, so a head can score position
instead of content. PRM800K's raters judged each step on its own, and at many points of a
solution they rated several alternative next steps for the *same* prefix: those differ only
in their content, which is the signal the head should learn. The problems are MATH
problems; none is in the phase-1 test file, MATH-500 or GSM8K (checked when the file was
added), so the evaluation sets stay unseen.

Chains (``prm800k_rows`` rebuilds them from the stepwise parquet; see ``labels/human.py``):

- per problem, the preferred trajectory (the steps the raters took, ending with the
  preferred last step) with its ratings: 0 for a good step, None for a human-written one;
- every other rated alternative at depth k as a *branch*: the trajectory's first k steps and
  the alternative. The prefix steps are left unlabelled (None) in a branch: they are the
  trajectory's, already rated once in its row, and in the causal head their features and
  outputs are exactly the trajectory's, so labelling them again would only weight the
  trajectory's early steps by how many branches fork after them. Only the alternative counts.

Steps after a chain's first wrong step are unlabelled (None), the ProcessBench convention that
``train`` also follows (``--after-error-weight 0`` leaves them out of the loss); a branch whose
prefix already holds a wrong step (5 of the 888 trajectories have one) would be rated after an
error and is dropped.

Neutral ratings (0, "reasonable, but not clearly helpful"): ``neutral="fine"`` (default),
``"wrong"`` or ``"skip"`` (the branch is dropped). Fine is the default because a neutral step
is not an error: the raters found nothing wrong in it, and the evaluation sets of this project
(``data/eval/prm800k_*``, ProcessBench) count it as fine, so a head selected on those should be
trained on the same definition. Counted as wrong, the 10,234 neutral ratings (a third of all
alternatives) would teach the head to flag valid but roundabout steps; skipped, the head never
sees the hardest negatives, the plausible steps next to the wrong ones.

``split="val"`` is a fixed 10 % of the problems (by a salted hash of the problem text, so it is
independent of ``train``'s own validation split), held out for choosing between heads.
"""

from __future__ import annotations

import hashlib
import logging
import random
from pathlib import Path
from typing import Any

from .labels.human import prm800k_rows
from .metrics import first_error

logger = logging.getLogger(__name__)

SOURCE = "prm800k-phase1-train"
ID_PREFIX = "prm800k-p1tr"
HELDOUT_FRACTION = 0.1
NEUTRAL = {"fine": 0, "wrong": 1, "skip": None}
_SALT = "prm800k-phase1-train-heldout:"


def is_heldout(problem: str, fraction: float = HELDOUT_FRACTION) -> bool:
    """Whether a problem belongs to the held-out ``val`` split (stable across runs and machines)."""
    h = int(hashlib.sha1((_SALT + problem.strip()).encode("utf-8")).hexdigest()[:8], 16)
    return h / 0xFFFFFFFF < fraction


def _after_error_unlabelled(labels: list[int | None]) -> list[int | None]:
    k = first_error(labels)
    return list(labels) if k < 0 else list(labels[: k + 1]) + [None] * (len(labels) - k - 1)


def training_chains(
    parquet: str | Path, split: str = "train", neutral: str = "fine", max_branches: int = 0, seed: int = 0,
    problems: int = 0,
) -> list[dict[str, Any]]:
    """Labelled chain rows of one split (see the module docstring), each problem's trajectory first.

    ``max_branches`` > 0 keeps at most that many branches per problem, drawn with ``seed``
    (the same problems get the same draw whatever else changes). ``problems`` > 0 keeps the
    split's first that many problems in file order, so a CPU run can capture a prefix of the
    set and a later run extend it without changing what came first. Rows carry ``labels``,
    ``label_confidence`` (1 for a rated step, 0 for None) and ``label_source``, as ``label``
    writes them, and no token ids: they are tokenized for whichever model reads them.
    """
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', not {split!r}")
    if neutral not in NEUTRAL:
        raise ValueError(f"neutral must be one of {', '.join(NEUTRAL)}, not {neutral!r}")
    rows = prm800k_rows(parquet, neutral_as=NEUTRAL[neutral], id_prefix=ID_PREFIX, source=SOURCE)
    by_problem: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_problem.setdefault(r["problem"], []).append(r)
    out: list[dict[str, Any]] = []
    dropped_after_error = dropped_neutral = taken = 0
    for problem, group in by_problem.items():
        if is_heldout(problem) != (split == "val"):
            continue
        if problems and taken == problems:
            break
        taken += 1
        main = next((r for r in group if r["id"].endswith("-main")), None)
        traj = _after_error_unlabelled(main["labels"]) if main is not None else []
        first_bad = first_error(traj)
        branches = []
        for r in group:
            if r is main:
                continue
            k = len(r["steps"]) - 1
            if r["labels"][-1] is None:  # a neutral alternative under neutral="skip"
                dropped_neutral += 1
            elif 0 <= first_bad < k:
                dropped_after_error += 1
            else:
                branches.append({**r, "labels": [None] * k + [r["labels"][-1]]})
        if max_branches and len(branches) > max_branches:
            rng = random.Random(f"{seed}:{problem}")
            branches = rng.sample(branches, max_branches)
        branches.sort(key=lambda r: (len(r["steps"]), r["id"]))  # a trunk's branches run one after another
        chosen = ([{**main, "labels": traj}] if main is not None else []) + branches
        for r in chosen:
            r["label_confidence"] = [0.0 if lab is None else 1.0 for lab in r["labels"]]
            r["label_source"] = SOURCE
            r["model"] = "gpt-4"  # written by another model: always re-tokenized for the reader
            if any(lab is not None for lab in r["labels"]):
                out.append(r)
    logger.info(
        "PRM800K train file, split %s: %d chains from %d problems (%d branches after a wrong trajectory step "
        "and %d neutral ones dropped)",
        split, len(out), len({r["problem"] for r in out}), dropped_after_error, dropped_neutral,
    )
    return out


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Sizes of a set of chain rows: chains, steps, labelled steps, characters to teacher-force.

    ``new_chars`` counts each branch's prefix once (the capture reuses its trajectory's
    cached pass and runs only the branch's new tokens), which is what the capture costs.
    """
    labels = [lab for r in rows for lab in r["labels"]]
    chars = sum(len(s) + 9 for r in rows for s in r["steps"])  # + "Step k: " and a newline
    new = sum(
        len(s) + 9
        for r in rows
        for k, s in enumerate(r["steps"])
        if r["id"].endswith("-main") or k == len(r["steps"]) - 1
    )
    return {
        "chains": len(rows),
        "problems": len({r["problem"] for r in rows}),
        "steps": len(labels),
        "labelled": sum(lab is not None for lab in labels),
        "wrong": labels.count(1),
        "fine": labels.count(0),
        "chars": chars,
        "new_chars": new,
    }
