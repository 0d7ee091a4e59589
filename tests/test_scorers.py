"""Scorers, the shared internals cache, score_rows and the ``score`` command, on tiny models."""

from __future__ import annotations

import json
import logging
import math

import pytest
import torch

import uhead_viz.scorers.base as scorer_base
from uhead_viz.capture import CaptureSpec, teacher_force
from uhead_viz.errors import RowError
from uhead_viz.features import token_features
from uhead_viz.scorers import InternalsCache, available, get_scorer
from uhead_viz.scorers.baselines import body_range
from uhead_viz.scoring import build_scorers, row_to_chain, score_chains, score_rows
from uhead_viz.steps import chain_from_steps
from uhead_viz.uhead import UHead, save_head

BASELINES = ["maxprob", "minprob", "perplexity", "mean_entropy", "max_entropy", "seqprob"]
SMALL = {"d_model": 32, "n_heads": 4, "d_ff": 64, "n_layers": 2}
PROBLEM = "Weng earns $12 an hour. She did 50 minutes of babysitting. How much did she earn?"
STEPS = ["12 / 60 = 0.2 dollars per minute.", "0.2 * 50 = 10 dollars.", "So she earned 10 dollars."]


def make_chain(llm, steps=STEPS, problem=PROBLEM):
    return chain_from_steps(llm.tokenizer, problem, llm.prompt_ids(problem), steps)


def test_registry_lists_every_method():
    names = available()
    assert names[0] == "uhead"
    assert set(BASELINES) <= set(names)
    with pytest.raises(KeyError, match="Unknown scoring method"):
        get_scorer("nope", None)


def test_uhead_scorer_needs_a_head(llama_llm):
    with pytest.raises(ValueError, match="needs a trained head"):
        get_scorer("uhead", llama_llm)


def test_baselines_give_one_probability_per_step(tiny_llm):
    chains = [make_chain(tiny_llm), make_chain(tiny_llm, ["7 * 8 = 56.", "56 - 6 = 50."], "What is 7 * 8 - 6?")]
    cache = InternalsCache(tiny_llm)
    for name in BASELINES:
        out = get_scorer(name, tiny_llm, cache=cache).score(chains)
        assert [len(r) for r in out] == [len(c.spans) for c in chains]
        assert all(0.0 <= v <= 1.0 and math.isfinite(v) for r in out for v in r), name


def test_baseline_formulas_and_marker_skipping(llama_llm):
    chain = make_chain(llama_llm)
    x = teacher_force(llama_llm, chain, CaptureSpec())
    scores = {n: get_scorer(n, llama_llm).score([chain])[0] for n in BASELINES}
    for k in range(len(chain.spans)):
        a, b = body_range(llama_llm.tokenizer, chain, k)
        assert chain.spans[k][0] < a < b == chain.spans[k][1]
        assert "Step" not in llama_llm.tokenizer.decode(chain.ids[a:b])
        lp, ent = x.token_logprob[a:b], x.entropy[a:b]
        m = float(lp.mean())
        assert scores["maxprob"][k] == pytest.approx(1 - math.exp(m), abs=1e-5)
        assert scores["minprob"][k] == pytest.approx(1 - math.exp(float(lp.min())), abs=1e-5)
        assert scores["perplexity"][k] == pytest.approx(-m / (1 - m), abs=1e-5)
        h = float(ent.mean())
        assert scores["mean_entropy"][k] == pytest.approx(h / (h + 1), abs=1e-5)
        assert scores["seqprob"][k] == pytest.approx(1 - math.exp(float(lp.sum())), abs=1e-5)


def test_one_forward_pass_per_chain_shared_by_all_scorers(llama_llm, monkeypatch):
    calls = []

    def counting(llm, chain, spec, **kw):
        calls.append(spec)
        return teacher_force(llm, chain, spec, **kw)

    monkeypatch.setattr(scorer_base, "teacher_force", counting)
    head = UHead.for_llm(llama_llm, spec=CaptureSpec(window=3, top_k=2, hidden_layers=(1,)), **SMALL).eval()
    scorers = build_scorers(llama_llm, ["uhead", *BASELINES], head)
    chains = [make_chain(llama_llm), make_chain(llama_llm, STEPS[:2])]
    out = score_chains(chains, scorers)
    assert len(calls) == 2
    assert calls[0] == CaptureSpec(window=5, top_k=4, hidden_layers=(1,))  # union of the head's and the default
    assert set(out[0]) == {"uhead", *BASELINES}
    # the head saw exactly its own recipe: same as computing its features directly
    f = token_features(teacher_force(llama_llm, chains[0], head.spec), head.spec)
    with torch.no_grad():
        want = torch.sigmoid(head.step_logits(f, chains[0].spans)).tolist()
    assert out[0]["uhead"] == pytest.approx(want, abs=1e-5)
    # chains scored in budget-sized chunks score the same
    monkeypatch.setattr("uhead_viz.uhead.ATTN_BUDGET", 1)
    grouped = scorers["uhead"].score(chains)
    for g, o in zip(grouped, out):
        assert g == pytest.approx(o["uhead"], abs=1e-5)
    # asking for more than the capture holds re-runs the pass once
    scorers["maxprob"].cache.get(chains[0], CaptureSpec(window=7))
    assert len(calls) == 3


def _generated_row(llm, chain, **extra):
    row = {"id": "gen-1", **chain.to_row(), "model": llm.name, "prompt_len": len(chain.prompt_ids), **extra}
    return json.loads(json.dumps(row))  # as read back from JSONL


def test_score_rows_keeps_fields_for_both_row_kinds(qwen2_llm):
    tok = qwen2_llm.tokenizer
    chain = make_chain(qwen2_llm)
    # a generated row whose ids are not what re-tokenizing its text gives (one token per byte):
    # scoring must use the ids the model wrote
    byte_ids = [tok.convert_tokens_to_ids(ch) for t in tok.convert_ids_to_tokens(chain.ids) for ch in t]
    assert tok.decode(byte_ids) == chain.text and byte_ids != chain.ids
    spans = []
    for a, b in chain.spans:
        n_before = sum(len(t) for t in tok.convert_ids_to_tokens(chain.ids[:a]))
        n_in = sum(len(t) for t in tok.convert_ids_to_tokens(chain.ids[a:b]))
        spans.append([n_before, n_before + n_in])
    gen = _generated_row(qwen2_llm, chain, ids=byte_ids, spans=spans, label=2)
    bench = {"id": "pb-1", "problem": PROBLEM, "steps": STEPS, "label": 1, "generator": "other", "scores": {"x": [0]}}
    head = UHead.for_llm(qwen2_llm, **SMALL).eval()
    out = score_rows([bench, gen], qwen2_llm, ["uhead", "maxprob", "seqprob"], head=head)
    assert out[0]["label"] == 1 and out[0]["generator"] == "other" and out[0]["steps"] == STEPS
    assert out[0]["scores"]["x"] == [0]  # earlier scores are kept
    assert out[1]["ids"] == byte_ids and out[1]["label"] == 2 and out[1]["prompt_len"] == len(chain.prompt_ids)
    for r in out:
        for m in ("uhead", "maxprob", "seqprob"):
            assert len(r["scores"][m]) == 3 and all(0 <= v <= 1 for v in r["scores"][m])
        assert r["scored_by"]["fingerprint"] == qwen2_llm.fingerprint
    assert row_to_chain(gen, qwen2_llm).ids == byte_ids
    # byte-level ids make different internals than the canonical tokenization
    assert out[0]["scores"]["maxprob"] != out[1]["scores"]["maxprob"]


def test_rows_from_another_model_are_retokenized(llama_llm):
    chain = make_chain(llama_llm)
    row = _generated_row(llama_llm, chain, model="Some-Other-Model-7B", ids=[1, 2, 3], spans=[[0, 1], [1, 2], [2, 3]])
    assert row_to_chain(row, llama_llm).ids == chain.ids


@pytest.mark.parametrize(
    "patch,msg",
    [
        ({"steps": []}, "non-empty list"),
        ({"steps": "Step 1: x"}, "non-empty list"),
        ({"problem": ""}, "problem"),
        ({"spans": [[0, 2]]}, "one \\[start, end\\] per step"),
        ({"spans": [[0, 2], [2, 2], [3, 4]]}, "bad span"),
        ({"spans": [[0, 2], [2, 3], [3, 10_000]]}, "bad span"),
        ({"ids": [10**7]}, "token ids below"),
    ],
)
def test_malformed_rows_are_refused(llama_llm, patch, msg):
    row = {**_generated_row(llama_llm, make_chain(llama_llm)), **patch}
    with pytest.raises(RowError, match=msg):
        row_to_chain(row, llama_llm)
    with pytest.raises(RowError, match="row 1"):
        score_rows([row], llama_llm, ["maxprob"])


def test_score_command(tmp_path, llama_llm, monkeypatch, caplog, capsys):
    from uhead_viz import llm as llm_module
    from uhead_viz.cli import main

    monkeypatch.setattr(llm_module, "load_llm", lambda *a, **k: llama_llm)
    ckpt = tmp_path / "checkpoints"
    ckpt.mkdir()
    monkeypatch.setenv("UHEAD_VIZ_CHECKPOINTS", str(ckpt))
    src = tmp_path / "chains.jsonl"
    gen = _generated_row(llama_llm, make_chain(llama_llm))
    lines = [
        json.dumps({"id": "a", "problem": PROBLEM, "steps": STEPS, "keep": "me"}),
        "{not json",
        json.dumps({"id": "b", "problem": PROBLEM}),
        json.dumps(gen),
        json.dumps({"problem": "What is 2 + 2?", "steps": ["2 + 2 = 4."]}),
    ]
    src.write_text("\n".join(lines) + "\n")

    out = tmp_path / "scores.jsonl"
    with caplog.at_level(logging.WARNING):
        assert main(["score", "--input", str(src), "--output", str(out), "--batch-size", "2"]) == 0
    assert "UHead is unavailable for tiny-llama" in caplog.text
    assert "line 2" in caplog.text and "line 3" in caplog.text
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["a", "gen-1", "chains-4"]
    assert rows[0]["keep"] == "me" and set(rows[0]["scores"]) == set(BASELINES)

    # resumable: a second run writes nothing new
    assert main(["score", "--input", str(src), "--output", str(out)]) == 0
    assert len(out.read_text().splitlines()) == 3

    # a head in the checkpoints folder that fits the model is picked up by default
    save_head(UHead.for_llm(llama_llm, **SMALL, mode="causal").eval(), ckpt / "tiny")
    out2 = tmp_path / "scores2.jsonl"
    assert (
        main(["score", "--input", str(src), "--output", str(out2), "--methods", "uhead,maxprob", "--limit", "1"]) == 0
    )
    rows = [json.loads(x) for x in out2.read_text().splitlines()]
    assert len(rows) == 1 and set(rows[0]["scores"]) == {"uhead", "maxprob"}
    assert rows[0]["scored_by"]["uhead_mode"] == "causal"

    # user errors are one line on stderr with exit code 2
    (tmp_path / "bad.pt").write_bytes(b"\x80\x04K\x01.")
    capsys.readouterr()
    assert main(["score", "--input", str(src), "--output", str(out2), "--head", str(tmp_path / "bad.pt")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "pickle" in err and err.count("\n") == 1
    assert main(["score", "--input", str(src), "--output", str(out2), "--methods", "uhead,bogus"]) == 2
