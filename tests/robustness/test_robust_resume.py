"""Long jobs lose nothing: ``generate``, ``label``, ``score`` and ``train`` killed with SIGKILL.

Each command runs as a real ``python -m uhead_viz`` process on a tiny random model saved to
a folder (``--model FOLDER``). The four start together (their start-up, mostly importing
torch and transformers, is most of their cost), each is killed with SIGKILL once it has
finished some records but not all, and then the same command is run again to completion.
The checks: the killed output holds only whole records (at worst one torn last line, which
the rerun drops), the rerun does not repeat finished work, and the final output has every
record exactly once, with the records finished before the kill unchanged.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from judge_api_support import serve
from robust_support import ROOT, record
from tiny_models import build_model

from uhead_viz.cli import main

N_QUESTIONS, N_SCORE_ROWS, N_LABEL_ROWS, EPOCHS = 20, 80, 20, 40
STEPS = ["Step 1: 12 * 3 = 36 apples.", "Step 2: 36 + 4 = 40 clips.", "Step 3: 40 / 2 = 20."]


def lines_of(path: Path) -> list[str]:
    return path.read_bytes().decode("utf-8").split("\n") if path.exists() else []


def whole_rows(path: Path) -> tuple[list[dict[str, Any]], str]:
    """The complete rows of a JSONL file, and a torn last line ('' if none)."""
    parts = lines_of(path)
    if not parts:
        return [], ""
    *complete, tail = parts
    rows = [json.loads(x) for x in complete if x.strip()]  # every complete line must parse
    return rows, tail


@pytest.fixture(scope="module")
def jobs(tmp_path_factory, tokenizer):
    """Start the four jobs at once, kill each mid-run with SIGKILL, and say what was left."""
    root = tmp_path_factory.mktemp("resume")
    model_dir = root / "tiny-model"
    build_model("qwen2", tokenizer, seed=5).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    env = dict(
        os.environ,
        OMP_NUM_THREADS="1",
        TOKENIZERS_PARALLELISM="false",
        UHEAD_VIZ_PRECISION="fp32",
        UHEAD_VIZ_CACHE=str(root / "cache"),
        UHEAD_VIZ_CHECKPOINTS=str(root / "no-checkpoints"),
        HF_HUB_OFFLINE="1",
        NO_PROXY="127.0.0.1,localhost",
        PYTHONPATH=str(ROOT),
    )
    for var in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        env.pop(var, None)

    # inputs
    (root / "questions.jsonl").write_text(
        "".join(
            json.dumps({"id": f"q{i}", "question": f"Natalia sold {i * 4} clips in April and half as many in May."})
            + "\n"
            for i in range(N_QUESTIONS)
        )
    )
    (root / "chains.jsonl").write_text(
        "".join(
            json.dumps({"id": f"c{i}", "problem": f"What is {i} * 3 + 4?", "steps": STEPS}) + "\n"
            for i in range(N_SCORE_ROWS)
        )
    )
    (root / "to-label.jsonl").write_text(
        "".join(
            json.dumps({"id": f"l{i}", "problem": f"PROBLEM-{i}: what is {i} + {i}?", "steps": STEPS}) + "\n"
            for i in range(N_LABEL_ROWS)
        )
    )
    train_rows = [
        {
            "id": f"t{i}",
            "problem": f"Train question {i}: what is {i} * 3 + 4?",
            "steps": STEPS,
            "labels": [0, 1, None] if i % 3 == 0 else [0, 0, 0],
        }
        for i in range(36)
    ]
    (root / "labelled.jsonl").write_text("".join(json.dumps(r) + "\n" for r in train_rows))
    store = root / "store"
    with pytest.MonkeyPatch.context() as mp:  # the feature store the train job reads, built here
        for k in ("UHEAD_VIZ_PRECISION", "UHEAD_VIZ_CACHE"):
            mp.setenv(k, env[k])
        assert (
            main(
                ["features", "--input", str(root / "labelled.jsonl"), "--model", str(model_dir), "--store", str(store)]
            )
            == 0
        )

    m = ["--model", str(model_dir)]
    head = ["--d-model", "16", "--n-layers", "1", "--n-heads", "2", "--d-ff", "32"]
    commands = {
        "generate": [
            "generate",
            "--input",
            str(root / "questions.jsonl"),
            "--output",
            str(root / "gen.jsonl"),
            "--batch-size",
            "1",
            "--max-new-tokens",
            "32",
            *m,
        ],
        "score": [
            "score",
            "--input",
            str(root / "chains.jsonl"),
            "--output",
            str(root / "scores.jsonl"),
            "--batch-size",
            "1",
            "--methods",
            "minprob,maxprob,mean_entropy",
            *m,
        ],
        "label": [
            "label",
            "--input",
            str(root / "to-label.jsonl"),
            "--output-dir",
            str(root / "labels"),
            "--labeler",
            "api-judge",
        ],
        "train": [
            "train",
            "--data",
            str(root / "labelled.jsonl"),
            "--out",
            str(root / "head"),
            "--store",
            str(store),
            "--epochs",
            str(EPOCHS),
            "--patience",
            str(EPOCHS),
            *head,
            *m,
        ],
    }
    outputs = {
        "generate": root / "gen.jsonl",
        "score": root / "scores.jsonl",
        "label": root / "labels" / "to-label.jsonl",
        "train": root / "head" / ".train_state" / "state.json",
    }

    def progressed(name: str) -> bool:
        p = outputs[name]
        if name == "train":
            try:
                return json.loads(p.read_text())["epoch"] >= 2
            except (OSError, ValueError, KeyError):
                return False
        return p.exists() and p.read_bytes().count(b"\n") >= 2

    with serve() as api:
        api.verdicts = None  # one verdict per step
        api.rules = [("PROBLEM-", {"sleep": 0.1})]  # a judge that takes 0.1 s per request
        env_label = dict(env, UHEAD_VIZ_JUDGE_BASE_URL=api.base_url, UHEAD_VIZ_JUDGE_MODEL="judge-m")
        t0 = time.monotonic()
        procs = {
            name: subprocess.Popen(
                [sys.executable, "-m", "uhead_viz", *cmd],
                cwd=root,
                env=env_label if name == "label" else env,
                stdout=subprocess.DEVNULL,
                stderr=open(root / f"{name}.log", "wb"),
            )
            for name, cmd in commands.items()
        }
        killed: dict[str, dict[str, Any]] = {}
        try:
            pending = set(procs)
            deadline = time.monotonic() + 240
            while pending and time.monotonic() < deadline:
                for name in sorted(pending):
                    proc = procs[name]
                    if progressed(name) or proc.poll() is not None:
                        still_running = proc.poll() is None
                        proc.send_signal(signal.SIGKILL)
                        proc.wait()
                        killed[name] = {
                            "still_running": still_running,
                            "returncode": proc.returncode,
                            "after_s": round(time.monotonic() - t0, 1),
                        }
                        pending.discard(name)
                time.sleep(0.01)
        finally:
            for proc in procs.values():
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        for name, info in killed.items():
            info["log_tail"] = (root / f"{name}.log").read_bytes().decode(errors="replace")[-1500:]
        # the label job's rerun needs the judge server too: it is restarted by its test
    return {
        "root": root,
        "commands": commands,
        "outputs": outputs,
        "killed": killed,
        "env": env,
        "model_dir": model_dir,
    }


def killed_mid_run(jobs, name: str) -> dict[str, Any]:
    info = jobs["killed"][name]
    assert info["still_running"] and info["returncode"] == -signal.SIGKILL, info
    return info


def rerun(jobs, name: str, monkeypatch, extra_env: dict[str, str] | None = None) -> int:
    """The same command again, in this process (its start-up is what the killed run paid for)."""
    for k in ("UHEAD_VIZ_PRECISION", "UHEAD_VIZ_CACHE", "UHEAD_VIZ_CHECKPOINTS"):
        monkeypatch.setenv(k, jobs["env"][k])
    for k, v in (extra_env or {}).items():
        monkeypatch.setenv(k, v)
    return main(jobs["commands"][name])


def check_jsonl_resume(jobs, name: str, monkeypatch, expected_ids: list[str], extra_env=None) -> dict[str, Any]:
    info = killed_mid_run(jobs, name)
    out = jobs["outputs"][name]
    before, tail = whole_rows(out)
    assert 1 <= len(before) < len(expected_ids), (name, len(before))
    if name == "generate" and not tail:  # what a kill in the middle of a write leaves, made here on purpose
        with open(out, "ab") as f:
            f.write(b'{"id": "q-torn", "steps": ["Step 1: half a rec')
    t0 = time.monotonic()
    assert rerun(jobs, name, monkeypatch, extra_env) == 0
    resume_s = time.monotonic() - t0
    after, after_tail = whole_rows(out)
    assert after_tail == ""  # the file ends with a whole line
    ids = [str(r["id"]) for r in after]
    assert sorted(ids) == sorted(expected_ids) and len(ids) == len(set(ids))  # all there, none twice
    by_id = {str(r["id"]): r for r in after}
    for r in before:  # the records finished before the kill are kept as they were
        assert by_id[str(r["id"])] == r
    result = {
        "killed_after_s": info["after_s"],
        "records_at_kill": len(before),
        "records_total": len(after),
        "torn_line_at_kill": bool(tail),
        "resume_s": round(resume_s, 1),
    }
    record(f"resume_{name}", result)
    return result


def test_generate_resumes_after_sigkill(jobs, monkeypatch, caplog):
    check_jsonl_resume(jobs, "generate", monkeypatch, [f"q{i}" for i in range(N_QUESTIONS)])
    assert "Dropping a torn line" in caplog.text


def test_score_resumes_after_sigkill(jobs, monkeypatch):
    res = check_jsonl_resume(jobs, "score", monkeypatch, [f"c{i}" for i in range(N_SCORE_ROWS)])
    rows, _ = whole_rows(jobs["outputs"]["score"])
    assert all(set(r["scores"]) == {"minprob", "maxprob", "mean_entropy"} for r in rows)
    assert all(len(v) == len(STEPS) for r in rows for v in r["scores"].values())
    assert res["records_at_kill"] >= 1


def test_label_resumes_after_sigkill(jobs, monkeypatch):
    with serve() as api:
        api.verdicts = None
        env = {
            "UHEAD_VIZ_JUDGE_BASE_URL": api.base_url,
            "UHEAD_VIZ_JUDGE_MODEL": "judge-m",
            "NO_PROXY": "127.0.0.1,localhost",
        }
        for var in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
            monkeypatch.delenv(var, raising=False)
        before, _ = whole_rows(jobs["outputs"]["label"])
        check_jsonl_resume(jobs, "label", monkeypatch, [f"l{i}" for i in range(N_LABEL_ROWS)], env)
        asked = {int(m) for r in api.requests for m in re.findall(r"PROBLEM-(\d+):", json.dumps(r["body"]))}
        assert asked and asked.isdisjoint({int(r["id"][1:]) for r in before})  # finished chains not asked again
    rows, _ = whole_rows(jobs["outputs"]["label"])
    assert all(len(r["labels"]) == len(STEPS) and r["label_source"] == "api-judge:judge-m" for r in rows)


def test_train_resumes_after_sigkill(jobs, monkeypatch):
    from safetensors.torch import load_file

    from uhead_viz.uhead import load_head

    info = killed_mid_run(jobs, "train")
    state_dir = jobs["outputs"]["train"].parent
    state = json.loads((state_dir / "state.json").read_text())  # written whole: it parses
    load_file(str(state_dir / "state.safetensors"))  # and so does the tensor state
    at_kill = state["epoch"]
    assert 2 <= at_kill < EPOCHS, at_kill
    assert [e["epoch"] for e in state["log"]] == list(range(1, at_kill + 1))
    t0 = time.monotonic()
    assert rerun(jobs, "train", monkeypatch) == 0
    resume_s = time.monotonic() - t0
    final = json.loads((state_dir / "state.json").read_text())
    epochs = [e["epoch"] for e in final["log"]]
    assert epochs == list(range(1, EPOCHS + 1))  # every epoch once: none lost, none run twice
    assert final["log"][:at_kill] == state["log"]  # the epochs before the kill are kept as they were
    head = load_head(jobs["root"] / "head")
    assert head.training_summary["epochs_run"] == EPOCHS and 0.0 <= head.threshold <= 1.0
    record(
        "resume_train",
        {
            "killed_after_s": info["after_s"],
            "epochs_at_kill": at_kill,
            "epochs_total": EPOCHS,
            "resume_s": round(resume_s, 1),
        },
    )
