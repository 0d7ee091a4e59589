"""The LLM judge on the real default model (packaged Qwen2.5-Coder-1.5B-Instruct, judging itself).

Run with ``pytest -m integration``; slow (a few prompts of a few hundred tokens on a CPU).
"""

from __future__ import annotations

import pytest

from uhead_viz.labels import get_labeler
from uhead_viz.scorers import get_scorer
from uhead_viz.steps import Chain

pytestmark = pytest.mark.integration

NATALIA = (
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
    "How many clips did Natalia sell altogether in April and May?"
)
REFERENCE = (
    "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n"
    "Natalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.\n#### 72"
)
STEPS = ["Step 1: In May Natalia sold 48 / 2 = 24 clips.", "Step 2: Altogether she sold 48 + 24 = 92 clips."]


@pytest.fixture(scope="module")
def llm(real_llm):
    return real_llm  # the session's one copy (tests/conftest.py)


def test_wrong_arithmetic_step_is_judged_less_likely_correct(llm):
    labeler = get_labeler("llm-judge", llm=llm)
    chain = Chain(NATALIA, STEPS, answer="92", text="", prompt_ids=[], ids=[], spans=[])
    probs = labeler.probs(chain, REFERENCE)
    assert len(probs) == 2 and all(0.0 <= p <= 1.0 for p in probs)
    assert probs[1] < probs[0], probs
    got = labeler.label(chain, REFERENCE)
    assert len(got) == 2 and got.source == "llm-judge:Qwen2.5-Coder-1.5B-Instruct"
    assert got.labels[0] in (0, 1) and (got.labels[1] is None) == (got.labels[0] == 1)

    scorer = get_scorer("judge", llm)
    assert scorer.label == "LLM judge (Qwen2.5-Coder-1.5B-Instruct, self)"
    p_error = scorer.score([chain])[0]
    assert len(p_error) == 2 and all(0.0 <= p <= 1.0 for p in p_error)


def test_combined_multiplies_head_and_judge_on_the_real_model(llm):
    """The shipped head and the self-judge, combined as in the paper, on a chain with one wrong step."""
    from uhead_viz.scorers.combined import combine
    from uhead_viz.scoring import build_scorers, default_head, row_to_chain

    head, why = default_head(llm)
    assert head is not None, why
    chain = row_to_chain({"id": "natalia", "problem": NATALIA, "steps": STEPS}, llm)
    scorers = build_scorers(llm, ["uhead", "judge", "combined"], head)
    assert scorers["combined"].label == "UHead x LLM judge (Qwen2.5-Coder-1.5B-Instruct, self)"
    got = {name: s.score([chain])[0] for name, s in scorers.items()}
    assert all(len(v) == 2 and all(0.0 <= p <= 1.0 for p in v) for v in got.values()), got
    for k in range(2):
        assert got["combined"][k] == pytest.approx(combine(got["uhead"][k], got["judge"][k]), abs=1e-6)
        assert got["combined"][k] >= max(got["uhead"][k], got["judge"][k]) - 1e-6
    # scored on its own (a fresh cache) it computes both parts itself and agrees
    alone = build_scorers(llm, ["combined"], head)["combined"].score([chain])[0]
    assert alone == pytest.approx(got["combined"], abs=1e-4)
