"""Reasoning chains as steps, each mapped to the tokens that wrote it.

A step's token span is what every scorer reads, so generated chains and chains
written elsewhere (teacher-forced) must end up in the same shape: the problem,
the step texts, the assistant token ids and one ``[start, end)`` span per step.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

STEP_RE = re.compile(r"^\s*(?:\*\*)?\s*Step\s*(\d+)\s*(?:\*\*)?\s*[:.)-]", re.IGNORECASE)
ANSWER_RE = re.compile(r"^\s*(?:\*\*)?\s*(?:Final\s+)?Answer\s*(?:\*\*)?\s*[:：]\s*(.*)$", re.IGNORECASE)
# C0 controls other than tab, newline and carriage return, and DEL: never meaningful in a
# question or a step, and NUL in particular breaks HTML and some terminals downstream.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
# A lone UTF-16 surrogate is valid in a Python str (JSON's "\\ud800" escape makes one) but
# not in UTF-8: the tokenizer refuses it with a TypeError and writing it to a file fails.
_SURROGATE = re.compile("[\ud800-\udfff]")


def fix_surrogates(text: str) -> str:
    """``text`` with lone surrogates replaced by U+FFFD, so it can be tokenized and written as UTF-8."""
    return _SURROGATE.sub("\ufffd", text)


def clean_text(text: str) -> str:
    """Text a person typed, made safe to tokenize and display: control characters dropped
    (tab, newline and carriage return kept) and lone surrogates replaced."""
    return fix_surrogates(_CONTROL.sub("", text))


@dataclass
class Chain:
    """One reasoning chain: what was asked, the steps, and where each step sits in the token ids."""

    problem: str
    steps: list[str]
    answer: str | None
    text: str  # the assistant text, exactly decode(ids)
    prompt_ids: list[int]
    ids: list[int]  # assistant token ids (no EOS)
    spans: list[tuple[int, int]]  # token [start, end) into ``ids``, one per step
    meta: dict[str, Any] = field(default_factory=dict)

    def to_row(self) -> dict[str, Any]:
        return {
            "problem": self.problem,
            "steps": self.steps,
            "answer": self.answer,
            "text": self.text,
            "ids": self.ids,
            "spans": [list(s) for s in self.spans],
            **self.meta,
        }


def step_body(step: str) -> str:
    """A step's text without its ``Step k:`` marker."""
    return STEP_RE.sub("", step, count=1).strip().strip("*").strip()


@dataclass
class StepRegion:
    text: str
    start: int  # char offset of the step's first char
    end: int  # char offset just past the step's text (before its trailing newline)


def split_text(text: str) -> tuple[list[StepRegion], str | None, int]:
    """Split assistant text into step regions, the answer, and where the answer line starts.

    Lines starting ``Step k:`` open a step; other lines continue it. If the text has no
    ``Step k:`` lines at all, each non-empty line is a step. An ``Answer:`` line ends the
    steps and is not itself a step. Returns (regions, answer or None, answer_line_start).
    """
    lines = text.split("\n")
    offsets = []
    pos = 0
    for line in lines:
        offsets.append(pos)
        pos += len(line) + 1
    use_markers = any(STEP_RE.match(line) for line in lines)
    regions: list[StepRegion] = []
    answer: str | None = None
    answer_start = len(text)
    for line, off in zip(lines, offsets):
        m = ANSWER_RE.match(line)
        if m:
            answer = m.group(1).strip().strip("*").strip()
            answer_start = off
            break
        if not line.strip():
            continue
        end = off + len(line.rstrip())
        starts_step = (not use_markers) or STEP_RE.match(line) or not regions
        if starts_step:
            lead = len(line) - len(line.lstrip())
            regions.append(StepRegion(text="", start=off + lead, end=end))
        else:
            regions[-1].end = end
    for r in regions:
        r.text = text[r.start : r.end]
    return regions, answer, answer_start


def token_char_offsets(tokenizer: Any, ids: list[int]) -> list[tuple[int, int]]:
    """Char ``[start, end)`` of each token in ``decode(ids)``, found by decoding prefixes.

    Decoding prefixes is exact for byte-level BPE, where a token's text can depend on
    its neighbours (split UTF-8 characters); the cost is small for chains of a few
    thousand tokens.
    """
    out = []
    prev = 0
    for i in range(len(ids)):
        n = len(tokenizer.decode(ids[: i + 1], skip_special_tokens=False))
        # a partial UTF-8 char decodes to a replacement char that may shrink later
        n = max(n, prev)
        out.append((prev, n))
        prev = n
    return out


def spans_for(regions: list[StepRegion], offsets: list[tuple[int, int]], limit: int) -> list[tuple[int, int]]:
    """Map step regions to token spans. A token belongs to the step whose region holds its last char.

    Each region reaches to the next region's start, so the newline after a step belongs to
    that step: the step's last token has then read the whole step. Tokens from ``limit``
    (the answer line) on belong to no step.
    """
    bounds = [r.start for r in regions[1:]] + [limit]
    spans = []
    t = 0
    n = len(offsets)
    for r, hi in zip(regions, bounds):
        while t < n and max(offsets[t][0], offsets[t][1] - 1) < r.start:
            t += 1
        s = t
        while t < n and max(offsets[t][0], offsets[t][1] - 1) < hi:
            t += 1
        spans.append((s, max(t, s)))
    return spans


def chain_from_ids(tokenizer: Any, problem: str, prompt_ids: list[int], ids: list[int], **meta: Any) -> Chain:
    """Build a Chain from generated token ids (EOS already removed)."""
    text = tokenizer.decode(ids, skip_special_tokens=False)
    regions, answer, answer_start = split_text(text)
    offsets = token_char_offsets(tokenizer, ids)
    spans = spans_for(regions, offsets, answer_start)
    keep = [i for i, (a, b) in enumerate(spans) if b > a]
    return Chain(
        problem=problem,
        steps=[regions[i].text for i in keep],
        answer=answer,
        text=text,
        prompt_ids=list(prompt_ids),
        ids=list(ids),
        spans=[spans[i] for i in keep],
        meta=dict(meta),
    )


def body_range(tokenizer: Any, chain: Chain, k: int) -> tuple[int, int]:
    """Token ``[start, end)`` of step k without its leading ``Step k:`` marker tokens.

    The marker says where a step starts, not what it says: the baselines read a step's
    probabilities from its body, and a head can pool its body only (``UHeadConfig.pool_body``).
    A step without a marker, or one that is nothing but its marker, keeps its whole span.
    """
    a, b = chain.spans[k]
    m = STEP_RE.match(chain.steps[k]) if k < len(chain.steps) else None
    if m is None:
        return a, b
    marker = m.group(0).strip()
    for j in range(a + 1, b):
        if marker in tokenizer.decode(chain.ids[a:j], skip_special_tokens=False):
            return (j, b) if j < b else (a, b)
    return a, b


def body_spans(tokenizer: Any, chain: Chain) -> list[tuple[int, int]]:
    """``body_range`` of every step."""
    return [body_range(tokenizer, chain, k) for k in range(len(chain.spans))]


def format_steps(steps: list[str], answer: str | None = None) -> str:
    """Render steps written elsewhere in our prompt's format: ``Step k: ...`` lines, then ``Answer:``."""
    lines = []
    for k, s in enumerate(steps, start=1):
        s = s.strip()
        lines.append(s if STEP_RE.match(s) else f"Step {k}: {s}")
    if answer is not None and str(answer).strip():
        lines.append(f"Answer: {str(answer).strip()}")
    return "\n".join(lines) + "\n"


def special_ids(tokenizer: Any) -> set[int]:
    """Ids of the tokenizer's special tokens (``<|im_start|>``, ``<|endoftext|>``...): chat
    structure that text a person wrote must never turn into."""
    ids = {int(i) for i in getattr(tokenizer, "all_special_ids", []) or []}
    for i, tok in (getattr(tokenizer, "added_tokens_decoder", None) or {}).items():
        if getattr(tok, "special", False):
            ids.add(int(i))
    return ids


def chain_from_steps(
    tokenizer: Any, problem: str, prompt_ids: list[int], steps: list[str], answer: str | None = None, **meta: Any
) -> Chain:
    """Teacher-forcing input: steps written elsewhere, tokenized as if the model had written them.

    Step boundaries come from the list itself (not from re-splitting), so a multi-line
    step stays one step.
    """
    steps = [fix_surrogates(s) for s in steps]
    if answer is not None:
        answer = fix_surrogates(str(answer))
    text = format_steps(steps, answer)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, split_special_tokens=True)
    ids = list(enc["input_ids"])
    offsets = [tuple(o) for o in enc["offset_mapping"]]
    regions = []
    pos = 0
    for k, s in enumerate(steps, start=1):
        s = s.strip()
        rendered = s if STEP_RE.match(s) else f"Step {k}: {s}"
        start = text.index(rendered, pos)
        regions.append(StepRegion(text=rendered, start=start, end=start + len(rendered)))
        pos = start + len(rendered)
    shown = [r.text for r in regions]
    answer_start = text.rfind("\nAnswer:") + 1 if answer is not None and str(answer).strip() else len(text)
    spans = spans_for(regions, offsets, answer_start)
    return Chain(
        problem=problem,
        steps=shown,
        answer=str(answer).strip() if answer is not None else None,
        text=text,
        prompt_ids=list(prompt_ids),
        ids=ids,
        spans=spans,
        meta=dict(meta),
    )
