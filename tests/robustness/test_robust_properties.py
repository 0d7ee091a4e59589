"""Property-based tests: the parsers take anything and fail only with the project's own errors.

Arbitrary text goes to the step splitter and the paste parser, arbitrary bytes and mangled
JSON to the JSON/JSONL readers, the upload reader and the resumable writer, and arbitrary
rows to the ProcessBench importer and the row-to-chain builder. Each may refuse input, but
only with ``InputError`` / ``RowError`` (both ``ValueError``s with a message for a person),
never with a ``RecursionError``, ``TypeError`` or a crash.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from uhead_viz.chains_io import parse_steps, read_dataset
from uhead_viz.errors import InputError, RowError
from uhead_viz.jsonl import ResumableWriter, read_rows
from uhead_viz.labels.human import processbench_rows, to_processbench
from uhead_viz.scoring import row_to_chain
from uhead_viz.steps import chain_from_steps, format_steps, special_ids, split_text, step_body

SETTINGS = settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)

# text with the characters that matter to the parsers: markers, newlines, specials, controls
PIECES = st.sampled_from(
    [
        "Step 1:",
        "Step 2.",
        "**Step 3**:",
        "step 10)",
        "Answer:",
        "Final Answer：",
        "\n",
        "\n\n",
        "\r\n",
        "\r",
        " ",
        "\t",
        "<|im_start|>",
        "<|im_end|>",
        "<|endoftext|>",
        "\x00",
        "\x1b",
        "\ufeff",
        "é",
        "😀",
        "{",
        "}",
        "[",
        "]",
        '"',
        "\\",
        "48 / 2 = 24",
        "= 72",
        "*",
        "-",
        "#",
    ]
)
TEXT = st.one_of(st.text(), st.lists(st.one_of(PIECES, st.text(max_size=5)), max_size=40).map("".join))
JSON_LEAF = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), TEXT)
JSON = st.recursive(
    JSON_LEAF, lambda c: st.one_of(st.lists(c, max_size=4), st.dictionaries(TEXT, c, max_size=4)), max_leaves=12
)


def _tmp(data: bytes, suffix: str = ".jsonl") -> Path:
    d = Path(tempfile.mkdtemp(prefix="uhead-prop-"))
    p = d / f"f{suffix}"
    p.write_bytes(data)
    return p


@st.composite
def file_bytes(draw) -> bytes:
    """Bytes that are sometimes garbage, sometimes JSON Lines or a JSON list, often mangled."""
    kind = draw(st.sampled_from(["binary", "jsonl", "list", "text"]))
    if kind == "binary":
        return draw(st.binary(max_size=300))
    if kind == "text":
        return draw(TEXT).encode("utf-8", "surrogatepass")
    rows = draw(st.lists(JSON, max_size=6))
    if kind == "jsonl":
        data = "\n".join(json.dumps(r, ensure_ascii=draw(st.booleans())) for r in rows)
    else:
        data = json.dumps(rows)
    raw = data.encode("utf-8", "surrogatepass")
    cut = draw(st.integers(0, len(raw)))
    return raw[:cut] if draw(st.booleans()) else raw


# ----- the step splitter ---------------------------------------------------------------------------
@SETTINGS
@given(TEXT)
@example("Step 1: a\nAnswer:")
@example("\n\n\nStep 1:\n\nStep 1:\nAnswer: 5\nStep 2: after")
def test_split_text_regions_are_ordered_slices_of_the_text(text):
    regions, answer, astart = split_text(text)
    assert 0 <= astart <= len(text)
    prev = 0
    for r in regions:
        assert prev <= r.start <= r.end <= astart
        assert r.text == text[r.start : r.end] and r.text.strip()
        prev = r.end
    assert answer is None or isinstance(answer, str)
    for r in regions:
        assert isinstance(step_body(r.text), str)


@SETTINGS
@given(TEXT)
@example("Answer: 72")
@example("\x00\x00")
@example("1" * 20_001)
def test_parse_steps_returns_steps_or_refuses_with_input_error(text):
    try:
        steps, answer = parse_steps(text)
    except InputError as e:
        assert str(e)
        return
    assert steps and all(isinstance(s, str) and s.strip() for s in steps)
    assert not any(c in "".join(steps) for c in "\x00\x1b")  # control characters are dropped


@SETTINGS
@given(st.lists(TEXT.filter(lambda s: s.strip()), min_size=1, max_size=8), st.one_of(st.none(), TEXT))
def test_chain_from_steps_maps_every_step_to_its_tokens(tokenizer, steps, answer):
    chain = chain_from_steps(tokenizer, "a problem", [1, 2, 3], steps, answer)
    assert len(chain.spans) == len(steps) == len(chain.steps)
    assert chain.text == format_steps(chain.steps, chain.answer)
    for a, b in chain.spans:
        assert 0 <= a <= b <= len(chain.ids)
    assert special_ids(tokenizer).isdisjoint(chain.ids)  # typed template tokens stay text


# ----- readers -------------------------------------------------------------------------------------
@SETTINGS
@given(file_bytes())
@example(b"[" * 50_000)
@example(b'{"a": ' + b"[" * 50_000 + b"\n{}")
@example(b"[" + b"9" * 5000 + b"]")
@example(b'{"a": "\\ud800"}\n')
@example(b"\xff\xfe\x00\x00")
def test_read_rows_yields_rows_or_raises_row_error(data):
    p = _tmp(data)
    try:
        out = list(read_rows(p))
    except RowError as e:
        assert str(e)
        return
    for line, row, err in out:
        assert isinstance(line, int) and line >= 1
        assert (row is None) != (err is None)
        if row is not None:
            assert isinstance(row, dict)
            # every string can be written as UTF-8: lone surrogates from \ud800 escapes were replaced
            json.dumps(row, ensure_ascii=False).encode("utf-8")


@SETTINGS
@given(file_bytes())
def test_read_dataset_refuses_only_with_input_error(data):
    p = _tmp(data, ".json")
    try:
        rows, errors = read_dataset(p)
    except InputError as e:
        assert str(e)
        return
    assert rows and all(isinstance(r, dict) for _, r in rows)
    assert all(isinstance(e, str) for e in errors)


@SETTINGS
@given(file_bytes(), st.lists(JSON.filter(lambda x: isinstance(x, dict)), max_size=3))
@example(b'{"id": "a"}\n{"id": "b", "x": "\\ud800"}\n"id"\n5\n{"id": "c", "v": [1, 2', [{"id": "d"}])
def test_resumable_writer_opens_any_file_and_leaves_only_whole_rows(data, new_rows):
    p = _tmp(data)
    with ResumableWriter(p) as w:
        done = set(w.done)
        for r in new_rows:
            w.write(r)
    lines = p.read_bytes().decode("utf-8").split("\n")
    assert lines[-1] == ""  # every row ends with its newline
    parsed = [json.loads(x) for x in lines[:-1]]
    assert all(isinstance(r, dict) for r in parsed)
    assert parsed[len(parsed) - len(new_rows) :] == [json.loads(json.dumps(r)) for r in new_rows]
    with ResumableWriter(p) as again:
        assert done <= again.done
        assert p.read_bytes().decode("utf-8").split("\n") == lines  # an intact file is left as it is


# ----- the ProcessBench importer -------------------------------------------------------------------
PB_ROW = st.fixed_dictionaries(
    {},
    optional={
        "id": st.one_of(TEXT, st.integers(), JSON),
        "problem": st.one_of(TEXT, JSON),
        "steps": st.one_of(st.lists(TEXT, max_size=5), JSON),
        "label": st.one_of(st.integers(-3, 8), st.booleans(), JSON),
        "generator": TEXT,
    },
)


@SETTINGS
@given(st.lists(st.one_of(PB_ROW, JSON), max_size=8))
def test_processbench_importer_keeps_only_well_formed_rows(rows):
    out = processbench_rows(rows)
    ids = [str(r["id"]) for r in out]
    assert len(ids) == len(set(ids))
    for r in out:
        assert isinstance(r["problem"], str) and r["problem"].strip()
        assert r["steps"] and len(r["labels"]) == len(r["steps"])
        assert all(lab in (0, 1, None) for lab in r["labels"])
    back = to_processbench(out)
    assert [b["label"] for b in back] == [next((i for i, y in enumerate(r["labels"]) if y == 1), -1) for r in out]


@SETTINGS
@given(file_bytes())
def test_processbench_importer_reads_any_file(data):
    rows = processbench_rows(_tmp(data, ".json"))  # malformed rows are logged and skipped, never raised
    assert all(len(r["labels"]) == len(r["steps"]) for r in rows)


# ----- rows to chains ------------------------------------------------------------------------------
ROW = st.fixed_dictionaries(
    {},
    optional={
        "problem": st.one_of(TEXT, JSON),
        "question": TEXT,
        "steps": st.one_of(st.lists(TEXT, max_size=4), JSON),
        "ids": st.one_of(st.lists(st.integers(-2, 500), max_size=12), JSON),
        "spans": st.one_of(st.lists(st.lists(st.integers(-1, 14), max_size=3), max_size=4), JSON),
        "model": st.one_of(st.just("tiny-llama"), TEXT, JSON),
        "text": st.one_of(TEXT, JSON),
        "answer": st.one_of(TEXT, JSON),
    },
)


@SETTINGS
@given(ROW)
@example({"problem": "q", "steps": ["a"], "ids": [True], "spans": [[0, 1]]})
def test_row_to_chain_builds_a_chain_or_raises_row_error(llama_llm, row):
    try:
        chain = row_to_chain(row, llama_llm)
    except RowError as e:
        assert str(e)
        return
    assert len(chain.spans) == len(chain.steps) >= 1
    assert all(0 <= a <= b <= len(chain.ids) for a, b in chain.spans)
    assert chain.ids and all(type(i) is int for i in chain.ids)


def test_the_properties_ran_on_the_tiny_tokenizer(tokenizer):
    # the special-token check above is only meaningful if the tokenizer has template tokens
    names = set(tokenizer.convert_ids_to_tokens(sorted(special_ids(tokenizer))))
    assert {"<|im_start|>", "<|im_end|>", "<|endoftext|>"} <= names
