"""Head options: pooling step bodies without their markers, a projected hidden state, the paper's shape."""

from __future__ import annotations

import json

import pytest
import torch

from uhead_viz.capture import CaptureSpec
from uhead_viz.featstore import FeatureStore
from uhead_viz.scoring import row_to_chain
from uhead_viz.steps import body_spans
from uhead_viz.train import TrainConfig, extract_features, load_examples, predict, train_head
from uhead_viz.uhead import UHead, UHeadConfig, base_info, load_head, save_head, spans_to_mask

SPANS = [(0, 6), (6, 14), (14, 20)]
BODIES = [(2, 6), (9, 14), (16, 20)]  # each step's first tokens are its "Step k:" marker


def _head(**kw) -> UHead:
    torch.manual_seed(0)
    sizes = dict(n_features=12, d_model=16, n_layers=1, n_heads=2, d_ff=32, dropout=0.0, mode="causal")
    return UHead(UHeadConfig(**{**sizes, **kw})).eval()


@pytest.mark.parametrize("pool", ["mean", "max"])
def test_a_body_pooling_head_pools_exactly_the_body_tokens(pool):
    head = _head(pool_body=True, pool=pool)
    feats = torch.randn(20, 12)
    got = head.step_logits(feats, SPANS, BODIES)
    starts = spans_to_mask(SPANS, 20)
    starts = (starts & ~torch.nn.functional.pad(starts, (1, 0))[..., :20]).any(0)
    with torch.no_grad():
        h = head._encode(head.embed(feats[None]), starts[None], torch.ones(1, 20, dtype=torch.bool), causal=True)[0]
        want = [
            head.classifier(h[a:b].mean(0) if pool == "mean" else h[a:b].amax(0)).squeeze(-1) for a, b in BODIES
        ]
    assert torch.allclose(got, torch.stack(want), atol=1e-5)
    assert not torch.allclose(got, head.step_logits(feats, SPANS, SPANS), atol=1e-4)  # the markers would move it
    with pytest.raises(ValueError, match="pools step bodies"):
        head.step_logits(feats, SPANS)


def test_step_mode_pools_the_body_and_a_marker_only_step_falls_back_to_its_span():
    head = _head(pool_body=True, mode="step")
    feats = torch.randn(20, 12)
    plain = _head(mode="step")
    plain.load_state_dict(head.state_dict())
    # with bodies equal to the spans, body pooling is plain pooling
    assert torch.allclose(head.step_logits(feats, SPANS, SPANS), plain.step_logits(feats, SPANS), atol=1e-6)
    assert not torch.allclose(head.step_logits(feats, SPANS, BODIES), plain.step_logits(feats, SPANS), atol=1e-4)
    empty = [(2, 6), (6, 6), (16, 20)]  # the second step is all marker: pooled whole
    got = head.step_logits(feats, SPANS, empty)
    assert torch.allclose(got[1], plain.step_logits(feats, SPANS)[1], atol=1e-6)


def test_heads_saved_before_the_options_keep_their_behaviour(tmp_path):
    head = _head()
    head.base = {"name": "m", "fingerprint": "f", "model_type": "llama", "n_layers": 1, "n_heads": 1,
                 "hidden_size": 4}
    save_head(head, tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    for key in ("pool_body", "n_hidden", "d_hidden"):  # what an older config.json looks like
        del cfg["head"][key]
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    old = load_head(tmp_path)
    assert not old.config.pool_body and old.config.n_hidden == 0
    feats = torch.randn(20, 12)
    assert torch.equal(old.step_logits(feats, SPANS), head.step_logits(feats, SPANS))
    assert torch.equal(old.step_logits(feats, SPANS, BODIES), head.step_logits(feats, SPANS))  # bodies ignored


def test_hidden_state_columns_are_projected_down(tmp_path):
    head = _head(n_features=12 + 32, n_hidden=32, d_hidden=4)
    assert head.hidden_proj.weight.shape == (4, 32) and head.proj[0].in_features == 12 + 4
    feats = torch.randn(20, 44)
    moved = feats.clone()
    moved[:, 12:] += 1.0
    assert not torch.allclose(head.step_logits(feats, SPANS), head.step_logits(moved, SPANS))
    head.base = {"name": "m", "fingerprint": "f", "model_type": "llama", "n_layers": 1, "n_heads": 1,
                 "hidden_size": 32}
    save_head(head, tmp_path)
    assert torch.equal(load_head(tmp_path).step_logits(feats, SPANS), head.step_logits(feats, SPANS))
    with pytest.raises(ValueError, match="n_hidden"):
        UHeadConfig(n_features=12, n_hidden=4)


def _rows(n: int = 18) -> list[dict]:
    rows = []
    for i in range(n):
        bad = i % 3
        steps = [f"Step {k + 1}: {'7 wrong' if bad and k == bad else 'is right'} {i}" for k in range(3)]
        labels = [0, 0, 0] if not bad else [0] * bad + [1] + [None] * (2 - bad)
        rows.append({"id": f"q{i}", "problem": f"question number {i}", "steps": steps, "labels": labels})
    return rows


def test_store_keeps_bodies_and_a_paper_shaped_head_trains_on_the_middle_hidden_state(tmp_path, llama_llm):
    spec = CaptureSpec(window=3, top_k=2, hidden_layers=(1,))
    rows = _rows()
    store = FeatureStore(tmp_path / "store", spec, base_info(llama_llm))
    extract_features(rows, llama_llm, store, spec)
    exs = load_examples(rows, store)  # bodies come from the store, no model needed
    chain = row_to_chain(rows[0], llama_llm)
    assert exs[0].bodies == [list(b) for b in body_spans(llama_llm.tokenizer, chain)]
    assert all(b[0] > s[0] and b[1] == s[1] for b, s in zip(exs[0].bodies, exs[0].spans))
    cfg = TrainConfig(d_model=512, n_layers=1, n_heads=2, d_ff=64, max_epochs=2, val_fraction=0.3, d_hidden=8)
    head = train_head(exs, base_info(llama_llm), spec, cfg, tmp_path / "ckpt")
    saved = json.loads((tmp_path / "ckpt" / "config.json").read_text())["head"]
    hidden = llama_llm.model.config.hidden_size
    assert saved["pool_body"] and saved["n_hidden"] == hidden and saved["d_hidden"] == 8
    assert saved["d_model"] == 512 and saved["n_layers"] == 1
    again = load_head(tmp_path / "ckpt", llama_llm)
    flat = [p for ps in predict(head, exs[:3]) for p in ps]
    assert [p for ps in predict(again, exs[:3]) for p in ps] == pytest.approx(flat, abs=1e-6)
    # an older store without bodies: computed again from the rows with the model's tokenizer
    for row in store.index.values():
        row.pop("bodies")
    assert [e.bodies for e in load_examples(rows, store, llama_llm)] == [e.bodies for e in exs]
    assert [e.bodies for e in load_examples(rows, store)] == [e.spans for e in exs]


def _cli_setup(tmp_path, monkeypatch, tokenizer, make_model):
    """A tiny model folder and a labelled file, with a model cache of the test's own."""
    monkeypatch.setenv("UHEAD_VIZ_PRECISION", "fp32")
    monkeypatch.setenv("UHEAD_VIZ_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "m"
    make_model("llama", seed=0).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    data = tmp_path / "labels.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in _rows()))
    return folder, data


def test_cli_captures_the_middle_layer_and_trains_with_it(tmp_path, monkeypatch, tokenizer, make_model):
    from uhead_viz.cli import main

    folder, data = _cli_setup(tmp_path, monkeypatch, tokenizer, make_model)
    assert main(["features", "--input", str(data), "--model", str(folder), "--hidden-layers", "mid",
                 "--window", "3", "--top-k", "2"]) == 0
    stores = sorted((tmp_path / "cache" / "features").iterdir())
    assert len(stores) == 1 and stores[0].name.endswith("-h1")  # 2 layers: the middle one is layer 1
    meta = json.loads((stores[0] / "meta.json").read_text())
    assert meta["features"]["hidden_layers"] == [1]
    out = tmp_path / "head"
    args = ["train", "--data", str(data), "--model", str(folder), "--use-hidden", "--d-model", "32", "--layers", "1",
            "--n-heads", "2", "--epochs", "1", "--val-fraction", "0.3", "--window", "3", "--top-k", "2", "--out",
            str(out)]
    assert main(args) == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["features"]["hidden_layers"] == [1] and cfg["head"]["n_hidden"] > 0
    assert cfg["head"]["d_ff"] == 64 and cfg["head"]["pool_body"] is True
    assert main(["features", "--input", str(data), "--model", str(folder), "--hidden-layers", "9"]) == 2


def test_a_store_with_hidden_states_serves_a_head_without_them(tmp_path, monkeypatch, tokenizer, make_model):
    """One capture with the middle layer serves both options: cut to the plain recipe, its rows
    equal a plain capture's, and `train --store` on it trains a head without hidden states."""
    from uhead_viz.cli import main
    from uhead_viz.featstore import open_store
    from uhead_viz.features import narrow_features

    folder, data = _cli_setup(tmp_path, monkeypatch, tokenizer, make_model)
    common = ["--model", str(folder), "--window", "3", "--top-k", "2"]
    wide, plain = tmp_path / "wide", tmp_path / "plain"
    assert main(["features", "--input", str(data), "--hidden-layers", "mid", "--store", str(wide), *common]) == 0
    assert main(["features", "--input", str(data), "--store", str(plain), *common]) == 0
    spec = CaptureSpec(window=3, top_k=2)
    base = json.loads((wide / "meta.json").read_text())["base_model"]
    ws, ps = open_store(wide, spec, base), open_store(plain, spec, base)
    assert ws.spec.hidden_layers == (1,) and ps.spec == spec
    got, want = ws.load(), ps.load()
    assert set(got) == set(want)
    cfg = json.loads((folder / "config.json").read_text())
    shape = (cfg["num_hidden_layers"], cfg["num_attention_heads"])
    for key, (f, _) in got.items():
        cut = narrow_features(f, *shape, ws.spec, spec)
        assert cut.shape == want[key][0].shape and f.shape[1] > cut.shape[1]
        torch.testing.assert_close(cut.float(), want[key][0].float(), atol=2e-3, rtol=0)
    out = tmp_path / "head"
    assert main(["train", "--data", str(data), "--store", str(wide), "--d-model", "32", "--layers", "1",
                 "--n-heads", "2", "--epochs", "1", "--val-fraction", "0.3", "--out", str(out), *common]) == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["features"]["hidden_layers"] == [] and cfg["head"]["n_hidden"] == 0
    with pytest.raises(ValueError, match="do not hold"):
        narrow_features(next(iter(want.values()))[0], *shape, spec, ws.spec)
