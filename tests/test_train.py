"""The training recipe on a tiny model: feature store, reference labels, train/resume, commands."""

from __future__ import annotations

import json
import math

import pytest
import torch

from uhead_viz.capture import CaptureSpec
from uhead_viz.errors import InputError
from uhead_viz.featstore import INDEX, FeatureStore
from uhead_viz.labels import get_labeler
from uhead_viz.steps import Chain
from uhead_viz.train import TrainConfig, extract_features, is_val, load_examples, predict, train_head
from uhead_viz.uhead import base_info, load_head

SPEC = CaptureSpec(window=3, top_k=2)
GOLD = "Half of 48 is 48/2 = <<48/2=24>>24.\nIn all 48+24 = <<48+24=72>>72.\n#### 72"


def chain(steps: list[str], answer: str | None, problem: str = "Natalia sold 48 clips, then half as many.") -> Chain:
    return Chain(problem=problem, steps=steps, answer=answer, text="", prompt_ids=[], ids=[], spans=[], meta={})


# ----- reference labeler ---------------------------------------------------------------------
def test_reference_labels_a_correct_chain_fine():
    lab = get_labeler("reference").label(chain(["Step 1: 48 / 2 = 24.", "Step 2: 48 + 24 = 72."], "72"), GOLD)
    assert lab.labels == [0, 0]
    assert all(c > 0 for c in lab.confidence)


def test_reference_finds_the_first_step_off_the_gold_path():
    c = chain(["Step 1: 48 / 2 = 24.", "Step 2: 48 * 2 = 96.", "Step 3: 96 + 24 = 120."], "120")
    lab = get_labeler("reference").label(c, GOLD)
    assert lab.labels == [0, 1, None]
    assert "96" in lab.notes[1]


def test_reference_prefers_broken_arithmetic_and_handles_no_reference():
    c = chain(["Step 1: 48 / 2 = 25.", "Step 2: 48 + 25 = 73."], "73")
    assert get_labeler("reference").label(c, GOLD).labels == [1, None, ]
    assert get_labeler("reference").label(c, None).labels == [1, None]
    fine = chain(["Step 1: 48 / 2 = 24."], "24")
    assert get_labeler("reference").label(fine, None).labels == [None]


def test_reference_leaves_a_wrong_chain_unlabelled_when_every_result_is_on_the_path():
    c = chain(["Step 1: 48 / 2 = 24.", "Step 2: So the answer is 24."], "24")
    lab = get_labeler("reference").label(c, GOLD)
    assert lab.labels == [None, None] and lab.confidence == [0.0, 0.0]  # no coin flip on the last step
    assert "unlabelled" in lab.notes[-1]


def test_reference_flags_a_result_that_restates_a_number_of_the_problem():
    # 72 - 24 = 48 is right arithmetic, and 48 is in the problem, but the reference never computes it
    c = chain(["Step 1: 48 / 2 = 24.", "Step 2: 72 - 24 = 48.", "Step 3: So 48."], "48")
    lab = get_labeler("reference").label(c, GOLD)
    assert lab.labels == [0, 1, None] and "48" in lab.notes[1]
    # a result the reference does compute is on the path even when the problem states it too
    gold = "She has 12*4 = <<12*4=48>>48 clips.\n48+24 = <<48+24=72>>72.\n#### 72"
    c = chain(["Step 1: 12 * 4 = 48.", "Step 2: 48 + 20 = 68."], "68")
    assert get_labeler("reference").label(c, gold).labels == [0, 1]


def test_reference_accepts_any_stated_number_and_two_part_answers():
    c = chain(["Step 1: 48 / 2 = 24.", "Step 2: 48 + 24 = 72."], "72 clips in all, 24 in May")
    assert get_labeler("reference").label(c, GOLD).labels == [0, 0]
    c = chain(["Step 1: The roots are 3 and 2."], "x = 3 or x = 2", problem="Solve x^2-5x+6=0.")
    assert get_labeler("reference").label(c, "2, 3").labels == [0]
    assert get_labeler("reference").label(c, "2, 4").labels == [1]  # 3 is not a root the reference finds


def test_reference_accepts_percent_and_minute_conversions():
    gold = "It takes 1.5 hours.\n#### 90"
    c = chain(["Step 1: 1.5 hours is 1.5 * 60 = 90 minutes."], "90", problem="How many minutes is 1.5 hours?")
    assert get_labeler("reference").label(c, gold).labels == [0]


# ----- feature store -----------------------------------------------------------------------
def test_feature_store_round_trip_resume_and_orphans(tmp_path):
    base = {"name": "m", "fingerprint": "f"}
    with FeatureStore(tmp_path, SPEC, base, shard_size=2) as st:
        for i in range(3):
            st.add(f"k{i}", f"r{i}", torch.full((4, 5), float(i)), [[0, 2], [2, 4]])
        st.add("k0", "dup", torch.zeros(1, 5), [[0, 1]])  # same chain again: kept once
    (tmp_path / "shard-00007.safetensors").write_bytes(b"orphan")  # a shard whose index lines never landed
    st = FeatureStore(tmp_path, SPEC, base)
    assert len(st) == 3 and "k2" in st
    got = st.load()
    assert torch.equal(got["k1"][0], torch.full((4, 5), 1.0, dtype=torch.float16))
    assert got["k1"][1] == [[0, 2], [2, 4]]
    st.add("k3", "r3", torch.ones(2, 5), [[0, 2]])
    st.close()
    assert (tmp_path / "shard-00008.safetensors").exists()  # never overwrites anything on disk
    with open(tmp_path / INDEX, "a", encoding="utf-8") as f:
        f.write('{"key": "torn')  # a killed writer's half line
    assert len(FeatureStore(tmp_path, SPEC, base)) == 4


def test_feature_store_refuses_another_recipe(tmp_path):
    FeatureStore(tmp_path, SPEC, {"name": "m", "fingerprint": "f"}).close()
    with pytest.raises(InputError, match="another model or feature recipe"):
        FeatureStore(tmp_path, CaptureSpec(window=4, top_k=2), {"name": "m", "fingerprint": "f"})


def test_feature_store_absorbs_a_parallel_jobs_store(tmp_path):
    base = {"name": "m", "fingerprint": "f"}
    with FeatureStore(tmp_path / "a", SPEC, base, shard_size=2) as a:
        a.add("k0", "r0", torch.zeros(2, 5), [[0, 2]])
    with FeatureStore(tmp_path / "b", SPEC, base, shard_size=2) as b:
        for i in range(3):  # k0 again: the same chain captured by both jobs
            b.add(f"k{i}", f"r{i}", torch.full((3, 5), float(i)), [[0, 1], [1, 3]])
    a = FeatureStore(tmp_path / "a", SPEC, base)
    assert a.absorb(tmp_path / "b") == 2
    assert a.absorb(tmp_path / "b") == 0  # merging twice adds nothing
    again = FeatureStore(tmp_path / "a", SPEC, base)  # what a later job sees on disk
    got = again.load()
    assert sorted(got) == ["k0", "k1", "k2"]
    assert torch.equal(got["k0"][0], torch.zeros(2, 5, dtype=torch.float16))  # its own copy kept
    assert torch.equal(got["k2"][0], torch.full((3, 5), 2.0, dtype=torch.float16))
    assert got["k2"][1] == [[0, 1], [1, 3]]
    FeatureStore(tmp_path / "c", SPEC, {"name": "other", "fingerprint": "g"}).close()
    with pytest.raises(InputError, match="another model or feature recipe"):
        again.absorb(tmp_path / "c")
    with pytest.raises(InputError, match="not a feature store"):
        again.absorb(tmp_path / "nothing")


def test_gold_chains_are_reference_solutions_without_annotations(tmp_path):
    from uhead_viz.cli import main

    src = tmp_path / "train.jsonl"
    rows = [{"question": "Natalia sold 48 clips, then half as many.", "answer": GOLD}, {"question": "q", "answer": "x"}]
    src.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    out = tmp_path / "gold.jsonl"
    for _ in range(2):  # a rerun appends nothing
        assert main(["gold-chains", "--input", str(src), "--output", str(out)]) == 0
    got = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    steps = ["Half of 48 is 48/2 = 24.", "In all 48+24 = 72."]
    want = {"id": "gold-train-0", "problem": rows[0]["question"], "steps": steps, "answer": "72"}
    assert got == [{**want, "model": "gsm8k-reference"}]
    lab = get_labeler("reference").label(chain(got[0]["steps"], got[0]["answer"], got[0]["problem"]), GOLD)
    assert lab.labels == [0, 0]


def _flat(xs: list[list[float]]) -> list[float]:
    return [v for x in xs for v in x]


# ----- training ----------------------------------------------------------------------------
def _rows(llm, n: int = 24) -> list[dict]:
    """Chains whose wrong steps say "wrong" and fine steps "right", so a head can learn them."""
    rows = []
    for i in range(n):
        bad = i % 3
        steps = [f"Step {k + 1}: {'7 wrong' if bad and k == bad else 'is right'} {i}" for k in range(3)]
        labels = [0, 0, 0] if not bad else [0] * bad + [1] + [None] * (2 - bad)
        rows.append(
            {"id": f"q{i}", "problem": f"question number {i}", "steps": steps, "labels": labels,
             "label_confidence": [1.0 if x is not None else 0.0 for x in labels]}
        )
    return rows


@pytest.fixture
def prepared(tmp_path, llama_llm):
    rows = _rows(llama_llm)
    store = FeatureStore(tmp_path / "store", SPEC, base_info(llama_llm))
    assert extract_features(rows, llama_llm, store, SPEC) == len(rows)
    assert extract_features(rows, llama_llm, store, SPEC) == 0  # resumable: nothing twice
    return rows, store


def test_split_is_by_question_and_stable():
    assert is_val("a question", 0.5) == is_val("a question ", 0.5)
    share = sum(is_val(f"q {i}", 0.2) for i in range(2000)) / 2000
    assert 0.15 < share < 0.25


def test_train_writes_a_loadable_checkpoint_with_metrics(tmp_path, llama_llm, prepared):
    rows, store = prepared
    exs = load_examples(rows, store)
    assert len(exs) == len(rows)
    cfg = TrainConfig(d_model=32, n_layers=1, n_heads=2, d_ff=64, max_epochs=6, val_fraction=0.3, lr=3e-3)
    head = train_head(exs, base_info(llama_llm), SPEC, cfg, tmp_path / "ckpt", {"files": ["x"]})
    cfgj = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert cfgj["training"]["data"] == {"files": ["x"]}
    assert 0.0 <= cfgj["threshold"] <= 1.0
    v = cfgj["metrics"]["validation"]
    assert not math.isnan(v["pr_auc"]) and 0 <= v["roc_auc"] <= 1
    again = load_head(tmp_path / "ckpt", llama_llm)
    assert _flat(predict(again, exs[:3])) == pytest.approx(_flat(predict(head, exs[:3])), abs=1e-6)


def test_training_resumes_where_it_stopped(tmp_path, llama_llm, prepared):
    rows, store = prepared
    exs = load_examples(rows, store)
    kw = dict(d_model=32, n_layers=1, n_heads=2, d_ff=64, val_fraction=0.3, lr=3e-3, patience=100)
    full = train_head(exs, base_info(llama_llm), SPEC, TrainConfig(max_epochs=4, **kw), tmp_path / "a")
    train_head(exs, base_info(llama_llm), SPEC, TrainConfig(max_epochs=2, **kw), tmp_path / "b")
    state = json.loads((tmp_path / "b" / ".train_state" / "state.json").read_text())
    assert state["epoch"] == 2
    # the same settings with more epochs is another config, so resume with the first config's
    # state by continuing in the same folder under the full run's settings
    (tmp_path / "b" / ".train_state" / "state.json").write_text(
        json.dumps({**state, "fingerprint": json.loads((tmp_path / "a" / ".train_state" / "state.json").read_text())[
            "fingerprint"]})
    )
    resumed = train_head(exs, base_info(llama_llm), SPEC, TrainConfig(max_epochs=4, **kw), tmp_path / "b")
    assert _flat(predict(resumed, exs[:4])) == pytest.approx(_flat(predict(full, exs[:4])), abs=1e-5)


def test_step_context_training_with_balanced_sources_and_branch_pairs(tmp_path, llama_llm):
    from uhead_viz.train_batches import branch_pairs

    rows = [{**r, "label_source": "main"} for r in _rows(llama_llm)]
    for r in rows[::3]:  # a wrong alternative to the second step of every correct chain, by another labeller
        steps = [r["steps"][0], f"Step 2: 7 wrong {r['id']}"]
        rows.append({"id": r["id"] + "-alt", "problem": r["problem"], "steps": steps, "labels": [None, 1],
                     "label_confidence": [0.0, 1.0], "label_source": "branches"})
    store = FeatureStore(tmp_path / "store", SPEC, base_info(llama_llm))
    extract_features(rows, llama_llm, store, SPEC)
    exs = load_examples(rows, store)
    assert len(branch_pairs(exs)) == 8 and {e.source for e in exs} == {"main/", "branches/"}
    cfg = TrainConfig(d_model=32, n_layers=1, n_heads=2, d_ff=64, max_epochs=3, val_fraction=0.3, lr=3e-3,
                      context="step", balance_sources=True, pair_weight=1.0)
    head = train_head(exs, base_info(llama_llm), SPEC, cfg, tmp_path / "ckpt")
    saved = json.loads((tmp_path / "ckpt" / "config.json").read_text())["training"]["config"]
    assert saved["balance_sources"] is True and saved["pair_weight"] == 1.0
    again = load_head(tmp_path / "ckpt", llama_llm)
    assert _flat(predict(again, exs)) == pytest.approx(_flat(predict(head, exs)), abs=1e-6)
    with pytest.raises(InputError, match="one of balance_position and balance_sources"):
        train_head(exs, base_info(llama_llm), SPEC, TrainConfig(balance_position=True, balance_sources=True),
                   tmp_path / "x")


def test_train_refuses_too_little_data(tmp_path, llama_llm, prepared):
    rows, store = prepared
    exs = [e for e in load_examples(rows, store) if 1 not in e.labels]
    with pytest.raises(InputError, match="Not enough labelled data"):
        train_head(exs, base_info(llama_llm), SPEC, TrainConfig(), tmp_path / "x")


def test_label_command_is_resumable(tmp_path):
    from uhead_viz.cli import main

    src = tmp_path / "chains.jsonl"
    refs = tmp_path / "gsm.jsonl"
    problem = "Natalia sold 48 clips, then half as many."
    refs.write_text(json.dumps({"question": problem, "answer": GOLD}) + "\n")
    rows = [
        {"id": "a", "question": problem, "steps": ["Step 1: 48 / 2 = 24.", "Step 2: 48 + 24 = 72."], "answer": "72"},
        {"id": "b", "question": problem, "steps": ["Step 1: 48 * 2 = 96."], "answer": "96"},
        {"id": "c", "question": problem},
    ]
    src.write_text("".join(json.dumps(r) + "\n" for r in rows) + "not json\n")
    out = tmp_path / "labels"
    assert main(["label", "--input", str(src), "--output-dir", str(out), "--references", str(refs)]) == 0
    got = [json.loads(x) for x in (out / "chains.jsonl").read_text().splitlines()]
    assert [g["labels"] for g in got] == [[0, 0], [1]]
    assert got[1]["label_source"] == "reference"
    assert main(["label", "--input", str(src), "--output-dir", str(out), "--references", str(refs)]) == 0
    assert len((out / "chains.jsonl").read_text().splitlines()) == 2


def test_scorers_read_a_feature_store_instead_of_the_llm(tmp_path, llama_llm):
    """A store-backed cache gives the same scores as a live capture, and fills the store on a miss."""
    from uhead_viz.scorers import InternalsCache, get_scorer
    from uhead_viz.scoring import row_to_chain
    from uhead_viz.uhead import UHead

    chains = [row_to_chain(r, llama_llm) for r in _rows(llama_llm, 3)]
    head = UHead.for_llm(llama_llm, CaptureSpec(), d_model=32, n_layers=1, n_heads=2, d_ff=64).eval()
    live_cache = InternalsCache(llama_llm)
    live = {m: get_scorer(m, llama_llm, head=head, cache=live_cache).score(chains) for m in ("uhead", "minprob")}
    store = FeatureStore(tmp_path, CaptureSpec(), base_info(llama_llm))
    fill = InternalsCache(llama_llm, store=store)
    get_scorer("minprob", llama_llm, cache=fill).score(chains)
    assert len(store) == 3
    cache = InternalsCache(llama_llm, store=store)
    calls = []
    import uhead_viz.scorers.base as base_mod

    orig = base_mod.teacher_force
    base_mod.teacher_force = lambda *a, **k: calls.append(1) or orig(*a, **k)
    try:
        got = {m: get_scorer(m, llama_llm, head=head, cache=cache).score(chains) for m in ("uhead", "minprob")}
    finally:
        base_mod.teacher_force = orig
    assert not calls
    for m in live:
        assert _flat(got[m]) == pytest.approx(_flat(live[m]), abs=2e-3)


def test_steps_after_the_first_error_can_count_as_wrong_for_training_only():
    from uhead_viz.train_batches import Example, make_batch

    e = Example("a", "p", torch.zeros(6, 3), [[0, 2], [2, 4], [4, 6]], [0, 1, None], [0.6, 0.7, 0.0])
    *_, y, w = make_batch([e], use_conf=True, after_error_weight=0.5)
    assert y[0].tolist() == [0.0, 1.0, 1.0] and w[0].tolist() == pytest.approx([0.6, 0.7, 0.5])
    *_, y, w = make_batch([e], use_conf=False, after_error_weight=0.0)
    assert w[0].tolist() == [1.0, 1.0, 0.0]


def test_position_balancing_makes_position_alone_uninformative():
    from uhead_viz.train_batches import Example, make_batch, position_pos_weights

    def ex(labels):
        n = len(labels)
        return Example("x", "p", torch.zeros(2 * n, 3), [[2 * k, 2 * k + 2] for k in range(n)], labels, [1.0] * n)

    # step 0: 40 fine, 10 wrong; step 1: 20 fine, 20 wrong (the later step is more often wrong)
    exs = [ex([0, 0])] * 20 + [ex([0, 1])] * 10 + [ex([1, None])] * 10 + [ex([0, 1])] * 10
    pw = position_pos_weights(exs, use_conf=True, after_error_weight=0.0, min_pos=5)
    assert pw == pytest.approx([4.0, 1.0])
    *_, y, w = make_batch(exs, use_conf=True, after_error_weight=0.0, pos_by_step=pw)
    for k in (0, 1):  # weighted wrong == weighted fine at every position
        assert float((w[:, k] * y[:, k]).sum()) == pytest.approx(float((w[:, k] * (1 - y[:, k])).sum()))
    # a sparse late position shares the weight of the bucket it is pooled into
    pw = position_pos_weights(exs + [ex([0, 0, 1])], use_conf=True, after_error_weight=0.0, min_pos=5)
    assert len(pw) == 3 and pw[2] == pw[1] and pw[0] == pytest.approx(41 / 10)


@pytest.mark.parametrize("attn", ["raw", "window"])
def test_feature_stats_match_the_stats_of_all_tokens_at_once(attn):
    """Standardization is summed chain by chain, never from one copy of every training token."""
    from uhead_viz.train import Example, feature_stats
    from uhead_viz.uhead import UHead, UHeadConfig

    spec = CaptureSpec(window=2, top_k=2)
    n_features = 2 * 2 * 2 + 2 + 2
    head = UHead(UHeadConfig(n_features=n_features, d_model=8, n_heads=2, d_ff=16, attn=attn), spec=spec,
                 base={"n_layers": 2, "n_heads": 2})
    gen = torch.Generator().manual_seed(0)
    exs = [Example(f"c{i}", "", (torch.rand(5 + i, n_features, generator=gen) * (i + 1)).half(), [[0, 5 + i]], [0])
           for i in range(4)]
    mean, std = feature_stats(head, exs)
    allf = head.prepare(torch.cat([e.feats.float() for e in exs]))
    torch.testing.assert_close(mean, allf.mean(0), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(std, allf.std(0), atol=1e-5, rtol=1e-5)
    with pytest.raises(InputError, match="Too few"):
        feature_stats(head, [])


def test_batches_keep_order_and_cut_where_padding_would_pass_the_token_budget():
    from uhead_viz.train_batches import batches

    lengths = [10, 10, 100, 10, 5000, 10, 10, 10]
    got = batches(lengths, list(range(8)), size=3, max_tokens=300)
    assert [j for b in got for j in b] == list(range(8))  # every item once, in order
    assert got == [[0, 1, 2], [3], [4], [5, 6, 7]]  # 4 x 100 > 300; 5000 goes alone
    assert all(len(b) * max(lengths[j] for j in b) <= 300 or len(b) == 1 for b in got)
    assert batches([5] * 5, [4, 3, 2, 1, 0], size=16, max_tokens=8192) == [[4, 3, 2, 1, 0]]


def test_validation_pr_auc_is_the_mean_over_sources_so_telling_authors_apart_does_not_win():
    """Source A's chains hold most wrong steps. Scores that only say "this is source A" rank well
    pooled, yet carry nothing within a source; the mean over sources says so."""
    from uhead_viz.train import Example, row_source, source_pr_auc

    assert row_source({"label_source": "reference", "model": "qwen-coder-1.5b"}) == "reference/qwen-coder-1.5b"
    assert row_source({"source": "prm800k-phase1-train", "label_source": "x"}) == "prm800k-phase1-train/"

    def ex(src, labels):
        return Example("r", "p", torch.zeros(len(labels), 2), [[k, k + 1] for k in range(len(labels))], labels,
                       source=src)

    examples = [ex("a", [0, 1, 1]), ex("a", [1, 0, 1]), ex("b", [0, 0, 1]), ex("b", [0, 1, 0])]
    by_source = [[0.9, 0.9, 0.9], [0.9, 0.9, 0.9], [0.1, 0.1, 0.1], [0.1, 0.1, 0.1]]
    within = [[0.2, 0.8, 0.7], [0.9, 0.1, 0.6], [0.3, 0.2, 0.4], [0.1, 0.5, 0.2]]
    from uhead_viz import metrics

    labels = [e.labels for e in examples]
    assert metrics.pr_auc(labels, by_source) > 0.6  # pooled, the source label looks informative
    mean, per = source_pr_auc(examples, by_source)
    assert per == {"a": pytest.approx(4 / 6), "b": pytest.approx(2 / 6)} and mean == pytest.approx(0.5)
    mean_within, _ = source_pr_auc(examples, within)
    assert mean_within == pytest.approx(1.0)
    # a source without both classes is left out of the mean
    assert source_pr_auc([*examples, ex("c", [0, 0])], [*within, [0.5, 0.5]])[1].keys() == {"a", "b"}
