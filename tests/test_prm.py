"""PRM adapters on tiny random models of each family's architecture: formats, positions, loading.

Random weights say nothing about real scores; these tests check the plumbing: that each
family builds its input the documented way, reads its reward at the right positions and
from the right outputs, loads from a folder written by ``save_pretrained`` (safetensors,
no remote code unless asked), and returns one p_error in [0, 1] per step.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import save_file
from tiny_models import SIZES, build_tokenizer

import uhead_viz.scorers.prm as prm_mod
from uhead_viz.errors import InputError
from uhead_viz.scorers import SCORERS, get_scorer
from uhead_viz.scorers.prm import FAMILIES, detect_family, load_families, parse_method, prm_method
from uhead_viz.steps import chain_from_steps

PROBLEM = "Natalia sold 48 clips in April and half as many in May. How many clips did she sell?"
STEPS = ["48 / 2 = 24 clips in May.", "48 + 24 = 72 clips in all.", "So she sold 72 clips."]


@pytest.fixture(autouse=True)
def forget_dynamic_methods():
    """PRM methods register under names that hold tmp paths: drop them and loaded models after each test."""
    yield
    for name in [n for n in SCORERS if ":" in n]:
        del SCORERS[name]
    prm_mod._LOADED.clear()


def tokenizer_with(*tokens: str, special: bool = False):
    tok = build_tokenizer()
    if tokens:
        tok.add_tokens(list(tokens), special_tokens=special)
    return tok


def config(arch: str, tok, **kw):
    import transformers

    cfg_cls = {
        "qwen2": transformers.Qwen2Config,
        "llama": transformers.LlamaConfig,
        "mistral": transformers.MistralConfig,
    }
    return cfg_cls[arch](
        vocab_size=len(tok),
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        **SIZES,
        **kw,
    )


def save(model, tok, folder):
    torch.manual_seed(0)
    model.eval().save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def build_family(fam: str, root):
    """A saved tiny PRM folder of family ``fam``; its name is what family detection sees."""
    import transformers

    torch.manual_seed({"qwen": 1, "shepherd": 2, "rlhflow": 3, "skywork": 4, "trl": 5}[fam])
    if fam == "qwen":
        tok = tokenizer_with("<extra_0>", special=True)
        model = transformers.Qwen2ForTokenClassification(config("qwen2", tok, num_labels=2))
        return save(model, tok, root / "tiny-Qwen2.5-Math-PRM")
    if fam == "shepherd":
        tok = tokenizer_with("ки")
        model = transformers.MistralForCausalLM(config("mistral", tok))
        return save(model, tok, root / "tiny-math-shepherd-mistral-prm")
    if fam == "rlhflow":
        tok = tokenizer_with()
        model = transformers.LlamaForCausalLM(config("llama", tok))
        return save(model, tok, root / "tiny-RLHFlow-Llama-PRM")
    if fam == "skywork":
        tok = tokenizer_with()
        cfg = config("qwen2", tok)
        base = transformers.Qwen2Model(cfg)
        folder = root / "tiny-Skywork-o1-Open-PRM"
        folder.mkdir()
        tensors = {f"model.{k}": v.contiguous() for k, v in base.state_dict().items()}
        tensors["v_head.summary.weight"] = torch.randn(1, cfg.hidden_size)
        tensors["v_head.summary.bias"] = torch.randn(1)
        save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
        cfg.architectures = ["Qwen2ForPrmModel"]
        cfg.save_pretrained(folder)
        tok.save_pretrained(folder)
        return folder
    assert fam == "trl"
    tok = tokenizer_with()
    model = transformers.LlamaForTokenClassification(config("llama", tok, num_labels=2))
    return save(model, tok, root / "tiny-token-classifier")  # no telling name: detected from the config


def chains(llm, n=2):
    out = [chain_from_steps(llm.tokenizer, PROBLEM, llm.prompt_ids(PROBLEM), STEPS)]
    if n > 1:
        q = "What is 7 * 8 - 6?"
        out.append(chain_from_steps(llm.tokenizer, q, llm.prompt_ids(q), ["7 * 8 = 56.", "56 - 6 = 50."]))
    return out


FAMILY_NAMES = ["qwen", "shepherd", "rlhflow", "skywork", "trl"]


def test_every_family_has_an_adapter():
    assert set(load_families()) == set(FAMILY_NAMES)


@pytest.mark.parametrize("fam", FAMILY_NAMES)
def test_family_scores_one_probability_per_step(fam, tmp_path, llama_llm):
    folder = build_family(fam, tmp_path)
    name = f"prm:{folder}"
    cls = prm_method(name)
    assert cls.family == fam and issubclass(cls, FAMILIES[fam])
    scorer = get_scorer(name, llama_llm)  # by name, through the registry, like any scorer
    assert scorer.needs_internals is False and not scorer.trust_remote_code
    cs = chains(llama_llm)
    out = scorer.score(cs)
    assert [len(r) for r in out] == [len(c.steps) for c in cs]
    assert all(0.0 <= v <= 1.0 and math.isfinite(v) for r in out for v in r)
    # batching (right padding) changes nothing: each chain alone scores the same
    for c, r in zip(cs, out):
        assert scorer.score([c])[0] == pytest.approx(r, abs=1e-5)
    # the model is loaded once per folder, shared by every scorer that names it
    assert get_scorer(name, llama_llm).model is scorer.model


def _forward(model, ids):
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids]))


def test_qwen_reads_the_second_label_at_each_extra_0(tmp_path, llama_llm):
    folder = build_family("qwen", tmp_path)
    scorer = get_scorer(prm_method(f"prm:{folder}").name, llama_llm)
    ids, pos = scorer.encode(PROBLEM, STEPS)
    tag = scorer.tokenizer.convert_tokens_to_ids("<extra_0>")
    assert [ids[p] for p in pos] == [tag] * 3 and ids.count(tag) == 3
    text = scorer.tokenizer.decode(ids)
    assert "Please reason step by step" in text and "<extra_0>".join(STEPS) + "<extra_0>" in text
    probs = _forward(scorer.model, ids).logits[0].softmax(-1)[:, 1]
    got = scorer.score(chains(llama_llm, 1))[0]
    assert got == pytest.approx([1 - float(probs[p]) for p in pos], abs=1e-5)
    # a step that types the tag cannot add a reward position
    ids2, pos2 = scorer.encode(PROBLEM, ["a <extra_0> b", "c"])
    assert len(pos2) == 2


def test_shepherd_reads_plus_against_minus_at_each_tag(tmp_path, llama_llm):
    folder = build_family("shepherd", tmp_path)
    scorer = get_scorer(prm_method(f"prm:{folder}").name, llama_llm)
    tok = scorer.tokenizer
    ids, pos = scorer.encode(PROBLEM, STEPS)
    tag = tok.convert_tokens_to_ids("ки")
    assert [ids[p] for p in pos] == [tag] * 3
    want_text = f"{PROBLEM} Step 1: {STEPS[0]} ки\nStep 2: {STEPS[1]} ки\nStep 3: {STEPS[2]} ки"
    assert tok.decode(ids, skip_special_tokens=True) == want_text
    logits = _forward(scorer.model, ids).logits[0]
    plus, minus = tok.convert_tokens_to_ids("+"), tok.convert_tokens_to_ids("-")
    want = [1 - float(logits[p, [plus, minus]].softmax(-1)[0]) for p in pos]
    assert scorer.score(chains(llama_llm, 1))[0] == pytest.approx(want, abs=1e-5)


def test_rlhflow_one_pass_equals_one_conversation_per_step(tmp_path, llama_llm):
    folder = build_family("rlhflow", tmp_path)
    scorer = get_scorer(prm_method(f"prm:{folder}").name, llama_llm)
    tok = scorer.tokenizer
    plus, minus = tok.convert_tokens_to_ids("+"), tok.convert_tokens_to_ids("-")
    ids, pos = scorer.encode(PROBLEM, STEPS)
    assert [ids[p + 1] for p in pos] == [plus] * 3
    # the way the model card scores step k: the conversation up to step k, answered "+", read
    # where the "+" is predicted (the tiny template ends a turn with "+<|im_end|>\n")
    want = []
    conv = []
    for k, s in enumerate(STEPS):
        conv += [{"role": "user", "content": f"{PROBLEM} {s}" if k == 0 else s}, {"role": "assistant", "content": "+"}]
        ids_k = tok(tok.apply_chat_template(conv, tokenize=False), add_special_tokens=False)["input_ids"]
        assert ids_k[-3] == plus
        logits = _forward(scorer.model, ids_k).logits[0, -4, [plus, minus]]
        want.append(1 - float(logits.softmax(-1)[0]))
    assert scorer.score(chains(llama_llm, 1))[0] == pytest.approx(want, abs=1e-5)


def test_skywork_value_head_comes_from_the_safetensors(tmp_path, llama_llm):
    from safetensors import safe_open

    folder = build_family("skywork", tmp_path)
    scorer = get_scorer(prm_method(f"prm:{folder}").name, llama_llm)
    with safe_open(str(folder / "model.safetensors"), framework="pt") as st:
        w, b = st.get_tensor("v_head.summary.weight"), st.get_tensor("v_head.summary.bias")
        emb = st.get_tensor("model.embed_tokens.weight")
    assert torch.equal(scorer.model.v_head.summary.weight, w)
    assert torch.equal(scorer.model.embed_tokens.weight, emb)  # the base weights were loaded, not initialized
    ids, pos = scorer.encode(PROBLEM, ["one\nline", *STEPS[1:]])
    nl = scorer.tokenizer.encode("\n", add_special_tokens=False)[-1]
    assert [ids[p] for p in pos] == [nl] * 3 and ids.count(nl) == 4  # problem + one per step; inner \n is a space
    hidden = _forward(scorer.model, ids).last_hidden_state[0]
    want = [1 - float(torch.sigmoid(hidden[p] @ w[0] + b[0])) for p in pos]
    got = scorer.score([chain_from_steps(llama_llm.tokenizer, PROBLEM, [1], ["one\nline", *STEPS[1:]])])[0]
    assert got == pytest.approx(want, abs=1e-5)


def test_skywork_without_value_head_is_refused(tmp_path, llama_llm):
    folder = build_family("skywork", tmp_path)
    from safetensors.torch import load_file

    t = {k: v for k, v in load_file(str(folder / "model.safetensors")).items() if "v_head" not in k}
    save_file(t, str(folder / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(InputError, match="No value head"):
        get_scorer(prm_method(f"prm:{folder}").name, llama_llm)


def test_trl_reads_label_1_at_each_separator(tmp_path, llama_llm):
    folder = build_family("trl", tmp_path)
    scorer = get_scorer(prm_method(f"prm:{folder}").name, llama_llm)
    tok = scorer.tokenizer
    ids, pos = scorer.encode(PROBLEM, STEPS)
    want_ids = tok(PROBLEM, add_special_tokens=False)["input_ids"]
    sep = tok("\n", add_special_tokens=False)["input_ids"]
    want_pos = []
    for s in STEPS:
        want_ids += tok(s, add_special_tokens=False)["input_ids"] + sep
        want_pos.append(len(want_ids) - 1)
    assert (ids, pos) == (want_ids, want_pos)
    probs = _forward(scorer.model, ids).logits[0].softmax(-1)[:, 1]
    assert scorer.score(chains(llama_llm, 1))[0] == pytest.approx([1 - float(probs[p]) for p in pos], abs=1e-5)


# ----- choosing and loading -------------------------------------------------------------------
def test_family_detection_by_name_config_and_explicit(tmp_path):
    assert detect_family("Qwen/Qwen2.5-Math-PRM-7B") == "qwen"
    assert detect_family("peiyi9979/math-shepherd-mistral-7b-prm") == "shepherd"
    assert detect_family("RLHFlow/Llama3.1-8B-PRM-Deepseek-Data") == "rlhflow"
    assert detect_family("Skywork/Skywork-o1-Open-PRM-Qwen-2.5-1.5B") == "skywork"
    folder = tmp_path / "some-prm"
    folder.mkdir()
    for arch, fam in [
        ("Qwen2ForProcessRewardModel", "qwen"),
        ("Qwen2ForPrmModel", "skywork"),
        ("Qwen2ForTokenClassification", "trl"),
    ]:
        (folder / "config.json").write_text(json.dumps({"architectures": [arch]}))
        assert detect_family(str(folder), folder) == fam
    (folder / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
    with pytest.raises(InputError, match="--prm-family"):
        detect_family(str(folder), folder)
    assert parse_method(f"prm:trl:{folder}") == ("trl", str(folder))
    assert parse_method(f"prm:{folder}", "rlhflow") == ("rlhflow", str(folder))
    assert parse_method("prm:owner/name") == (None, "owner/name")
    assert prm_method(f"prm:{folder}", family="rlhflow").family == "rlhflow"  # --prm-family
    with pytest.raises(InputError):
        parse_method("prm:")
    with pytest.raises(InputError, match="neither a local folder nor a hub id"):
        prm_mod.resolve_folder("no such folder")


def test_explicit_family_overrides_the_name(tmp_path, llama_llm):
    folder = build_family("qwen", tmp_path)  # a 2-label token classifier: TRL's shape too
    scorer = get_scorer(prm_method(f"prm:trl:{folder}").name, llama_llm)
    assert scorer.family == "trl" and scorer.name == f"prm:trl:{folder}"
    assert len(scorer.score(chains(llama_llm, 1))[0]) == 3


def test_remote_code_is_off_unless_asked(tmp_path, llama_llm, monkeypatch):
    import transformers

    folder = build_family("qwen", tmp_path)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["auto_map"] = {"AutoModel": "modeling_prm.Qwen2ForProcessRewardModel"}
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(InputError, match="--trust-remote-code"):
        get_scorer(prm_method(f"prm:{folder}").name, llama_llm)

    seen = []
    real = transformers.AutoModelForTokenClassification.from_pretrained

    def spy(path, **kw):
        seen.append(kw.get("trust_remote_code"))
        return real(path, **{**kw, "trust_remote_code": False})

    # with the flag, AutoModel (the remote class) is asked for with trust_remote_code=True
    monkeypatch.setattr(transformers.AutoModel, "from_pretrained", spy)
    get_scorer(prm_method(f"prm:{folder}", trust_remote_code=True).name, llama_llm)
    assert seen == [True]
    # a folder without remote code loads natively, never passing trust_remote_code=True
    seen.clear()
    monkeypatch.setattr(transformers.AutoModelForTokenClassification, "from_pretrained", spy)
    other = build_family("trl", tmp_path)
    get_scorer(prm_method(f"prm:{other}").name, llama_llm)
    assert seen == [False]


def test_weights_that_do_not_fit_and_pickles_are_refused(tmp_path, llama_llm):
    import transformers

    tok = tokenizer_with()
    base = transformers.LlamaForCausalLM(config("llama", tok))
    folder = save(base, tok, tmp_path / "not-a-classifier")
    cfg = json.loads((folder / "config.json").read_text())
    cfg["architectures"] = ["LlamaForTokenClassification"]
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(InputError, match="tensors are missing"):
        get_scorer(prm_method(f"prm:{folder}").name, llama_llm)  # the score layer would be random
    (folder / "model.safetensors").rename(folder / "pytorch_model.bin")
    with pytest.raises(InputError, match="no .safetensors"):
        get_scorer(prm_method(f"prm:{folder}").name, llama_llm)
