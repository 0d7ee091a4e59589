"""One scoring path: the live view and the final pass give the same scores for the same internals."""

from __future__ import annotations

import pytest
import torch

from uhead_viz.capture import CaptureSpec
from uhead_viz.engine import Engine
from uhead_viz.internals import Internals
from uhead_viz.live import LiveScorer
from uhead_viz.steps import Chain, chain_from_steps
from uhead_viz.uhead import UHead

PROBLEM = "Natalia sold 48 clips in April and half as many in May. How many clips did she sell?"
STEPS = ["48 / 2 = 24 clips in May.", "48 + 24 = 72 clips in all.", "So she sold 72 clips."]


def prefix(x: Internals, n: int) -> Internals:
    return Internals(
        attn=x.attn[:n], topk_probs=x.topk_probs[:n], token_logprob=x.token_logprob[:n], entropy=x.entropy[:n],
        hidden={li: h[:n] for li, h in x.hidden.items()},
    )


@pytest.mark.parametrize(("mode", "pool_body"), [("step", False), ("causal", True)])
def test_live_and_final_scores_are_identical_for_the_same_internals(llama_llm, mode, pool_body):
    torch.manual_seed(0)
    spec = CaptureSpec(window=4, top_k=3)
    head = UHead.for_llm(llama_llm, spec, d_model=32, n_layers=1, n_heads=2, d_ff=64, mode=mode, pool_body=pool_body)
    eng = Engine(llama_llm, head=head.eval())
    chain = chain_from_steps(llama_llm.tokenizer, PROBLEM, llama_llm.prompt_ids(PROBLEM), STEPS, "72")
    internals = eng.cache.get(chain)  # what the final pass reads
    final = {m: s.score([chain])[0] for m, s in eng.scorers().items()}
    live = LiveScorer(eng, PROBLEM)
    assert set(final) == {"uhead", *eng.baselines}
    assert live.step_scores(internals, chain) == final
    # while the chain is written: its first two steps and the tokens fed so far (into the third)
    cut = Chain(chain.problem, chain.steps[:2], None, "", chain.prompt_ids, chain.ids, chain.spans[:2])
    so_far = prefix(internals, chain.spans[2][0] + 2)
    assert live.step_scores(so_far, cut) == {m: v[:2] for m, v in final.items()}
    # an update asks only for the steps completed since the last one
    assert live.step_scores(so_far, cut, first=1) == {m: v[1:2] for m, v in final.items()}

