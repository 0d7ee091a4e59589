"""The API judge under faults: retried with backoff, then reported per chain; the run goes on.

A real HTTP server on 127.0.0.1 (``judge_api_support``) plays a judge that times out,
answers 429 / 500 / 503, or sends malformed JSON, for chosen chains only. The labeler must
retry each fault with growing delays, give up on a chain with a ``JudgeError`` that names
the last fault, and the ``label`` command must write every other chain, report the failed
ones, and label exactly those when run again.
"""

from __future__ import annotations

import json
import time

import pytest
from judge_api_support import isolate_judge_env, serve

from uhead_viz.cli import main
from uhead_viz.errors import JudgeConfigError, JudgeError
from uhead_viz.labels.api_judge import APIJudgeLabeler
from uhead_viz.steps import Chain

STEPS = [
    "Step 1: In May she sold 48 / 2 = 24 clips.",
    "Step 2: Altogether 48 + 24 = 70 clips.",
    "Step 3: So the answer is 70.",
    "Step 4: Done.",
]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    isolate_judge_env(monkeypatch)
    monkeypatch.setenv("UHEAD_VIZ_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def api():
    with serve() as fake:
        fake.verdicts = None  # one verdict per step, whatever the chain's length (step 2 wrong)
        yield fake


def chain(tag: str) -> Chain:
    return Chain(
        f"PROBLEM-{tag}: Natalia sold 48 clips in April and half as many in May. How many in all?",
        STEPS,
        "70",
        text="",
        prompt_ids=[],
        ids=[],
        spans=[],
    )


FAULTS = {
    "timeout": ({"sleep": 1.0}, "TimeoutError"),
    "HTTP 429": ({"status": 429}, "HTTP 429"),
    "HTTP 500": ({"status": 500}, "HTTP 500"),
    "HTTP 503": ({"status": 503}, "HTTP 503"),
    "malformed JSON": ({"raw": '{"choices": [{"message": '}, "malformed response"),
    "JSON without choices": ({"raw": '{"object": "chat.completion"}'}, "malformed response"),
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_each_fault_is_retried_with_growing_backoff_then_reported(api, tmp_path, fault, bad_inputs):
    behaviour, why = FAULTS[fault]
    api.rules = [("PROBLEM-bad", behaviour)]
    judge = APIJudgeLabeler(
        base_url=api.base_url,
        model="m",
        cache_dir=tmp_path / "c",
        timeout=0.3,
        attempts=4,
        backoff_base=0.1,
        backoff_cap=5.0,
    )
    with pytest.raises(JudgeError, match=f"failed after 4 attempts; last error: {why}") as e:
        judge.label(chain("bad"), None)
    bad_inputs.add("API judge (per chain)", f"server fault: {fault}, every time", str(e.value))
    times = [r["t"] for r in api.requests]
    assert len(times) == 4
    waits = [b - a for a, b in zip(times, times[1:])]
    slack = 1.0 if fault == "timeout" else 0.0  # a timed-out request takes its 0.3 s before the wait
    for k, w in enumerate(waits):
        delay = 0.1 * 2**k  # the backoff drawn is uniform in [delay / 2, delay]
        assert delay / 2 - 0.01 <= w <= delay + 0.35 + slack, (fault, waits)
    # the same fault for a while, then a good answer: the chain is labelled
    api.requests.clear()
    api.rules = [("PROBLEM-flaky", {**behaviour, "times": 2})]
    got = judge.label(chain("flaky"), None)
    assert got.labels == [0, 1, None, None]
    assert len(api.requests) == 4  # two faults, then the critique and the verdicts


def test_the_label_command_reports_failed_chains_and_goes_on(api, tmp_path, monkeypatch, caplog, bad_inputs):
    monkeypatch.setenv("UHEAD_VIZ_JUDGE_BASE_URL", api.base_url)
    monkeypatch.setenv("UHEAD_VIZ_JUDGE_MODEL", "judge-m")
    monkeypatch.setenv("UHEAD_VIZ_JUDGE_TIMEOUT", "0.3")
    monkeypatch.setenv("UHEAD_VIZ_JUDGE_ATTEMPTS", "3")
    monkeypatch.setenv("UHEAD_VIZ_JUDGE_BACKOFF", "0.02")
    src = tmp_path / "chains.jsonl"
    tags = ["ok1", "dead500", "slowonce", "garbled", "limited", "ok2"]
    src.write_text("".join(json.dumps({"id": t, "problem": chain(t).problem, "steps": STEPS}) + "\n" for t in tags))
    api.rules = [
        ("PROBLEM-dead500", {"status": 500}),  # never recovers
        ("PROBLEM-garbled", {"raw": "<html>Bad gateway</html>"}),  # never recovers
        ("PROBLEM-slowonce", {"sleep": 1.0, "times": 1}),  # one timeout, then fine
        ("PROBLEM-limited", {"status": 429, "headers": {"Retry-After": "0"}, "times": 2}),  # rate-limited twice
    ]
    out_dir = tmp_path / "labels"
    args = ["label", "--input", str(src), "--output-dir", str(out_dir), "--labeler", "api-judge"]
    t0 = time.monotonic()
    assert main(args) == 1  # finished, but not everything could be labelled
    seconds = time.monotonic() - t0
    out = out_dir / "chains.jsonl"
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["ok1", "slowonce", "limited", "ok2"]
    assert all(r["labels"] == [0, 1, None, None] and r["label_source"] == "api-judge:judge-m" for r in rows)
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert any("row dead500" in m and "HTTP 500" in m for m in errors), errors
    assert any("row garbled" in m and "malformed response" in m for m in errors), errors
    summary = next(m for m in errors if "could not be labelled" in m)
    assert "2 chain(s)" in summary and "chains.jsonl:dead500" in summary and "Run the same command again" in summary
    bad_inputs.add(
        "CLI label --labeler api-judge",
        "6 chains: 2 always fail (HTTP 500, HTML body), 2 flaky",
        f"exit 1 after {seconds:.1f} s; 4 labelled; {summary}",
    )

    # the server recovers: a rerun labels exactly the two that failed, and nothing twice
    api.rules = []
    api.requests.clear()
    assert main(args) == 0
    asked = {tag for r in api.requests for tag in tags if f"PROBLEM-{tag}" in json.dumps(r["body"])}
    assert asked == {"dead500", "garbled"}
    ids = [json.loads(x)["id"] for x in out.read_text().splitlines()]
    assert sorted(ids) == sorted(tags) and len(ids) == len(set(ids))


def test_a_refused_key_stops_the_run_at_once(api, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("UHEAD_VIZ_JUDGE_BASE_URL", api.base_url)
    monkeypatch.setenv("UHEAD_VIZ_JUDGE_MODEL", "judge-m")
    src = tmp_path / "chains.jsonl"
    src.write_text(
        "".join(json.dumps({"id": t, "problem": chain(t).problem, "steps": STEPS}) + "\n" for t in ("a", "b", "c"))
    )
    api.rules = [("PROBLEM-b", {"status": 401})]
    assert main(["label", "--input", str(src), "--output-dir", str(tmp_path / "o"), "--labeler", "api-judge"]) == 2
    assert "HTTP 401" in capsys.readouterr().err
    assert [json.loads(x)["id"] for x in (tmp_path / "o" / "chains.jsonl").read_text().splitlines()] == ["a"]
    assert sum("PROBLEM-c" in json.dumps(r["body"]) for r in api.requests) == 0  # c was never tried


def test_judge_settings_from_the_environment_are_checked(monkeypatch, tmp_path):
    monkeypatch.setenv("UHEAD_VIZ_JUDGE_ATTEMPTS", "2")
    monkeypatch.setenv("UHEAD_VIZ_JUDGE_BACKOFF", "0.5")
    monkeypatch.setenv("UHEAD_VIZ_JUDGE_TIMEOUT", "7")
    j = APIJudgeLabeler(base_url="http://127.0.0.1:9/v1", model="m", cache_dir=tmp_path)
    assert (j.attempts, j.backoff_base, j.timeout) == (2, 0.5, 7.0)
    for bad in ("0", "-1", "soon", "inf"):
        monkeypatch.setenv("UHEAD_VIZ_JUDGE_TIMEOUT", bad)
        with pytest.raises(JudgeConfigError, match="UHEAD_VIZ_JUDGE_TIMEOUT must be a positive number"):
            APIJudgeLabeler(base_url="http://127.0.0.1:9/v1", model="m", cache_dir=tmp_path)
