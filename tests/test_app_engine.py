"""The app's pipeline on a tiny real transformer: live step scores, the final pass, files, examples."""

from __future__ import annotations

import json

import pytest
import torch
from app_support import make_step_llm

from uhead_viz import attribution
from uhead_viz.capture import CaptureSpec, teacher_force
from uhead_viz.engine import (
    Engine,
    LiveCapture,
    complete_steps,
    parse_steps,
    read_dataset,
    row_labels,
)
from uhead_viz.errors import InputError
from uhead_viz.features import token_features
from uhead_viz.llm import ASSISTANT_PREFIX
from uhead_viz.scoring import score_rows
from uhead_viz.uhead import UHead, save_head
from uhead_viz.ui import examples as ex
from uhead_viz.ui.api import api_result

Q = "Natalia sold 48 clips in April and half as many in May. How many clips did she sell?"


@pytest.fixture(autouse=True)
def no_checkpoints(tmp_path, monkeypatch):
    ck = tmp_path / "checkpoints"
    ck.mkdir()
    monkeypatch.setenv("UHEAD_VIZ_CHECKPOINTS", str(ck))
    monkeypatch.setenv("UHEAD_VIZ_EXAMPLES", str(tmp_path / "examples"))
    return ck


@pytest.fixture(scope="module")
def step_llm(tokenizer):
    return make_step_llm(tokenizer)


def put_head(llm, folder, mode="step", seed=0, **kw):
    torch.manual_seed(seed)
    spec = CaptureSpec(window=4, top_k=3)
    head = UHead.for_llm(llm, spec, d_model=32, n_layers=1, n_heads=2, d_ff=64, mode=mode, **kw)
    head.eval()
    save_head(head, folder)
    return head


def test_complete_steps_counts_a_step_once_the_next_line_begins():
    assert complete_steps("Step 1: a = 1")[3] == 0
    assert complete_steps("Step 1: a = 1\n")[3] == 0
    assert complete_steps("Step 1: a = 1\nStep")[3] == 1
    assert complete_steps("Step 1: a = 1\nStep 2: b")[3] == 1
    assert complete_steps("Step 1: a = 1\nStep 2: b = 2\nAnswer")[3] == 2  # "Answer" before its colon
    assert complete_steps("Step 1: a = 1\nStep 2: b = 2\nAns")[3] == 1  # not yet a word
    assert complete_steps("Step 1: a = 1\nStep 2: b = 2\nAnswer: 2")[3] == 2
    assert complete_steps("Step 1: a = 1\nso a is one")[3] == 0  # a continuation line


def test_live_capture_matches_teacher_forcing(step_llm):
    """The rows kept during generation equal a teacher-forced pass over the same chain (fp32)."""
    spec = CaptureSpec(window=5, top_k=4)
    n_prefix = len(step_llm.tokenizer(ASSISTANT_PREFIX, add_special_tokens=False)["input_ids"])
    cap = LiveCapture(step_llm, spec, n_prefix)
    with cap:
        chain = step_llm.generate([Q], 80)[0]
    n = len(cap.ids)
    assert chain.ids[:n] == cap.ids and n >= len(chain.ids) - 1  # all but the last token were fed
    live = cap.internals(n)
    ref = teacher_force(step_llm, chain, spec)
    torch.testing.assert_close(live.attn, ref.attn[:n], atol=1e-4, rtol=1e-3)
    torch.testing.assert_close(live.token_logprob, ref.token_logprob[:n], atol=1e-4, rtol=1e-3)
    torch.testing.assert_close(live.entropy, ref.entropy[:n], atol=1e-4, rtol=1e-3)
    torch.testing.assert_close(live.topk_probs, ref.topk_probs[:n], atol=1e-4, rtol=1e-3)
    # no hooks are left behind
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in step_llm.model.modules())


@pytest.mark.parametrize(("mode", "pool_body"), [("step", False), ("causal", True)])
def test_stream_scores_each_step_when_complete_and_equals_the_final_pass(step_llm, no_checkpoints, mode, pool_body):
    put_head(step_llm, no_checkpoints / "h1", mode=mode, pool_body=pool_body)
    eng = Engine(step_llm)
    assert eng.primary == "uhead"
    views, final = [], None
    for ev in eng.stream(Q, max_new_tokens=80):
        if ev["phase"] == "stream":
            views.append(ev["view"])
        else:
            final = ev["analysis"]
    assert final is not None and len(final["steps"]) == 3
    # a step is scored only once complete, and its score never changes afterwards (causal)
    seen: dict[int, dict] = {}
    for v in views:
        for s in v["steps"]:
            if s["scores"] is not None:
                assert s["state"] == "done"
                seen.setdefault(s["index"], s["scores"])
                assert s["scores"] == seen[s["index"]]
            elif s["index"] < len(v["steps"]) - 1:
                pytest.fail("an earlier step is left unscored")
    assert set(seen) == {0, 1, 2}
    # first step coloured while later text was still being written
    first = next(i for i, v in enumerate(views) if v["steps"][0]["scores"])
    assert len(views[first]["steps"]) < 3 and views[first]["answer"] is None
    # live scores agree with the teacher-forced (CLI) pass
    for k, s in enumerate(final["steps"]):
        for m, p in final["live_scores"][k].items():
            assert abs(p - s["scores"][m]) < 1e-3, (k, m)
    # and the final pass equals `score` on the same row
    row = dict(final["row"], id="x")
    cli = score_rows([row], step_llm, eng.methods(), head=eng.head)[0]["scores"]
    for k, s in enumerate(final["steps"]):
        for m in eng.methods():
            assert abs(cli[m][k] - s["scores"][m]) < 1e-5


def test_head_is_picked_up_when_it_appears(step_llm, no_checkpoints):
    eng = Engine(step_llm)
    assert eng.head is None and eng.primary == "minprob"
    assert "no head checkpoint" in eng.status()["head_note"]
    a = eng.run(Q, max_new_tokens=80)
    assert "uhead" not in a["steps"][0]["scores"] and a["attribution"] is None
    put_head(step_llm, no_checkpoints / "new-head", mode="causal")
    a = eng.run(Q, max_new_tokens=80)
    assert a["primary"] == "uhead" and a["head"]["mode"] == "causal"
    assert all(0 <= s["scores"]["uhead"] <= 1 for s in a["steps"])
    assert len(a["attribution"]) == 3


def test_attribution_groups_cover_every_feature(step_llm, no_checkpoints):
    head = put_head(step_llm, no_checkpoints / "h")
    eng = Engine(step_llm)
    chain = eng.chain_of(eng.run(Q, max_new_tokens=80))
    x = eng.cache.get(chain, head.spec)
    feats = token_features(x, head.spec)
    gx, logit = attribution.grad_x_input(eng.head, feats, chain.spans, 1)
    assert gx.shape == (chain.spans[1][1], feats.shape[1])
    groups = attribution.group_totals(gx.sum(0), eng.head, step_llm)
    assert len(groups) == step_llm.n_layers * step_llm.n_heads + 3
    assert sum(g[2] for g in groups) == pytest.approx(float(gx.sum()), rel=1e-4, abs=1e-5)
    # gradient x input of the first layer's input: the logit moves with the features it reads
    e = attribution.explain(eng.head, feats, chain.spans, 1, step_llm)
    assert e["logit"] == pytest.approx(logit, abs=1e-5)
    assert len(e["tokens"]) == chain.spans[1][1]
    assert abs(e["groups"][0]["value"]) >= abs(e["groups"][-1]["value"])


def test_pasted_chain_and_parse_steps(step_llm):
    eng = Engine(step_llm)
    steps, ans = parse_steps("Step 1: 48 / 2 = 24\nso 24 in May\nStep 2: 48 + 24 = 72\nAnswer: 72")
    assert steps == ["Step 1: 48 / 2 = 24\nso 24 in May", "Step 2: 48 + 24 = 72"] and ans == "72"
    assert parse_steps("a = 1\nb = 2\n")[0] == ["a = 1", "b = 2"]
    assert parse_steps("first line\ncontinued\n\nsecond para")[0] == ["first line\ncontinued", "second para"]
    with pytest.raises(InputError):
        parse_steps("   ")
    a = eng.analyze_pasted(Q, "48 / 2 = 24 clips in May.\n48 + 24 = 72 clips.", "72")
    assert [s["body"] for s in a["steps"]] == ["48 / 2 = 24 clips in May.", "48 + 24 = 72 clips."]
    assert a["kind"] == "pasted" and len(a["attention"]) == 2
    with pytest.raises(InputError):
        eng.analyze_pasted("", "a")


def test_score_file_skips_a_bad_row_and_scores_the_rest(step_llm, tmp_path):
    eng = Engine(step_llm)
    p = tmp_path / "chains.jsonl"
    rows = [
        {"id": "pb-1", "problem": Q, "steps": ["48 / 2 = 24", "48 + 24 = 72"], "label": -1},
        {"id": "bad", "problem": Q, "steps": "not a list"},
        {"id": "pb-2", "problem": Q, "steps": ["48 / 2 = 20", "48 + 20 = 68"], "label": 0},
    ]
    p.write_text("\n".join(json.dumps(r) for r in rows) + "\n{not json\n")
    *_, (done, total, out, errors) = list(eng.score_file(p))
    assert (done, total) == (3, 3)
    assert [r["id"] for r in out] == ["pb-1", "pb-2"]
    assert out[1]["labels"] == [1, None]
    assert len(errors) == 2 and any("line 4" in e for e in errors) and any("bad" in e for e in errors)
    a = eng.analyze_row(out[1])
    assert a["steps"][0]["label"] == 1


def test_read_dataset_refuses_what_is_not_chains(tmp_path):
    bad = tmp_path / "notes.txt"
    bad.write_text("Dear diary,\nthis is not JSON.\n")
    with pytest.raises(InputError, match="No chains could be read"):
        read_dataset(bad)
    binary = tmp_path / "x.png"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    with pytest.raises(InputError, match="not a text file"):
        read_dataset(binary)
    empty = tmp_path / "e.jsonl"
    empty.write_text("")
    with pytest.raises(InputError, match="empty"):
        read_dataset(empty)
    broken_list = tmp_path / "l.json"
    broken_list.write_text("[{\"a\": 1},")
    with pytest.raises(InputError):
        read_dataset(broken_list)


def test_row_labels():
    assert row_labels({"label": 1}, 3) == [0, 1, None]
    assert row_labels({"label": -1}, 2) == [0, 0]
    assert row_labels({"labels": [0, 1, None]}, 3) == [0, 1, None]
    assert row_labels({"labels": [0, 1]}, 3) is None
    assert row_labels({}, 3) is None


def test_examples_round_trip_and_rescore_when_the_head_changes(step_llm, no_checkpoints, tmp_path):
    eng = Engine(step_llm)
    paths = ex.build(eng, log=lambda *_: None)
    assert len(paths) == len(ex.EXAMPLES) and all(p.is_file() for p in paths)
    q = ex.EXAMPLES[0]["question"]
    a, why = ex.load(eng, q)
    assert why == "stored" and a["primary"] == "minprob"
    assert ex.load(eng, "something else")[0] is None
    # another model: refused, the app generates live
    other = Engine(make_step_llm(step_llm.tokenizer, seed=5, name="other"))
    b, why = ex.load(other, q)
    assert b is None and "built with" in why
    # a head appears: the stored chain is re-scored, not regenerated
    put_head(step_llm, no_checkpoints / "h")
    c, why = ex.load(eng, q)
    assert why == "re-scored" and c["primary"] == "uhead" and c["row"]["ids"] == a["row"]["ids"]


def test_api_result_shape(step_llm):
    a = Engine(step_llm).run(Q, max_new_tokens=80)
    r = api_result(a)
    assert r["primary"] == "minprob" and r["answer"] == "72"
    assert [s["text"] for s in r["steps"]][0] == "She sold 48 / 2 = 24 clips in May."
    assert set(r["steps"][0]["scores"]) >= {"minprob", "maxprob", "mean_entropy"}
    json.dumps(r)


def test_verifier_adds_combined_scores(step_llm, monkeypatch):
    eng = Engine(step_llm)
    a = eng.run(Q, max_new_tokens=80)

    class Fixed:
        label = "fixed verifier"

        def score(self, chains):
            return [[0.5] * len(c.spans) for c in chains]

    monkeypatch.setattr(eng, "verifier", lambda name: Fixed())
    v = eng.verify(a, "judge")
    for s in v["steps"]:
        p = s["scores"]["minprob"]
        assert s["scores"]["verifier"] == 0.5
        assert s["scores"]["combined"] == pytest.approx(1 - (1 - p) * 0.5, abs=1e-5)
    assert v["verifier"]["label"] == "fixed verifier"
    assert "verifier" not in a["steps"][0]["scores"]  # the input analysis is left as it was


def test_stream_can_be_resumed_from_other_threads(step_llm):
    """Gradio resumes a streaming generator on whichever worker thread is free."""
    import threading

    eng = Engine(step_llm)
    gen = eng.stream(Q, max_new_tokens=80)
    events = []

    def step():
        try:
            events.append(next(gen))
        except StopIteration:
            events.append(None)

    while not events or events[-1] is not None:
        t = threading.Thread(target=step)
        t.start()
        t.join()
    assert any(e and e["phase"] == "final" for e in events)
    assert eng.lock.acquire(timeout=1)  # released at the end, by a thread that did not take it
    eng.lock.release()


def test_closing_the_stream_midway_stops_generation_and_frees_the_model(step_llm):
    """What Gradio does when the user presses Stop: close() the generator."""
    eng = Engine(step_llm)
    gen = eng.stream(Q, max_new_tokens=80)
    first = next(gen)
    assert first["phase"] == "stream"
    gen.close()
    assert eng.lock.acquire(timeout=5)
    eng.lock.release()
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in step_llm.model.modules())
    assert eng.run(Q, max_new_tokens=80)["answer"] == "72"  # the next request runs normally
