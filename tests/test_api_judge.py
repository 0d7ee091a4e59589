"""The API judge labeler against a real local HTTP server that fakes chat completions.

The server (``judge_api_support``) runs in a thread on 127.0.0.1 (port 0) and follows a
script: each request pops the next scripted behaviour (a status, a delay, a raw body, a reply
text) and otherwise answers like a judge: a critique to the first call, the verdict list to
the second. Backoff is made tiny so every retry path runs in milliseconds.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from judge_api_support import CRITIQUE, Handler, Server, isolate_judge_env, serve

from uhead_viz.errors import InputError, JudgeConfigError, JudgeError, ReplyError
from uhead_viz.labels import get_labeler
from uhead_viz.labels.api_judge import (
    CONF_JUDGE,
    CONF_JUDGE_NO_REFERENCE,
    APIJudgeLabeler,
    parse_verdicts,
    verdicts_to_labels,
)
from uhead_viz.steps import Chain

KEY = "sk-test-secret-0123456789"
REFERENCE = "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nAltogether 48+24 = <<48+24=72>>72 clips.\n#### 72"


def make_chain(n: int = 4) -> Chain:
    steps = [
        "Step 1: In May she sold 48 / 2 = 24 clips.",
        "Step 2: Altogether 48 + 24 = 70 clips.",
        "Step 3: So the answer is 70.",
        "Step 4: Done.",
    ][:n]
    return Chain(
        "Natalia sold clips to 48 friends in April and half as many in May. How many in all?",
        steps,
        "70",
        text="",
        prompt_ids=[1],
        ids=[2],
        spans=[(0, 1)] * n,
    )


@pytest.fixture
def api():
    with serve() as fake:
        yield fake


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    isolate_judge_env(monkeypatch)


@pytest.fixture
def judge(api, tmp_path):
    def make(**kw: Any) -> APIJudgeLabeler:
        args: dict[str, Any] = dict(
            base_url=api.base_url,
            model="judge-m",
            api_key=KEY,
            cache_dir=tmp_path / "cache",
            timeout=5.0,
            attempts=3,
            backoff_base=0.001,
            backoff_cap=0.005,
        )
        args.update(kw)
        return APIJudgeLabeler(**args)

    return make


# ---------------------------------------------------------------- the protocol


def test_two_calls_give_labels_with_none_after_first_wrong_step(api, judge):
    got = judge().label(make_chain(), REFERENCE)
    assert got.labels == [0, 1, None, None]
    assert got.confidence == [CONF_JUDGE, CONF_JUDGE, 0.0, 0.0]
    assert got.source == "api-judge:judge-m"
    assert got.notes[1] and not got.notes[0]
    assert len(api.requests) == 2
    first, second = (r["body"] for r in api.requests)
    assert all(r["path"] == "/v1/chat/completions" for r in api.requests)
    assert first["model"] == "judge-m" and first["temperature"] == 0 and first["max_tokens"] == 4096
    prompt = first["messages"][-1]["content"]
    assert "48 friends" in prompt and "Step 2: Altogether 48 + 24 = 70 clips." in prompt
    assert "Step 2: Step 2" not in prompt  # the steps' own markers are replaced by the numbering
    assert "Final answer: 72" in prompt and "<<" not in prompt  # GSM8K calculator notes dropped
    assert second["messages"][: len(first["messages"])] == first["messages"]
    assert second["messages"][-2] == {"role": "assistant", "content": CRITIQUE}
    assert "exactly 4" in second["messages"][-1]["content"]


def test_all_correct_and_no_reference(api, judge):
    api.verdicts = "[true, true, true, true]"
    got = judge(max_tokens=64).label(make_chain(), None)
    assert got.labels == [0, 0, 0, 0]
    assert got.confidence == [CONF_JUDGE_NO_REFERENCE] * 4
    assert "none available" in api.requests[0]["body"]["messages"][-1]["content"]
    assert api.requests[0]["body"]["max_tokens"] == 64


def test_first_step_wrong(api, judge):
    api.verdicts = '```json\n["incorrect", "correct", "incorrect", "correct"]\n```'
    assert judge().label(make_chain(), REFERENCE).labels == [1, None, None, None]


def test_empty_chain_makes_no_request(api, judge):
    got = judge().label(make_chain(0), REFERENCE)
    assert got.labels == [] and api.requests == []


def test_registered_and_built_by_name(api, tmp_path):
    lab = get_labeler("api-judge", base_url=api.base_url, model="m", cache_dir=tmp_path)
    assert isinstance(lab, APIJudgeLabeler) and lab.url == api.base_url + "/chat/completions"


# ---------------------------------------------------------------- retries


def test_429_then_success_honours_retry_after(api, judge):
    api.script = [{"status": 429, "headers": {"Retry-After": "0"}}]
    lab = judge(backoff_base=30.0, backoff_cap=30.0)  # only Retry-After: 0 keeps this test fast
    start = time.monotonic()
    assert lab.label(make_chain(), REFERENCE).labels == [0, 1, None, None]
    assert time.monotonic() - start < 10
    assert len(api.requests) == 3


def test_500_then_success(api, judge):
    api.script = [{"status": 500}, {}, {"status": 503}]
    assert judge().label(make_chain(), REFERENCE).labels == [0, 1, None, None]
    assert len(api.requests) == 4


def test_timeout_then_success(api, judge):
    api.script = [{"sleep": 1.5}]
    assert judge(timeout=0.5).label(make_chain(), REFERENCE).labels == [0, 1, None, None]
    assert len(api.requests) == 3


def test_malformed_body_then_success(api, judge):
    api.script = [{"raw": "{not json"}, {"raw": json.dumps({"choices": []})}]
    assert judge(attempts=3).label(make_chain(), REFERENCE).labels == [0, 1, None, None]
    assert len(api.requests) == 4


def test_unparseable_verdicts_are_asked_again(api, judge):
    api.script = [{}, {"content": "Steps 1 and 3 are fine, step 2 is wrong."}]
    assert judge().label(make_chain(), REFERENCE).labels == [0, 1, None, None]
    assert len(api.requests) == 3
    reask = api.requests[2]["body"]["messages"]
    assert reask[-2]["content"] == "Steps 1 and 3 are fine, step 2 is wrong."
    assert "not usable" in reask[-1]["content"]


def test_wrong_length_is_refused_not_guessed(api, judge):
    api.verdicts = "[true, false]"
    with pytest.raises(JudgeError, match="2 verdicts for 4 steps"):
        judge(attempts=2).label(make_chain(), REFERENCE)
    assert len(api.requests) == 3  # critique, verdicts, one re-ask


def test_persistent_failure_raises_judge_error_after_all_attempts(api, judge):
    api.script = [{"status": 502}] * 10
    start = time.monotonic()
    with pytest.raises(JudgeError, match="after 4 attempts.*HTTP 502") as err:
        judge(attempts=4).label(make_chain(), REFERENCE)
    assert isinstance(err.value, InputError)
    assert len(api.requests) == 4
    assert time.monotonic() - start < 5


def test_connection_refused_raises_judge_error(tmp_path):
    server = Server(("127.0.0.1", 0), Handler)
    port = server.server_address[1]
    server.server_close()  # nothing listens there now
    lab = APIJudgeLabeler(
        base_url=f"http://127.0.0.1:{port}", model="m", cache_dir=tmp_path, attempts=2, backoff_base=0.001
    )
    with pytest.raises(JudgeError, match="after 2 attempts"):
        lab.label(make_chain(), REFERENCE)


@pytest.mark.parametrize("status", [401, 403, 404])
def test_auth_and_not_found_fail_fast(api, judge, status):
    api.script = [{"status": status}] * 5
    with pytest.raises(JudgeConfigError, match=f"HTTP {status}.*UHEAD_VIZ_JUDGE_API_KEY"):
        judge(attempts=5).label(make_chain(), REFERENCE)
    assert len(api.requests) == 1


def test_400_fails_fast_as_a_per_chain_error(api, judge):
    api.script = [{"status": 400, "raw": '{"error": "context too long"}'}]
    with pytest.raises(JudgeError, match="HTTP 400.*context too long"):
        judge(attempts=5).label(make_chain(), REFERENCE)
    assert len(api.requests) == 1


# ---------------------------------------------------------------- cache and key


def test_second_run_is_served_from_the_cache(api, judge, tmp_path):
    first = judge().label(make_chain(), REFERENCE)
    assert len(api.requests) == 2
    again = judge().label(make_chain(), REFERENCE)  # a fresh labeler: only the disk is shared
    assert again == first and len(api.requests) == 2
    files = sorted((tmp_path / "cache").iterdir())
    assert len(files) == 2 and all(f.suffix == ".json" for f in files)  # no temp files left
    judge(model="other").label(make_chain(), REFERENCE)  # a different request is not a cache hit
    assert len(api.requests) == 4


def test_reasked_run_replays_from_cache(api, judge):
    api.script = [{}, {"content": "no list here"}]
    judge().label(make_chain(), REFERENCE)
    assert len(api.requests) == 3
    assert judge().label(make_chain(), REFERENCE).labels == [0, 1, None, None]
    assert len(api.requests) == 3


def test_failed_requests_are_not_cached(api, judge, tmp_path):
    api.script = [{"raw": "oops"}] * 2
    with pytest.raises(JudgeError):
        judge(attempts=2).label(make_chain(), REFERENCE)
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").iterdir())
    assert judge().label(make_chain(), REFERENCE).labels == [0, 1, None, None]


def test_key_is_a_bearer_header_and_never_in_the_cache(api, judge, tmp_path):
    judge().label(make_chain(), REFERENCE)
    assert all(r["headers"]["Authorization"] == f"Bearer {KEY}" for r in api.requests)
    for f in (tmp_path / "cache").iterdir():
        assert KEY not in f.name and KEY not in f.read_text()
    other_key = judge(api_key="sk-another-key")
    body = other_key.request_body([{"role": "user", "content": "x"}])
    assert other_key.cache_key(body) == judge().cache_key(body)  # the key does not change the cache key
    other_key.label(make_chain(), REFERENCE)
    assert len(api.requests) == 2  # so a new key reuses the cache


def test_no_key_sends_no_authorization_header(api, judge):
    judge(api_key="").label(make_chain(), REFERENCE)
    assert all("Authorization" not in r["headers"] for r in api.requests)


def test_cache_key_drops_credentials_in_the_url(tmp_path):
    def key(url: str) -> str:
        lab = APIJudgeLabeler(base_url=url, model="m", cache_dir=tmp_path)
        return lab.cache_key(lab.request_body([{"role": "user", "content": "x"}]))

    plain = key("https://host.example/v1?api-version=1")
    assert key("https://user:secret@host.example/v1?api-version=1&api_key=secret") == plain
    assert key("https://host.example/v1?api-version=2") != plain


def test_corrupt_cache_file_is_refetched(api, judge, tmp_path):
    judge().label(make_chain(), REFERENCE)
    for f in (tmp_path / "cache").iterdir():
        f.write_text("{torn")
    assert judge().label(make_chain(), REFERENCE).labels == [0, 1, None, None]
    assert len(api.requests) == 4


# ---------------------------------------------------------------- configuration


def test_missing_configuration_names_the_variables(tmp_path):
    with pytest.raises(JudgeConfigError, match="UHEAD_VIZ_JUDGE_BASE_URL.*OPENAI_BASE_URL.*UHEAD_VIZ_JUDGE_MODEL"):
        APIJudgeLabeler(cache_dir=tmp_path)
    with pytest.raises(InputError, match="UHEAD_VIZ_JUDGE_MODEL") as err:
        APIJudgeLabeler(base_url="http://127.0.0.1:1/v1", cache_dir=tmp_path)
    assert "BASE_URL" not in str(err.value)  # only what is missing is named
    with pytest.raises(JudgeConfigError, match="http"):
        APIJudgeLabeler(base_url="127.0.0.1:8000/v1", model="m", cache_dir=tmp_path)


def test_configuration_from_the_environment(api, monkeypatch, tmp_path):
    monkeypatch.setenv("OPENAI_BASE_URL", "http://unused.example/v1")
    monkeypatch.setenv("UHEAD_VIZ_JUDGE_BASE_URL", api.base_url + "/chat/completions/")
    monkeypatch.setenv("UHEAD_VIZ_JUDGE_MODEL", "env-model")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-openai-var")
    monkeypatch.setenv("UHEAD_VIZ_CACHE", str(tmp_path / "root"))
    lab = APIJudgeLabeler(backoff_base=0.001)
    assert lab.url == api.base_url + "/chat/completions"
    assert lab.cache_dir == tmp_path / "root" / "api_judge"
    assert lab.label(make_chain(), REFERENCE).source == "api-judge:env-model"
    assert api.requests[0]["headers"]["Authorization"] == "Bearer sk-from-openai-var"
    monkeypatch.setenv("UHEAD_VIZ_JUDGE_API_KEY", "sk-judge-var")
    assert APIJudgeLabeler().api_key == "sk-judge-var"


# ---------------------------------------------------------------- the reply parser


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[{"step": 1, "correct": true}, {"step": 2, "correct": false}]', [True, False]),
        ('[{"step": 2, "correct": false}, {"step": 1, "correct": true}]', [True, False]),  # reordered by number
        ('[{"step": "1", "verdict": "correct"}, {"step": "2", "verdict": "Incorrect."}]', [True, False]),
        ('[{"is_correct": true}, {"is_correct": false}]', [True, False]),
        ("[true, false]", [True, False]),
        ('["correct", "incorrect"]', [True, False]),
        ('["Correct", "WRONG"]', [True, False]),
        ('["yes", "no"]', [True, False]),
        ("```json\n[true, true]\n```", [True, True]),
        ('```\n["correct", "correct"]\n```', [True, True]),
        ("Here is my verdict:\n[true, false]\nHope this helps.", [True, False]),
        ("See [1] above. Verdicts: [false, true]", [False, True]),  # a non-verdict array is skipped
        ('{"verdicts": [true, false]}', [True, False]),
        ("<think>maybe [false, false]?</think>\n[true, false]", [True, False]),
        ('[{"step": 1, "correct": true, "reason": "ok"},\n {"step": 2, "correct": "false"}]', [True, False]),
        ("prose ```json\n[false, true]\n``` then [true, true]", [False, True]),  # fenced list first
    ],
)
def test_parse_verdicts_shapes(text, expected):
    assert parse_verdicts(text, len(expected)) == expected


@pytest.mark.parametrize(
    ("text", "n", "match"),
    [
        ("[true, false, true]", 2, "3 verdicts for 2 steps"),
        ('[{"step": 1, "correct": true}]', 2, "1 verdicts for 2 steps"),
        ('[{"step": 1, "correct": true}, {"step": 1, "correct": false}]', 2, "not 1..2"),
        ('[{"step": 0, "correct": true}, {"step": 1, "correct": false}]', 2, "not 1..2"),
        ('[{"step": 1, "correct": true}, {"correct": false}]', 2, "not 1..2"),
        ("Step 1 is right and step 2 is wrong.", 2, "no JSON list"),
        ("[1, 0]", 2, "no JSON list"),  # 0/1 could mean either; refused
        ('["maybe", "correct"]', 2, "no JSON list"),
        ('[{"step": 1}, {"step": 2}]', 2, "no JSON list"),
        ("[]", 2, "no JSON list"),
        ("[true, false", 2, "no JSON list"),
        ("", 2, "no JSON list"),
    ],
)
def test_parse_verdicts_refuses(text, n, match):
    with pytest.raises(ReplyError, match=match):
        parse_verdicts(text, n)


def test_verdicts_to_labels():
    got = verdicts_to_labels([True, True, False, False, True], 0.8, "s")
    assert got.labels == [0, 0, 1, None, None]
    assert got.confidence == [0.8, 0.8, 0.8, 0.0, 0.0]
    assert verdicts_to_labels([True, True], 0.8, "s").labels == [0, 0]
