"""The ``generate`` command: user errors exit 2 with one line, chains are printed or appended."""

from __future__ import annotations

import json

import pytest

from uhead_viz import llm as llm_mod
from uhead_viz.cli import main
from uhead_viz.packs import PACKS


@pytest.fixture
def no_model(monkeypatch):
    """Fail the test if the command tries to load a model."""

    def refuse(*a, **kw):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(llm_mod, "load_llm", refuse)


def one_error_line(capsys) -> str:
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    assert out == ""
    err_lines = [x for x in err.splitlines() if x.startswith("error:")]
    assert len(err_lines) == 1, err
    return err_lines[0]


def test_generate_without_question_or_input(capsys, no_model):
    assert main(["generate"]) == 2
    line = one_error_line(capsys)
    assert "--question" in line and "--input" in line


@pytest.mark.parametrize("question", ["   ", "\n\t", "\x00"])
def test_generate_with_blank_question_fails_before_loading(capsys, no_model, question):
    assert main(["generate", "--question", question]) == 2
    assert "empty" in one_error_line(capsys)


def test_generate_with_over_long_question_fails_before_loading(capsys, no_model):
    assert main(["generate", "--question", "1 + " * 3000]) == 2
    assert "limit" in one_error_line(capsys)


def test_input_without_output(capsys, no_model, tmp_path):
    assert main(["generate", "--input", str(tmp_path / "q.jsonl")]) == 2
    assert "--output" in one_error_line(capsys)


def test_unknown_model_names_the_packaged_models(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["generate", "--question", "What is 2 + 2?", "--model", "no-such-model"]) == 2
    line = one_error_line(capsys)
    assert "Unknown model 'no-such-model'" in line
    for key in PACKS:
        assert key in line


def test_missing_input_file(capsys, tmp_path, monkeypatch, llama_llm):
    monkeypatch.setattr(llm_mod, "load_llm", lambda name=None, **kw: llama_llm)
    assert main(["generate", "--input", str(tmp_path / "nope.jsonl"), "--output", str(tmp_path / "o.jsonl")]) == 2
    assert "nope.jsonl" in one_error_line(capsys)


def test_argparse_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as e:
        main(["generate", "--max-new-tokens", "many"])
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        main([])
    assert e.value.code == 2


def test_generate_one_question_prints_steps_and_answer(capsys, monkeypatch, scripted):
    llm = scripted([[" 48 / 2 = 24\nStep 2: 48 + 24 = 72\nAnswer: 72\n"]])
    asked = {}

    def fake_load(name=None, **kw):
        asked["name"] = name
        return llm

    monkeypatch.setattr(llm_mod, "load_llm", fake_load)
    assert main(["generate", "--question", "Natalia?", "--model", "m", "--max-new-tokens", "50"]) == 0
    out, err = capsys.readouterr()
    assert out == "Step 1: 48 / 2 = 24\nStep 2: 48 + 24 = 72\nAnswer: 72\n"
    assert asked["name"] == "m"
    assert "Traceback" not in err


def test_generate_without_answer_says_none(capsys, monkeypatch, scripted):
    llm = scripted([[" 1 + 1 = 2\n"]])
    monkeypatch.setattr(llm_mod, "load_llm", lambda name=None, **kw: llm)
    assert main(["generate", "--question", "q", "--max-new-tokens", "12"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Step 1: 1 + 1 = 2\n")
    assert out.endswith("Answer: (none)\n")


def test_generate_file_appends_and_resumes(tmp_path, monkeypatch, llama_llm, caplog):
    calls = []
    real_generate = llama_llm.generate

    class Counting:
        def __getattr__(self, name):
            return getattr(llama_llm, name)

        def generate(self, questions, *a, **kw):
            calls.append(list(questions))
            return real_generate(questions, *a, **kw)

    monkeypatch.setattr(llm_mod, "load_llm", lambda name=None, **kw: Counting())
    src = tmp_path / "qs.jsonl"
    src.write_text(
        json.dumps({"id": "natalia", "question": "Natalia sold 48 clips.", "steps": ["old"], "level": 2})
        + "\n"
        + json.dumps({"problem": "What is 3 * 4?"})
        + "\n{broken\n"
        + json.dumps({"question": "   "})
        + "\n"
        + json.dumps({"instruction": "Add 2 and 5."})
        + "\n",
        encoding="utf-8",
    )
    out = tmp_path / "out" / "chains.jsonl"
    args = ["generate", "--input", str(src), "--output", str(out), "--max-new-tokens", "6", "--batch-size", "2"]
    assert main(args) == 0
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["natalia", "qs-1", "qs-4"]
    assert calls == [["Natalia sold 48 clips.", "What is 3 * 4?"], ["Add 2 and 5."]]
    first = rows[0]
    assert first["level"] == 2  # input fields are kept
    assert first["problem"] == "Natalia sold 48 clips."
    assert first["steps"] != ["old"]  # ... but the chain's own fields win
    assert first["prompt_len"] == len(llama_llm.prompt_ids("Natalia sold 48 clips."))
    assert first["text"] == llama_llm.tokenizer.decode(first["ids"])
    assert len(first["spans"]) == len(first["steps"])
    assert first["stop_reason"] in {"eos", "answer", "repetition", "long_line", "max_tokens"}
    skipped = " ".join(r.getMessage() for r in caplog.records)
    assert "line 3" in skipped and "line 4" in skipped

    # run again: everything is done, nothing is generated, nothing is duplicated
    calls.clear()
    assert main(args) == 0
    assert calls == []
    assert len(out.read_text().splitlines()) == 3


def test_generate_file_limit(tmp_path, monkeypatch, scripted):
    llm = scripted([[" 1 + 1 = 2\nAnswer: 2\n"]])
    monkeypatch.setattr(llm_mod, "load_llm", lambda name=None, **kw: llm)
    src = tmp_path / "qs.json"
    src.write_text(json.dumps([{"question": f"q{i}"} for i in range(5)]), encoding="utf-8")
    out = tmp_path / "o.jsonl"
    assert main(["generate", "--input", str(src), "--output", str(out), "--limit", "2", "--batch-size", "1"]) == 0
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["qs-0", "qs-1"]
    assert all(r["answer"] == "2" and r["stop_reason"] == "answer" for r in rows)
    # another model's chains of the same questions, in the same file, keep ids of their own
    args = ["generate", "--input", str(src), "--output", str(out), "--offset", "1", "--limit", "1"]
    args += ["--id-prefix", "m2-"]
    assert main(args) == 0
    assert [json.loads(x)["id"] for x in out.read_text().splitlines()] == ["qs-0", "qs-1", "m2-qs-1"]


def test_missing_model_pack_is_one_paragraph_and_exit_2(capsys, tmp_path, monkeypatch):
    """A user without the pack installed gets the package name and the fix, not a traceback."""
    import dataclasses

    from uhead_viz import packs

    fake = dataclasses.replace(packs.PACKS["qwen-coder-1.5b"], dist_fmt="uhead-viz-absent-part{i}")
    monkeypatch.setitem(packs.PACKS, "qwen-coder-1.5b", fake)
    monkeypatch.setenv("UHEAD_VIZ_CACHE", str(tmp_path / "empty-cache"))
    assert main(["generate", "--question", "What is 2 + 2?"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err
    assert "uhead-viz-absent-part1" in err and "make models" in err
    assert err.count("\n") == 1
