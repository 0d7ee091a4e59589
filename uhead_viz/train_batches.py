"""What one training step sees: examples, the steps that count in the loss, their weights, batches.

``train.train_head`` runs the loop; this module decides what goes into each batch:

* ``targets``: the steps that count in the loss (labelled steps; after a chain's first error only
  with ``after_error_weight``), each with its target and weight.
* Weights that keep shortcuts out of the loss: ``position_pos_weights`` (position alone predicts
  nothing) and ``source_weights`` (every source weighs the same, with wrong and fine balanced inside
  it, so the largest source does not decide what the head learns and the base rate of a source
  is not a cue).
* ``loss_view``: for a head whose tokens read only their own step (``context="step"``), a step's
  logit depends on that step's tokens alone, so an example can be cut to the steps in the loss.
  PRM800K branches keep one rated step after a prefix of hundreds of tokens; cut, an epoch
  reads a third of the tokens and the attention maps shrink with the square.
* ``branch_pairs``: wrong and fine steps that follow the same prefix (PRM800K's rated
  alternatives). They differ only in content, so a ranking term on them teaches what position
  and length cannot.
"""

from __future__ import annotations

import hashlib
import random
from collections import defaultdict
from dataclasses import dataclass, field

import torch

from . import metrics
from .uhead import body_mask, collate


@dataclass
class Example:
    rid: str
    problem: str
    feats: torch.Tensor
    spans: list[list[int]]
    labels: list[int | None]
    weights: list[float] = field(default_factory=list)
    bodies: list[list[int]] = field(default_factory=list)  # spans without the "Step k:" markers
    source: str = ""  # who wrote the text and the labels (``row_source``): validation is scored per source
    # per step, a digest of the problem and the steps before it: steps with the same one branch
    # from the same prefix (``prefix_keys``); empty when unknown
    prefixes: list[str] = field(default_factory=list)
    # per step, its index in the whole chain (set by ``loss_view``, which drops steps); empty: 0, 1, ...
    positions: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.bodies:
            self.bodies = [list(s) for s in self.spans]

    def position(self, k: int) -> int:
        """Step k's index in the whole chain, what ``position_pos_weights`` is keyed on."""
        return self.positions[k] if self.positions else k


def prefix_keys(problem: str, steps: list[str]) -> list[str]:
    """Per step, a digest of the problem and the steps before it (the prefix the step continues)."""
    h = hashlib.sha1(problem.strip().encode("utf-8"))
    out = []
    for s in steps:
        out.append(h.hexdigest()[:16])
        h.update(b"\x00" + s.strip().encode("utf-8"))
    return out


def targets(e: Example, use_conf: bool, after_error_weight: float) -> list[tuple[int, float, float]]:
    """(step index, target, weight) of every step that counts in the loss."""
    first = metrics.first_error(e.labels)
    out = []
    for k, lab in enumerate(e.labels):
        if lab is not None:
            out.append((k, float(lab), float(e.weights[k]) if use_conf and e.weights else 1.0))
        elif first != -1 and k > first and after_error_weight > 0:
            out.append((k, 1.0, after_error_weight))
    return out


def position_pos_weights(
    exs: list[Example], use_conf: bool, after_error_weight: float, min_pos: float = 10.0
) -> list[float]:
    """Per step index, the weight of a wrong step that makes wrong and fine weigh the same there.

    Step indices are pooled upwards from the last one until a bucket holds ``min_pos`` (weighted)
    wrong steps, so rare late positions share one weight; a bucket with no fine steps gets 1.
    """
    pos: dict[int, float] = defaultdict(float)
    neg: dict[int, float] = defaultdict(float)
    for e in exs:
        for k, y, w in targets(e, use_conf, after_error_weight):
            if y > 0.5:
                pos[e.position(k)] += w
            else:
                neg[e.position(k)] += w
    n = max([*pos, *neg], default=-1) + 1
    out = [1.0] * n
    k = n - 1
    while k >= 0:
        lo, p, q = k, 0.0, 0.0
        while lo >= 0:
            p, q = p + pos.get(lo, 0.0), q + neg.get(lo, 0.0)
            if p >= min_pos:
                break
            lo -= 1
        lo = max(lo, 0)
        for j in range(lo, k + 1):
            out[j] = q / p if p > 0 and q > 0 else 1.0
        k = lo - 1
    return out


def source_weights(exs: list[Example], use_conf: bool, after_error_weight: float) -> dict[str, tuple[float, float]]:
    """Per source, the factors (fine, wrong) on a step's weight that give every source the same
    total and, inside it, wrong and fine steps the same total. The mean factor is 1 over all steps.

    A source with only one kind of step gets that kind's total alone (nothing to balance).
    """
    tot: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for e in exs:
        for _, y, w in targets(e, use_conf, after_error_weight):
            tot[e.source][int(y > 0.5)] += w
    if not tot:
        return {}
    all_w = sum(a + b for a, b in tot.values())
    share = all_w / len(tot)  # each source's total
    out = {}
    for src, (fine, wrong) in tot.items():
        kinds = (fine > 0) + (wrong > 0)
        out[src] = tuple(share / kinds / x if x > 0 else 0.0 for x in (fine, wrong))
    return out


def loss_view(e: Example, after_error_weight: float) -> Example:
    """``e`` cut to the steps that count in the loss, laid end to end (a head with ``context="step"``
    gives each of them the same logit as in the whole chain: a token sees only its own step)."""
    keep = [k for k, _, _ in targets(e, False, after_error_weight)]
    if not keep or len(keep) == len(e.spans) and e.spans[0][0] == 0 and e.spans[-1][1] == e.feats.shape[0]:
        return e
    pieces, spans, bodies, t = [], [], [], 0
    for k in keep:
        a, b = e.spans[k]
        ba, bb = e.bodies[k]
        pieces.append(e.feats[a:b])
        spans.append([t, t + b - a])
        bodies.append([t + ba - a, t + bb - a])
        t += b - a
    pick = lambda xs: [xs[k] for k in keep] if xs else []  # noqa: E731
    labels = [e.labels[k] for k in keep]
    return Example(e.rid, e.problem, torch.cat(pieces), spans, labels, pick(e.weights), bodies, e.source,
                   pick(e.prefixes), [e.position(k) for k in keep])


def make_batch(
    exs: list[Example], use_conf: bool, after_error_weight: float = 0.0, pos_by_step: list[float] | None = None,
    by_source: dict[str, tuple[float, float]] | None = None,
) -> tuple[torch.Tensor, ...]:
    """Padded (feats, valid, steps, pool, targets, weights) of ``exs``; a weight of 0 keeps a step out."""
    feats, valid, steps = collate([(e.feats.float(), e.spans) for e in exs])
    pool = body_mask([e.bodies for e in exs], feats.shape[1])
    s = steps.shape[1]
    y = torch.zeros(len(exs), s)
    w = torch.zeros(len(exs), s)
    for i, e in enumerate(exs):
        for k, target, weight in targets(e, use_conf, after_error_weight):
            if pos_by_step is not None and target > 0.5:
                weight *= pos_by_step[min(e.position(k), len(pos_by_step) - 1)]
            if by_source is not None:
                weight *= by_source.get(e.source, (1.0, 1.0))[int(target > 0.5)]
            y[i, k], w[i, k] = target, weight
    return feats, valid, steps, pool, y, w


def branch_pairs(exs: list[Example], after_error_weight: float = 0.0) -> list[tuple[int, int, int, int]]:
    """(i, k, j, l): step k of ``exs[i]`` is wrong, step l of ``exs[j]`` fine, and both continue the same prefix."""
    by_prefix: dict[str, tuple[list, list]] = defaultdict(lambda: ([], []))
    for i, e in enumerate(exs):
        if not e.prefixes:
            continue
        for k, y, _ in targets(e, False, after_error_weight):
            if e.labels[k] is not None:  # a rated step, not a step after the first error
                by_prefix[e.prefixes[k]][int(y > 0.5)].append((i, k))
    return [(i, k, j, m) for fine, wrong in by_prefix.values() for i, k in wrong for j, m in fine]


def pair_loss(logits: torch.Tensor, pairs: list[tuple[int, int, int, int]]) -> torch.Tensor:
    """Mean logistic ranking loss: a wrong step should score above the fine one it branches with."""
    if not pairs:
        return logits.new_zeros(())
    i, k, j, m = (torch.tensor(c) for c in zip(*pairs))
    return torch.nn.functional.softplus(logits[j, m] - logits[i, k]).mean()


def batches(lengths: list[int], order: list[int] | list[list[int]], size: int, max_tokens: int) -> list[list[int]]:
    """``order`` cut into batches of at most ``size`` items whose padded size (items x the
    longest) stays within ``max_tokens``; a longer item than that goes alone. ``order`` may hold
    groups of items (lists) instead: a group is never split, and goes alone if it is too big."""
    out: list[list[int]] = []
    cur: list[int] = []
    longest = 0
    for unit in order:
        g = unit if isinstance(unit, list) else [unit]
        t = max(longest, *(lengths[j] for j in g))
        if cur and (len(cur) + len(g) > size or (len(cur) + len(g)) * t > max_tokens):
            out.append(cur)
            cur, t = [], max(lengths[j] for j in g)
        cur.extend(g)
        longest = t
    if cur:
        out.append(cur)
    return out


def problem_groups(exs: list[Example], seed: int) -> list[list[int]]:
    """Each problem's examples as one group, groups shuffled with ``seed`` (a problem's branch pairs
    then meet in one batch)."""
    groups: dict[str, list[int]] = defaultdict(list)
    for j, e in enumerate(exs):
        groups[e.problem].append(j)
    keys = sorted(groups)
    random.Random(seed).shuffle(keys)
    return [groups[key] for key in keys]
