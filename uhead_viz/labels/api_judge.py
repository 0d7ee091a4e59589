"""Step labels from an LLM judge behind any OpenAI-compatible chat-completions API.

This is the annotation protocol of Ni et al. (2025), who labelled steps with DeepSeek R1:
a strong model is shown the problem, a reference solution and the numbered steps, and
first writes a free-form critique of every step (call 1). Only then is it asked to turn
that critique into a strict JSON list with one verdict per step (call 2). Splitting the
two keeps the judging unconstrained by the output format and makes the second reply
easy to parse. Labels: the first step judged wrong is 1, the steps before it are 0, and
the steps after it are None (the ProcessBench convention: once a chain has gone wrong,
later steps have no well-defined label). A chain judged all correct is all 0.

Configuration comes from constructor arguments or the environment:
``UHEAD_VIZ_JUDGE_BASE_URL`` (else ``OPENAI_BASE_URL``), ``UHEAD_VIZ_JUDGE_MODEL`` and
``UHEAD_VIZ_JUDGE_API_KEY`` (else ``OPENAI_API_KEY``; optional, local servers such as
vLLM need none); ``UHEAD_VIZ_JUDGE_TIMEOUT`` (seconds per request, 120),
``UHEAD_VIZ_JUDGE_ATTEMPTS`` (5) and ``UHEAD_VIZ_JUDGE_BACKOFF`` (first retry delay, 1 s).
HTTP is plain ``urllib`` so the project gains no dependency.

Labelling thousands of chains over a network meets rate limits and flaky servers, and a
rerun must not pay twice, hence: retries with capped exponential backoff and jitter on
timeouts, connection errors, 408/409/425/429 and 5xx (honouring ``Retry-After``) and on
malformed bodies; a re-ask (showing the model its unusable reply) when the verdict list
does not parse; and an on-disk cache of every well-formed response, keyed by the sha256
of the request without the API key, so a repeated run makes no HTTP calls. When the
retries are spent a ``JudgeError`` is raised, which a batch run reports for that chain
before going on; a wrong key, URL or model (401/403/404) raises ``JudgeConfigError``
at once, since every later chain would fail the same way.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import os
import random
import re
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

from .. import settings
from ..errors import JudgeConfigError, JudgeError, ReplyError
from ..packs import cache_dir as default_cache_root
from ..steps import Chain, step_body
from .base import Labeler, StepLabels, first_error_labels, register
from .reference import strip_annotations

logger = logging.getLogger(__name__)

# named in messages; read by ``settings`` (with the timeout, attempts and backoff: the label
# command has no flags for how patient to be with one server)
ENV_BASE_URL, ENV_MODEL, ENV_API_KEY = "UHEAD_VIZ_JUDGE_BASE_URL", "UHEAD_VIZ_JUDGE_MODEL", "UHEAD_VIZ_JUDGE_API_KEY"
# A strong model checking against a reference still misses or invents some errors, so its
# verdicts rank below a verified arithmetic slip (checks: 0.95) but above "the final
# answer was right" (checks: 0.7), which says nothing direct about any one step.
CONF_JUDGE = 0.8
CONF_JUDGE_NO_REFERENCE = 0.6  # without a reference the judge must also solve the problem itself
RETRY_STATUS = {408, 409, 425, 429}  # plus every 5xx
CONFIG_STATUS = {401, 403, 404}  # wrong key, URL or model: no chain can succeed
MAX_RETRY_AFTER = 300.0  # seconds; a longer Retry-After is capped rather than obeyed

SYSTEM = "You are a meticulous grader of step-by-step math solutions."
CRITIQUE_PROMPT = """Problem:
{problem}

Reference solution:
{reference}

A student's solution, in numbered steps:
{steps}

Final answer given by the student: {answer}

Check each of the {n} steps in order against the problem and the reference solution. A step
is correct when its arithmetic is right, its reasoning is valid and it uses the facts of the
problem correctly; a different route from the reference is fine if it is valid. Write one short
critique per step, as "Step k: correct" or "Step k: incorrect", followed by the reason."""
NO_REFERENCE = "(none available: solve the problem yourself to check the steps)"
VERDICT_PROMPT = """Now give your verdict on each of the {n} steps as a JSON list with exactly {n}
entries in step order, for example [{{"step": 1, "correct": true}}, {{"step": 2, "correct": false}}].
Reply with the JSON list only."""

CORRECT_WORDS = {"correct", "true", "yes", "right", "ok", "valid", "good", "pass", "+"}
WRONG_WORDS = {"incorrect", "false", "no", "wrong", "invalid", "bad", "error", "erroneous", "fail", "-"}
VERDICT_KEYS = ("correct", "is_correct", "verdict", "label", "judgement", "judgment", "status")
STEP_KEYS = ("step", "step_number", "index")
_FENCE = re.compile(r"```[\w-]*[ \t]*\n?(.*?)```", re.S)
_THINK = re.compile(r"<think>.*?</think>", re.S | re.I)


class _Mismatch(ReplyError):
    """A list of verdicts, but not one per step 1..n."""


def strip_think(text: str) -> str:
    """Drop ``<think>...</think>`` blocks that reasoning models put before their answer."""
    return _THINK.sub("", text).strip()


def _as_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        word = value.strip().strip(".!").strip().lower()
        if word in CORRECT_WORDS:
            return True
        if word in WRONG_WORDS:
            return False
    raise ReplyError(f"not a verdict: {value!r}")


def _entry(item: Any) -> tuple[int | None, bool]:
    """(step number or None, is correct) from a bool, a word or an object like {"step": 1, "correct": true}."""
    if not isinstance(item, dict):
        return None, _as_bool(item)
    key = next((k for k in VERDICT_KEYS if k in item), None)
    if key is None:
        raise ReplyError(f"no verdict key in {item!r}")
    step = next((item[k] for k in STEP_KEYS if k in item), None)
    if isinstance(step, str) and step.strip().isdigit():
        step = int(step)
    if step is not None and (isinstance(step, bool) or not isinstance(step, int)):
        raise ReplyError(f"bad step number in {item!r}")
    return step, _as_bool(item[key])


def _to_verdicts(items: list[Any], n: int) -> list[bool]:
    entries = [_entry(x) for x in items]  # a shape error here means "not the verdict list"
    if len(entries) != n:
        raise _Mismatch(f"{len(entries)} verdicts for {n} steps")
    steps = [s for s, _ in entries]
    if all(s is None for s in steps):
        return [ok for _, ok in entries]
    if sorted(s for s in steps if s is not None) != list(range(1, n + 1)):
        raise _Mismatch(f"the step numbers {steps} are not 1..{n} once each")
    return [ok for _, ok in sorted(entries, key=lambda e: e[0] or 0)]


def parse_verdicts(text: str, n: int) -> list[bool]:
    """One verdict per step (True = correct) from a judge's reply, or ``ReplyError``.

    The first JSON array whose entries all read as verdicts is the answer, looked for inside
    code fences first, then anywhere (prose around it is ignored). Entries may be booleans,
    words ("correct", "incorrect", ...) or objects with a verdict key and optionally a step
    number. A list of the wrong length, or with step numbers other than 1..n, is refused:
    guessing which step a verdict belongs to would make wrong labels look trustworthy.
    """
    text = strip_think(text)
    decoder = json.JSONDecoder()
    for chunk in [*_FENCE.findall(text), text]:
        for start in (m.start() for m in re.finditer(r"\[", chunk)):
            try:
                items, _ = decoder.raw_decode(chunk, start)
            except json.JSONDecodeError:
                continue
            if not isinstance(items, list) or not items:
                continue
            try:
                return _to_verdicts(items, n)
            except _Mismatch:
                raise  # verdicts, but not one per step: refuse rather than look further
            except ReplyError:
                continue  # not a verdict list (``[1]`` in prose, say): look further
    raise ReplyError("no JSON list of verdicts found")


def verdicts_to_labels(verdicts: list[bool], confidence: float, source: str) -> StepLabels:
    """0 up to the first step judged wrong, 1 there, None after it (ProcessBench convention)."""
    labels = first_error_labels(next((i for i, ok in enumerate(verdicts) if not ok), -1), len(verdicts))
    conf = [0.0 if lab is None else confidence for lab in labels]
    notes = ["judged incorrect" if lab == 1 else "" for lab in labels]
    return StepLabels(labels=labels, confidence=conf, source=source, notes=notes)


def _retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (seconds or an HTTP date), or None."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def _content(response: Any) -> str:
    """The reply text of a chat-completions response; ValueError when the body is not one."""
    try:
        text = response["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError) as e:
        raise ValueError(f"no choices[0].message.content in the response ({e!r})") from None
    if not isinstance(text, str) or not strip_think(text):
        raise ValueError("the reply is empty")
    return text


@register
class APIJudgeLabeler(Labeler):
    """The two-call critique-then-verdict protocol against an OpenAI-compatible endpoint."""

    name = "api-judge"

    def __init__(
        self,
        base_url: str | None = None,
        model: str | None = None,
        api_key: str | None = None,
        cache_dir: str | Path | None = None,
        timeout: float | None = None,
        attempts: int | None = None,
        backoff_base: float | None = None,
        backoff_cap: float = 60.0,
        temperature: float = 0.0,
        max_tokens: int = 4096,
    ) -> None:
        self.base_url = (base_url or settings.judge_base_url() or "").strip()
        self.model = (model or settings.judge_model() or "").strip()
        self.api_key = api_key or settings.judge_api_key()
        missing = [f"the base URL ({ENV_BASE_URL} or OPENAI_BASE_URL)"] if not self.base_url else []
        missing += [f"the model ({ENV_MODEL})"] if not self.model else []
        if missing:
            raise JudgeConfigError(
                f"The API judge needs {' and '.join(missing)}: set the environment variable(s) or pass them in. "
                f"The API key comes from {ENV_API_KEY} or OPENAI_API_KEY."
            )
        parts = urllib.parse.urlsplit(self.base_url)
        if parts.scheme not in ("http", "https"):
            raise JudgeConfigError(f"The judge base URL must start with http:// or https://, not {self.base_url!r}.")
        path = parts.path.rstrip("/")
        path = path if path.endswith("/chat/completions") else path + "/chat/completions"
        self.url = urllib.parse.urlunsplit(parts._replace(path=path))
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_root() / "api_judge"
        self.timeout = timeout if timeout is not None else settings.judge_timeout()
        self.attempts = max(1, int(attempts)) if attempts is not None else settings.judge_attempts()
        self.backoff_base = backoff_base if backoff_base is not None else settings.judge_backoff()
        self.backoff_cap = backoff_cap
        self.temperature, self.max_tokens = temperature, max_tokens
        self.source = f"{self.name}:{self.model}"
        self._rng = random.Random()

    def label(self, chain: Chain, reference: str | None) -> StepLabels:
        n = len(chain.steps)
        if n == 0:
            return StepLabels(labels=[], confidence=[], source=self.source)
        messages = self.critique_messages(chain, reference)
        critique = strip_think(self.complete(messages))
        messages += [
            {"role": "assistant", "content": critique},
            {"role": "user", "content": VERDICT_PROMPT.format(n=n)},
        ]
        verdicts = self._verdicts(messages, n)
        conf = CONF_JUDGE if reference and reference.strip() else CONF_JUDGE_NO_REFERENCE
        return verdicts_to_labels(verdicts, conf, self.source)

    def critique_messages(self, chain: Chain, reference: str | None) -> list[dict[str, str]]:
        """Call 1: problem, reference and numbered steps; asks for a critique of every step."""
        ref = (reference or "").strip()
        ref = strip_annotations(ref).replace("####", "Final answer:") if ref else NO_REFERENCE
        steps = "\n".join(f"Step {i}: {step_body(s)}" for i, s in enumerate(chain.steps, start=1))
        user = CRITIQUE_PROMPT.format(
            problem=chain.problem.strip(),
            reference=ref,
            steps=steps,
            answer=chain.answer or "(none)",
            n=len(chain.steps),
        )
        return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]

    def _verdicts(self, messages: list[dict[str, str]], n: int) -> list[bool]:
        """Call 2, re-asked (with the unusable reply shown back) until it parses or the attempts run out."""
        asked, why = messages, ""
        for attempt in range(1, self.attempts + 1):
            reply = self.complete(asked)
            try:
                return parse_verdicts(reply, n)
            except ReplyError as e:
                why = str(e)
                logger.warning("Judge verdict reply %d/%d unusable (%s); asking again", attempt, self.attempts, why)
                asked = messages + [
                    {"role": "assistant", "content": reply},
                    {"role": "user", "content": f"That reply is not usable ({why}). " + VERDICT_PROMPT.format(n=n)},
                ]
        raise JudgeError(f"The judge gave no usable verdict list after {self.attempts} tries: {why}.")

    def request_body(self, messages: list[dict[str, str]]) -> dict[str, Any]:
        return {
            "model": self.model,
            "messages": messages,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
        }

    def cache_key(self, body: dict[str, Any]) -> str:
        """sha256 of the canonical request: URL (without credentials) and body; never the API key."""
        parts = urllib.parse.urlsplit(self.url)
        query = [(k, v) for k, v in urllib.parse.parse_qsl(parts.query) if "key" not in k.lower()]
        host = parts.hostname or ""
        netloc = f"{host}:{parts.port}" if parts.port else host
        url = urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, urllib.parse.urlencode(query), ""))
        canon = json.dumps({"url": url, **body}, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(canon.encode("utf-8")).hexdigest()

    def complete(self, messages: list[dict[str, str]]) -> str:
        """The reply to ``messages``: from the cache, else from the server (then cached)."""
        body = self.request_body(messages)
        path = self.cache_dir / f"{self.cache_key(body)}.json"
        if path.is_file():
            try:
                return _content(json.loads(path.read_text(encoding="utf-8")))
            except (OSError, ValueError) as e:
                logger.warning("Ignoring unreadable judge cache file %s (%s)", path, e)
        response = self._post(body)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.cache_dir, suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(response, f, ensure_ascii=False)
        os.replace(tmp, path)  # readers never see a half-written file
        return _content(response)

    def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        """POST with retries; returns a response that holds reply text."""
        data = json.dumps(body).encode("utf-8")
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        why = ""
        for attempt in range(1, self.attempts + 1):
            wait = None
            try:
                req = urllib.request.Request(self.url, data=data, headers=headers, method="POST")
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                    response = json.loads(resp.read().decode("utf-8"))
                _content(response)  # a body without reply text counts as malformed and is retried
                if response["choices"][0].get("finish_reason") == "length":
                    logger.warning("The judge's reply hit max_tokens=%d; raise it if replies are cut", self.max_tokens)
                return response
            except urllib.error.HTTPError as e:
                detail = e.read(500).decode("utf-8", "replace").strip()
                if e.code in CONFIG_STATUS:
                    raise JudgeConfigError(
                        f"The judge at {self.url} refused the request with HTTP {e.code} ({detail or e.reason}): "
                        f"check the key ({ENV_API_KEY} or OPENAI_API_KEY), the base URL and the model {self.model!r}."
                    ) from None
                if e.code not in RETRY_STATUS and e.code < 500:
                    raise JudgeError(
                        f"The judge refused the request with HTTP {e.code}: {detail or e.reason}"
                    ) from None
                why, wait = f"HTTP {e.code}", _retry_after(e.headers.get("Retry-After") if e.headers else None)
            except (OSError, http.client.HTTPException) as e:  # timeouts, refused or dropped connections
                why = f"{type(e).__name__}: {getattr(e, 'reason', e)}"
            except ValueError as e:  # json.JSONDecodeError and UnicodeDecodeError are ValueErrors
                why = f"malformed response: {e}"
            if attempt == self.attempts:
                break
            if wait is None:
                delay = min(self.backoff_cap, self.backoff_base * 2 ** (attempt - 1))
                wait = self._rng.uniform(delay / 2, delay)  # jitter spreads out clients that failed together
            wait = min(wait, MAX_RETRY_AFTER)
            logger.warning("Judge request %d/%d failed (%s); retrying in %.2f s", attempt, self.attempts, why, wait)
            time.sleep(wait)
        raise JudgeError(f"The judge at {self.url} failed after {self.attempts} attempts; last error: {why}.")
