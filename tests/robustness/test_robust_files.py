"""Files that can hurt: pickles, unknown tensors, over-sized uploads, remote code.

A head checkpoint is code-free by construction (safetensors + JSON), and every way of
slipping a pickle in is refused before anything is unpickled: the pickles used here would
create a marker file the moment they were loaded, and the tests check the file never
appears. Uploads over the size limit are refused by the running app's HTTP server, and
``trust_remote_code`` is off unless a caller turns it on.
"""

from __future__ import annotations

import argparse
import inspect
import json
import logging
import pickle
from pathlib import Path

import pytest
import torch
from app_support import make_step_llm
from robust_support import free_port

import app
from uhead_viz import chains_io
from uhead_viz.cli import build_parser
from uhead_viz.cli import main as cli_main
from uhead_viz.engine import Engine
from uhead_viz.errors import HeadError
from uhead_viz.llm import load_llm
from uhead_viz.scoring import default_head
from uhead_viz.uhead import UHead, load_head, save_head
from uhead_viz.ui import layout

SMALL = {"d_model": 32, "n_heads": 4, "d_ff": 64, "n_layers": 1}


class Payload:
    """Unpickling this creates ``path``: a stand-in for code an attacker would run."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def evil_pickle(marker: Path) -> bytes:
    return pickle.dumps({"proj.0.weight": Payload(marker)}, protocol=4)


@pytest.fixture
def head_dir(tmp_path, llama_llm) -> Path:
    torch.manual_seed(0)
    return save_head(UHead.for_llm(llama_llm, **SMALL).eval(), tmp_path / "checkpoints" / "good")


def test_the_payload_really_runs_when_unpickled(tmp_path):
    marker = tmp_path / "pwned"
    pickle.loads(evil_pickle(marker))  # the control: loading this pickle does run code
    assert marker.exists()


def test_pickles_in_every_disguise_are_refused_unread(tmp_path, llama_llm, head_dir, bad_inputs):
    marker = tmp_path / "pwned"
    blob = evil_pickle(marker)
    # a pickle named as the head's weights (with and without a matching hash in the config)
    (head_dir / "model.safetensors").write_bytes(blob)
    with pytest.raises(HeadError, match="pickle / torch.save file") as e:
        load_head(head_dir, llama_llm)
    bad_inputs.add("head checkpoint", "pickle bytes named model.safetensors", str(e.value))
    # torch.save's zip format under the safetensors name
    torch.save({"proj.0.weight": Payload(marker)}, head_dir / "model.safetensors")
    with pytest.raises(HeadError, match="pickle / torch.save file") as e:
        load_head(head_dir, llama_llm)
    bad_inputs.add("head checkpoint", "torch.save zip named model.safetensors", str(e.value))
    # a pickle file given directly, and a folder that holds only pickles
    only = tmp_path / "only-pickles"
    only.mkdir()
    for name in ("head.pt", "model.bin", "weights.pkl", "state.ckpt"):
        (only / name).write_bytes(blob)
    for target in (only / "head.pt", only / "weights.pkl", only):
        with pytest.raises(HeadError, match="pickle") as e:
            load_head(target, llama_llm)
        bad_inputs.add("head checkpoint", f"{target.name} (pickle)", str(e.value))
    # a config that points the weights at a pickle, or outside the folder
    cfg = json.loads((head_dir / "config.json").read_text())
    for wfile, msg in (
        ("model.bin", "not a .safetensors file"),
        ("../evil.safetensors", "outside its folder"),
        ("/etc/passwd", "outside its folder"),
    ):
        (head_dir / "config.json").write_text(json.dumps({**cfg, "weights": {"file": wfile}}))
        with pytest.raises(HeadError, match=msg) as e:
            load_head(head_dir, llama_llm)
        bad_inputs.add("head checkpoint", f"config.json weights file {wfile!r}", str(e.value))
    assert not marker.exists()


def test_unknown_keys_and_sections_are_refused(tmp_path, llama_llm, head_dir, bad_inputs):
    from safetensors.torch import load_file, save_file

    w = head_dir / "model.safetensors"
    tensors = load_file(str(w))
    cfg = json.loads((head_dir / "config.json").read_text())
    no_hash = {**cfg, "weights": {"file": "model.safetensors"}}
    (head_dir / "config.json").write_text(json.dumps(no_hash))
    save_file({**tensors, "backdoor.weight": torch.zeros(4)}, str(w))
    with pytest.raises(HeadError, match="unknown backdoor.weight") as e:
        load_head(head_dir, llama_llm)
    bad_inputs.add("head checkpoint", "an extra tensor 'backdoor.weight'", str(e.value))
    save_file(tensors, str(w))
    for section, extra, msg in (
        ("head", {"exec": "import os"}, "invalid head or feature section"),
        ("head", {"mode": "eval"}, "invalid head or feature section"),
        ("format", "something-else", "not a uhead_viz head config"),
        ("format_version", 99, "newer uhead_viz"),
    ):
        value = {**no_hash[section], **extra} if isinstance(extra, dict) else extra
        (head_dir / "config.json").write_text(json.dumps({**no_hash, section: value}))
        with pytest.raises(HeadError, match=msg) as e:
            load_head(head_dir, llama_llm)
        bad_inputs.add("head checkpoint", f"config.json {section}: {json.dumps(extra)}", str(e.value))
    (head_dir / "config.json").write_text(json.dumps(no_hash))
    assert load_head(head_dir, llama_llm).num_parameters() > 0  # the untouched head still loads


def test_a_poisoned_checkpoints_folder_leaves_the_app_working(tmp_path, tokenizer, monkeypatch, caplog):
    marker = tmp_path / "pwned"
    root = tmp_path / "checkpoints"
    llm = make_step_llm(tokenizer)
    torch.manual_seed(0)
    good = save_head(UHead.for_llm(llm, **SMALL).eval(), root / "a-good-head")
    bad = root / "z-newest-evil"
    bad.mkdir(parents=True)
    (bad / "config.json").write_text((good / "config.json").read_text())
    (bad / "model.safetensors").write_bytes(evil_pickle(marker))
    monkeypatch.setenv("UHEAD_VIZ_CHECKPOINTS", str(root))
    monkeypatch.setenv("UHEAD_VIZ_EXAMPLES", str(tmp_path / "examples"))
    head, where = default_head(llm)
    assert head is not None
    eng = Engine(llm)
    assert eng.hs.path is not None and "evil" not in eng.hs.path
    assert eng.analyze_pasted("What is 48 + 24?", "48 + 24 = 72")["primary"] == "uhead"
    assert not marker.exists()


def test_cli_score_refuses_a_pickle_head_before_loading_the_model(tmp_path, monkeypatch, capsys, bad_inputs):
    marker = tmp_path / "pwned"
    (tmp_path / "head.pt").write_bytes(evil_pickle(marker))
    (tmp_path / "chains.jsonl").write_text('{"id": "a", "problem": "q", "steps": ["s"]}\n')

    def refuse(*a, **kw):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr("uhead_viz.llm.load_llm", refuse)
    rc = cli_main(
        [
            "score",
            "--input",
            str(tmp_path / "chains.jsonl"),
            "--output",
            str(tmp_path / "o.jsonl"),
            "--head",
            str(tmp_path / "head.pt"),
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2 and "pickle file" in err and "Traceback" not in err
    bad_inputs.add("CLI score --head", "head.pt (a pickle)", f"exit 2, {err.strip()}")
    assert not marker.exists()


# ----- uploads -------------------------------------------------------------------------------------
def test_the_running_app_refuses_uploads_over_the_limit(tmp_path, tokenizer, monkeypatch, bad_inputs):
    import httpx

    monkeypatch.setenv("UHEAD_VIZ_CHECKPOINTS", str(tmp_path / "none"))
    monkeypatch.setenv("UHEAD_VIZ_EXAMPLES", str(tmp_path / "examples"))
    limit = 64 * 1024
    monkeypatch.setattr(layout, "MAX_UPLOAD_BYTES", limit)
    monkeypatch.setattr(chains_io, "MAX_UPLOAD_BYTES", limit)
    demo = app.build(app.EngineHolder(engine=Engine(make_step_llm(tokenizer))))
    port = free_port()
    app.launch(demo, prevent_thread_lock=True, server_name="127.0.0.1", server_port=port, quiet=True)
    try:
        url = f"http://127.0.0.1:{port}/gradio_api/upload"
        row = json.dumps({"problem": "What is 48 + 24?", "steps": ["48 + 24 = 72"]}) + "\n"
        small = row.encode() * 10
        big = row.encode() * (2 * limit // len(row))
        ok = httpx.post(url, files={"files": ("small.jsonl", small)}, timeout=30)
        assert ok.status_code == 200, ok.text
        refused = httpx.post(url, files={"files": ("big.jsonl", big)}, timeout=30)
        assert refused.status_code in (400, 413), refused.text
        assert "size" in refused.text.lower() or "large" in refused.text.lower(), refused.text
        bad_inputs.add(
            "app upload (HTTP)",
            f"{len(big):,}-byte file, limit {limit:,}",
            f"HTTP {refused.status_code}: {refused.text[:200]}",
        )
    finally:
        demo.close()
    # the same limit guards files that reach the pipeline some other way
    p = tmp_path / "big.jsonl"
    p.write_bytes(big)
    with pytest.raises(chains_io.InputError, match=f"the limit is {limit:,} bytes"):
        chains_io.read_dataset(p)
    assert chains_io.MAX_UPLOAD_BYTES == layout.MAX_UPLOAD_BYTES


# ----- trust_remote_code ---------------------------------------------------------------------------
def test_trust_remote_code_is_off_by_default_everywhere():
    from uhead_viz.scorers import prm

    assert inspect.signature(load_llm).parameters["trust_remote_code"].default is False
    assert inspect.signature(prm.prm_method).parameters["trust_remote_code"].default is False
    assert inspect.signature(prm.resolve_folder).parameters["trust_remote_code"].default is False
    assert prm.PRM.trust_remote_code is False
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    ev = sub.choices["evaluate"].parse_args(["--data", "x.jsonl", "--out", "r.json"])
    sc = sub.choices["score"].parse_args(["--input", "x.jsonl", "--output", "o.jsonl"])
    assert ev.trust_remote_code is False and sc.trust_remote_code is False
    for cmd in ("generate", "label", "features", "train"):  # no flag to turn it on there at all
        assert "--trust-remote-code" not in sub.choices[cmd].format_help()


def test_load_llm_never_runs_a_folders_own_code(tmp_path, tokenizer, monkeypatch, caplog):
    """A model folder whose config maps to its own modelling code: that code must not run."""
    import transformers
    from tiny_models import build_model

    folder = tmp_path / "model-with-code"
    model = build_model("qwen2", tokenizer, seed=3)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    marker = tmp_path / "pwned"
    (folder / "evil_modeling.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    cfg = json.loads((folder / "config.json").read_text())
    cfg["auto_map"] = {"AutoConfig": "evil_modeling.EvilConfig", "AutoModelForCausalLM": "evil_modeling.EvilLM"}
    (folder / "config.json").write_text(json.dumps(cfg))

    seen: list[tuple[str, object]] = []
    for cls in (transformers.AutoTokenizer, transformers.AutoModelForCausalLM):
        real = cls.from_pretrained

        def spy(path, *a, _real=real, _name=cls.__name__, **kw):
            seen.append((_name, kw.get("trust_remote_code")))
            return _real(path, *a, **kw)

        monkeypatch.setattr(cls, "from_pretrained", spy)
    monkeypatch.setenv("UHEAD_VIZ_CACHE", str(tmp_path / "cache"))
    caplog.set_level(logging.WARNING)
    try:
        llm = load_llm(str(folder), precision="fp32")
    except (ValueError, OSError) as e:  # refusing the folder is fine too; running its code is not
        assert "trust_remote_code" in str(e)
    else:
        assert type(llm.model).__name__ == "Qwen2ForCausalLM"
    assert seen and all(v is False for _, v in seen), seen
    assert not marker.exists()
