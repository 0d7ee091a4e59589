"""The combined score: p_error = 1 - (1 - uhead)(1 - verifier), with no part scored twice."""

from __future__ import annotations

import pytest

from uhead_viz.errors import InputError
from uhead_viz.scorers import SCORERS, InternalsCache, Scorer, get_scorer
from uhead_viz.scorers.combined import Combined, combine, combined_method, results_for
from uhead_viz.steps import chain_from_steps
from uhead_viz.uhead import UHead

SMALL = {"d_model": 32, "n_heads": 4, "d_ff": 64, "n_layers": 2}
PROBLEM = "Natalia sold 48 clips in April and half as many in May. How many clips did she sell?"
STEPS = ["48 / 2 = 24 clips in May.", "48 + 24 = 72 clips in all.", "So she sold 72 clips."]


class CountingVerifier(Scorer):
    """A stand-in verifier: step k of n gets (k + 1) / (n + 1); counts the chains it scores."""

    name = "counting_verifier"
    needs_internals = False
    opt_in = True
    label = "counting verifier"
    calls = 0

    def score(self, chains):
        type(self).calls += len(chains)
        return [[(k + 1) / (len(c.steps) + 1) for k in range(len(c.steps))] for c in chains]


@pytest.fixture
def verifier(monkeypatch):
    CountingVerifier.calls = 0
    SCORERS.load_all()
    monkeypatch.setitem(SCORERS, CountingVerifier.name, CountingVerifier)
    yield CountingVerifier
    for name in [n for n in SCORERS if ":" in n]:
        del SCORERS[name]


@pytest.fixture(scope="module")
def head(llama_llm):
    return UHead.for_llm(llama_llm, **SMALL).eval()


def chains(llm):
    q = "What is 7 * 8 - 6?"
    return [
        chain_from_steps(llm.tokenizer, PROBLEM, llm.prompt_ids(PROBLEM), STEPS),
        chain_from_steps(llm.tokenizer, q, llm.prompt_ids(q), ["7 * 8 = 56.", "56 - 6 = 50."]),
    ]


def test_combine_formula():
    assert combine(0.0, 0.0) == 0.0
    assert combine(1.0, 0.0) == 1.0 and combine(0.0, 1.0) == 1.0
    assert combine(0.2, 0.5) == pytest.approx(1 - 0.8 * 0.5)


def test_default_verifier_is_the_judge_and_a_head_is_needed(llama_llm, monkeypatch, head):
    assert Combined.verifier_name == "judge" and Combined.needs_head and Combined.opt_in
    with pytest.raises(ValueError, match="needs a trained head"):
        get_scorer("combined", llama_llm)
    SCORERS.load_all()  # so the real judge module cannot register over the stand-in below
    monkeypatch.setitem(SCORERS, "judge", type("FakeJudge", (CountingVerifier,), {"name": "judge"}))
    s = get_scorer("combined", llama_llm, head=head)
    assert s.parts == ("uhead", "judge") and s.verifier.name == "judge"


def test_combined_multiplies_the_parts(llama_llm, head, verifier):
    cs = chains(llama_llm)
    name = combined_method(f"combined:{verifier.name}").name
    cache = InternalsCache(llm=llama_llm)
    comb = get_scorer(name, llama_llm, head=head, cache=cache)
    out = comb.score(cs)
    uh = get_scorer("uhead", llama_llm, head=head, cache=InternalsCache(llama_llm)).score(cs)
    ver = CountingVerifier(llama_llm).score(cs)
    for o, u, v in zip(out, uh, ver):
        assert o == pytest.approx([1 - (1 - a) * (1 - b) for a, b in zip(u, v)], abs=1e-6)
        assert all(0 <= x <= 1 for x in o)
    # the combined score is at least as alarmed as either part
    assert all(o >= max(a, b) - 1e-9 for r, u, v in zip(out, uh, ver) for o, a, b in zip(r, u, v))


def test_parts_already_scored_in_the_run_are_reused(llama_llm, head, verifier):
    cs = chains(llama_llm)
    name = combined_method(f"combined:{verifier.name}").name
    cache = InternalsCache(llama_llm)
    uh = get_scorer("uhead", llama_llm, head=head, cache=cache)
    ver = get_scorer(verifier.name, llama_llm, cache=cache)
    comb = get_scorer(name, llama_llm, head=head, cache=cache)
    memo = results_for(cache)
    memo.scores(uh, cs)  # what the evaluation loop does for each method
    memo.scores(ver, cs)
    assert verifier.calls == 2 and memo.computed == {"uhead": 2, verifier.name: 2}
    comb.score(cs)
    assert verifier.calls == 2 and memo.computed == {"uhead": 2, verifier.name: 2}  # nothing scored again
    # run alone, it computes each part once and leaves it for later methods
    memo.clear()
    comb.score(cs)
    comb.score(cs)
    assert verifier.calls == 4 and memo.computed["uhead"] == 4
    # another run (another cache) has its own memo
    assert results_for(InternalsCache(llama_llm)) is not memo


def test_combined_with_a_prm_verifier(tmp_path, llama_llm, head):
    from test_prm import build_family

    from uhead_viz.scorers.prm import prm_method

    try:
        folder = build_family("trl", tmp_path)
        prm = prm_method(f"prm:{folder}").name
        comb = get_scorer(combined_method(f"combined:{prm}").name, llama_llm, head=head)
        assert comb.needs_head and comb.verifier.name == prm and "PRM" in comb.label
        out = comb.score(chains(llama_llm))
        assert [len(r) for r in out] == [3, 2]
    finally:
        for n in [n for n in SCORERS if ":" in n]:
            del SCORERS[n]


def test_bad_verifiers_are_refused(verifier):
    with pytest.raises(KeyError, match="Unknown scoring method"):
        combined_method("combined:nope")
    for bad in ("combined:uhead", "combined:combined", "combined:combined:x", "combined:"):
        with pytest.raises(InputError):
            combined_method(bad)
    assert combined_method("combined") is Combined


def test_score_command_takes_prm_and_combined_methods(tmp_path, llama_llm, head, monkeypatch):
    """`python -m uhead_viz score --methods prm:<folder>,combined:prm:<folder>` registers both on the way."""
    import json

    from test_prm import build_family

    from uhead_viz import llm as llm_mod
    from uhead_viz.cli import main
    from uhead_viz.uhead import save_head

    monkeypatch.setattr(llm_mod, "load_llm", lambda name=None, **kw: llama_llm)
    folder = build_family("trl", tmp_path)
    save_head(head, tmp_path / "head")
    src, out = tmp_path / "chains.jsonl", tmp_path / "scored.jsonl"
    src.write_text(json.dumps({"id": "natalia", "problem": PROBLEM, "steps": STEPS}) + "\n", encoding="utf-8")
    methods = f"uhead,prm:{folder},combined:prm:{folder}"
    try:
        args = ["score", "--input", str(src), "--output", str(out), "--methods", methods]
        assert main([*args, "--head", str(tmp_path / "head"), "--prm-family", "trl"]) == 0
    finally:
        for n in [n for n in SCORERS if ":" in n]:
            del SCORERS[n]
    row = json.loads(out.read_text(encoding="utf-8"))
    scores = row["scores"]
    assert set(scores) == {"uhead", f"prm:{folder}", f"combined:prm:{folder}"}
    for k in range(3):
        want = combine(scores["uhead"][k], scores[f"prm:{folder}"][k])
        assert scores[f"combined:prm:{folder}"][k] == pytest.approx(want, abs=1e-5)
