"""What a training step sees: cut examples, source weights, branch pairs and grouped batches."""

from __future__ import annotations

import pytest
import torch

from uhead_viz import train_batches as tb
from uhead_viz.train_batches import Example, prefix_keys
from uhead_viz.uhead import UHead, UHeadConfig, body_mask, collate


def _logits(head: UHead, e: Example) -> torch.Tensor:
    feats, valid, steps = collate([(e.feats, e.spans)])
    return head(feats, valid, steps, body_mask([e.bodies], feats.shape[1]))[0]


def _example(labels: list[int | None]) -> Example:
    torch.manual_seed(0)
    spans = [[3, 10], [10, 18], [18, 25], [25, 31]]  # tokens 0-2 are the prompt, in no step
    bodies = [[a + 2, b] for a, b in spans]  # the first two tokens of a step are its "Step k:" marker
    return Example("c", "p", torch.randn(31, 8), spans, labels, [1.0, 0.9, 0.8, 0.7], bodies, "s",
                   prefix_keys("p", ["a", "b", "c", "d"]))


@pytest.mark.parametrize("after_error_weight", [0.0, 0.5])
def test_a_step_context_head_scores_a_cut_example_exactly_as_the_whole_chain(after_error_weight):
    head = UHead(UHeadConfig(n_features=8, d_model=16, n_heads=2, d_ff=32, mode="causal", context="step",
                             pool_body=True)).eval()
    e = _example([None, 0, 1, None])
    cut = tb.loss_view(e, after_error_weight)
    kept = [1, 2, 3] if after_error_weight else [1, 2]
    assert cut.labels == [e.labels[k] for k in kept] and cut.weights == [e.weights[k] for k in kept]
    assert cut.prefixes == [e.prefixes[k] for k in kept]
    assert cut.feats.shape[0] == sum(e.spans[k][1] - e.spans[k][0] for k in kept)
    with torch.no_grad():
        whole, part = _logits(head, e), _logits(head, cut)
    assert part.tolist() == pytest.approx(whole[kept].tolist(), abs=1e-5)
    # the targets and weights of the cut example are the whole one's, step for step
    *_, y, w = tb.make_batch([e], True, after_error_weight)
    *_, yc, wc = tb.make_batch([cut], True, after_error_weight)
    assert yc[0].tolist() == y[0, kept].tolist() and wc[0].tolist() == pytest.approx(w[0, kept].tolist())
    # a head that reads the whole chain would score the cut example differently: the cut is for step context only
    chain_head = UHead(UHeadConfig(n_features=8, d_model=16, n_heads=2, d_ff=32, mode="causal", pool_body=True))
    with torch.no_grad():
        assert _logits(chain_head.eval(), cut).tolist() != pytest.approx(_logits(chain_head, e)[kept].tolist())


def test_an_example_with_every_step_in_the_loss_is_not_copied():
    e = Example("c", "p", torch.zeros(6, 2), [[0, 3], [3, 6]], [0, 0])
    assert tb.loss_view(e, 0.0) is e


def test_source_weights_give_every_source_the_same_total_and_balance_wrong_and_fine_inside_it():
    def ex(src: str, labels: list[int]) -> Example:
        return Example("x", "p", torch.zeros(2 * len(labels), 2), [[2 * k, 2 * k + 2] for k in range(len(labels))],
                       labels, [1.0] * len(labels), source=src)

    exs = [ex("big", [0, 0, 0, 1])] * 30 + [ex("small", [0, 1])] * 5 + [ex("clean", [0, 0])] * 3
    by = tb.source_weights(exs, use_conf=True, after_error_weight=0.0)
    *_, y, w = tb.make_batch(exs, True, 0.0, by_source=by)
    totals = {}
    for i, e in enumerate(exs):
        wrong, fine = float((w[i] * y[i]).sum()), float((w[i] * (1 - y[i])).sum())
        t = totals.setdefault(e.source, [0.0, 0.0])
        t[0], t[1] = t[0] + wrong, t[1] + fine
    assert sum(totals["big"]) == pytest.approx(sum(totals["small"])) == pytest.approx(sum(totals["clean"]))
    assert totals["big"][0] == pytest.approx(totals["big"][1])
    assert totals["small"][0] == pytest.approx(totals["small"][1])
    assert totals["clean"][0] == 0.0  # nothing wrong there to balance
    assert float(w.sum()) == pytest.approx(30 * 4 + 5 * 2 + 3 * 2)  # the total weight is unchanged


def test_branch_pairs_join_wrong_and_fine_steps_after_the_same_prefix_only():
    def ex(steps: list[str], labels: list[int | None], problem: str = "p") -> Example:
        n = len(steps)
        return Example("x", problem, torch.zeros(2 * n, 2), [[2 * k, 2 * k + 2] for k in range(n)], labels,
                       prefixes=prefix_keys(problem, steps))

    exs = [
        ex(["a", "b", "z"], [0, 0, 0]),  # the trajectory
        ex(["a", "c"], [None, 1]),  # a wrong alternative to "b"
        ex(["a", "d"], [None, 1]),  # another one
        ex(["x", "b"], [None, 0]),  # "b" after another prefix: no pair
        ex(["a", "b"], [None, 1], problem="q"),  # the same steps in another problem: no pair
        ex(["a", "e", "f"], [None, 1, None]),  # wrong, then a step after the first error: not rated
    ]
    assert sorted(tb.branch_pairs(exs)) == [(1, 1, 0, 1), (2, 1, 0, 1), (5, 1, 0, 1)]
    assert tb.branch_pairs(exs[:1] + exs[3:5]) == []
    logits = torch.zeros(6, 3)
    logits[0, 1] = 1.0
    worse = tb.pair_loss(logits, tb.branch_pairs(exs))
    logits[[1, 2, 5], 1] = 3.0  # the wrong alternatives now score above the fine step
    assert tb.pair_loss(logits, tb.branch_pairs(exs)) < worse
    assert float(tb.pair_loss(logits, [])) == 0.0


def test_grouped_batches_never_split_a_problem():
    exs = [Example(str(j), f"p{j // 3}", torch.zeros(4, 2), [[0, 4]], [0]) for j in range(12)]
    groups = tb.problem_groups(exs, seed=1)
    assert sorted(j for g in groups for j in g) == list(range(12))
    assert all(len({exs[j].problem for j in g}) == 1 for g in groups)
    got = tb.batches([4] * 12, groups, size=5, max_tokens=1000)
    assert [len(b) for b in got] == [3, 3, 3, 3]  # two groups of 3 would pass 5 items
    assert tb.problem_groups(exs, seed=1) == groups and tb.problem_groups(exs, seed=2) != groups
    assert tb.batches([4, 4, 4], [[0, 1, 2]], size=2, max_tokens=1000) == [[0, 1, 2]]  # a big group goes alone


def test_a_cut_example_keeps_its_steps_positions_for_position_balancing():
    exs = [_example([None, 0, 1, None]), _example([0, 0, 0, 1])]
    cut = [tb.loss_view(e, 0.0) for e in exs]
    assert cut[0].positions == [1, 2] and cut[1].positions == [0, 1, 2, 3]  # (its prompt is cut off)
    want = tb.position_pos_weights(exs, True, 0.0, min_pos=1)
    assert tb.position_pos_weights(cut, True, 0.0, min_pos=1) == want
    *_, w = tb.make_batch(exs, True, 0.0, pos_by_step=want)
    *_, wc = tb.make_batch(cut, True, 0.0, pos_by_step=want)
    assert wc[0, :2].tolist() == pytest.approx(w[0, 1:3].tolist())
