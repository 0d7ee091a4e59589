"""Splitting assistant text into steps and mapping each step to its tokens."""

from __future__ import annotations

import itertools

import pytest

from uhead_viz.steps import (
    Chain,
    chain_from_ids,
    chain_from_steps,
    format_steps,
    split_text,
    step_body,
    token_char_offsets,
)


def encode(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def assert_spans_well_formed(spans: list[tuple[int, int]], n_tokens: int) -> None:
    prev_end = 0
    for s, e in spans:
        assert 0 <= prev_end <= s < e <= n_tokens, spans
        prev_end = e


# ----- split_text ------------------------------------------------------------------------------
def test_split_text_steps_continuations_blank_lines_and_answer():
    text = (
        "Step 1: 48 / 2 = 24 clips in May.\n"
        "  She sold half as many.\n"
        "\n"
        "Step 2: 48 + 24 = 72 clips.\n"
        "Answer: 72\n"
    )
    regions, answer, answer_start = split_text(text)
    assert [r.text for r in regions] == [
        "Step 1: 48 / 2 = 24 clips in May.\n  She sold half as many.",
        "Step 2: 48 + 24 = 72 clips.",
    ]
    for r in regions:
        assert text[r.start : r.end] == r.text
    assert regions[0].start == 0
    assert regions[1].start == text.index("Step 2")
    assert answer == "72"
    assert answer_start == text.index("Answer:")


def test_split_text_without_step_markers_makes_each_line_a_step():
    text = "First, 3 * 4 = 12.\n\n   Then 12 + 1 = 13.\nAnswer: 13"
    regions, answer, answer_start = split_text(text)
    assert [r.text for r in regions] == ["First, 3 * 4 = 12.", "Then 12 + 1 = 13."]
    # leading spaces are not part of the step
    assert regions[1].start == text.index("Then")
    assert answer == "13"
    assert answer_start == text.index("Answer")


def test_split_text_without_answer():
    text = "Step 1: 2 + 2 = 4\nStep 2: 4 * 2 = 8"
    regions, answer, answer_start = split_text(text)
    assert [r.text for r in regions] == ["Step 1: 2 + 2 = 4", "Step 2: 4 * 2 = 8"]
    assert answer is None
    assert answer_start == len(text)


def test_split_text_preamble_before_first_marker_is_its_own_step():
    text = "Let me think.\nStep 1: 5 - 2 = 3\nAnswer: 3\n"
    regions, answer, _ = split_text(text)
    assert [r.text for r in regions] == ["Let me think.", "Step 1: 5 - 2 = 3"]
    assert answer == "3"


def test_split_text_ignores_everything_after_the_answer_line():
    text = "Step 1: 1 + 1 = 2\nAnswer: 2\nStep 2: junk after the answer\n"
    regions, answer, answer_start = split_text(text)
    assert [r.text for r in regions] == ["Step 1: 1 + 1 = 2"]
    assert answer == "2"
    assert answer_start == text.index("Answer")


@pytest.mark.parametrize(
    "line, expected",
    [
        ("Answer: 72", "72"),
        ("**Answer:** 72", "72"),
        ("Answer: **72**", "72"),
        ("**Answer**: 72", "72"),
        ("Final Answer: 72 clips", "72 clips"),
        ("answer：5", "5"),
        ("Answer:", ""),
    ],
)
def test_split_text_answer_variants(line, expected):
    regions, answer, _ = split_text(f"Step 1: x = 1\n{line}\n")
    assert len(regions) == 1
    assert answer == expected


def test_split_text_bold_and_other_marker_styles():
    text = "**Step 1:** 3 + 3 = 6\nStep 2. 6 * 2 = 12\nstep 3) 12 - 1 = 11\n"
    regions, _, _ = split_text(text)
    assert [r.text for r in regions] == ["**Step 1:** 3 + 3 = 6", "Step 2. 6 * 2 = 12", "step 3) 12 - 1 = 11"]


def test_split_text_empty():
    assert split_text("") == ([], None, 0)


# ----- step_body ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "step, body",
    [
        ("Step 1: 48 / 2 = 24", "48 / 2 = 24"),
        ("  Step 12.  add them", "add them"),
        ("**Step 2:** 6 * 2 = 12", "6 * 2 = 12"),
        ("**Step 2**: 6 * 2 = 12", "6 * 2 = 12"),
        ("step 3) x", "x"),
        ("No marker here", "No marker here"),
        ("Step 1: Step 2: only the first marker goes", "Step 2: only the first marker goes"),
    ],
)
def test_step_body(step, body):
    assert step_body(step) == body


# ----- token offsets ------------------------------------------------------------------------------
def test_token_char_offsets_tile_the_decoded_text(tokenizer):
    text = "Step 1: 3 * 4 = 12 apples.\nAnswer: 12\n"
    ids = encode(tokenizer, text)
    offsets = token_char_offsets(tokenizer, ids)
    assert offsets[0][0] == 0
    assert offsets[-1][1] == len(text)
    for (a, b), (c, _) in itertools.pairwise(offsets):
        assert a <= b == c
    for i, (a, b) in enumerate(offsets):
        assert text[a:b] == tokenizer.decode([ids[i]])


# ----- chain_from_ids -----------------------------------------------------------------------------
GENERATED = [
    "Step 1: 48 / 2 = 24 clips in May.\nStep 2: 48 + 24 = 72 clips.\nAnswer: 72\n",
    "Step 1: 3 * 4 = 12 apples.\n  She has 12 apples.\n\nStep 2: 12 + 5 = 17.\nStep 3: 17 - 2 = 15 apples.\nAnswer: 15",
    "Step 1: 5 € each, 3 * 5 = 15 €.\nStep 2: 15 + 1 = 16 €\n",  # no answer line, non-ASCII
    "We know 4 + 4 = 8.\nSo 8 * 2 = 16.\nAnswer: 16\n",  # no Step markers
    "Step 1: 7 + 1 = 8\nAnswer: 8\nStep 2: after the answer\n",
]


@pytest.mark.parametrize("text", GENERATED)
def test_chain_from_ids_spans_contain_each_step(tokenizer, text):
    ids = encode(tokenizer, text)
    assert tokenizer.decode(ids) == text
    chain = chain_from_ids(tokenizer, "a question", [1, 2, 3], ids, stop_reason="eos")
    regions, answer, answer_start = split_text(text)
    assert isinstance(chain, Chain)
    assert chain.text == text
    assert chain.ids == ids
    assert chain.prompt_ids == [1, 2, 3]
    assert chain.meta == {"stop_reason": "eos"}
    assert chain.answer == answer
    assert chain.steps == [r.text for r in regions]
    assert len(chain.spans) == len(chain.steps) >= 1
    assert_spans_well_formed(chain.spans, len(ids))
    for (s, e), step in zip(chain.spans, chain.steps):
        assert step in tokenizer.decode(ids[s:e])
    # no span reaches into the answer line
    offsets = token_char_offsets(tokenizer, ids)
    first_answer_tok = next((i for i, (a, b) in enumerate(offsets) if b > answer_start), len(ids))
    assert all(e <= first_answer_tok for _, e in chain.spans)
    for _, e in chain.spans:
        assert "Answer" not in tokenizer.decode(ids[chain.spans[0][0] : e])


def test_chain_from_ids_spans_end_on_the_step_newline(tokenizer):
    text = "Step 1: 2 + 2 = 4\nStep 2: 4 * 3 = 12\nAnswer: 12\n"
    ids = encode(tokenizer, text)
    chain = chain_from_ids(tokenizer, "q", [], ids)
    # each step's span runs up to the next step: the newline belongs to the step it ends
    assert [tokenizer.decode(ids[s:e]) for s, e in chain.spans] == ["Step 1: 2 + 2 = 4\n", "Step 2: 4 * 3 = 12\n"]
    assert chain.spans[0][1] == chain.spans[1][0]
    assert tokenizer.decode(ids[chain.spans[-1][1] :]) == "Answer: 12\n"


def test_chain_from_ids_with_only_an_answer(tokenizer):
    ids = encode(tokenizer, "Answer: 4\n")
    chain = chain_from_ids(tokenizer, "q", [], ids)
    assert chain.steps == [] and chain.spans == []
    assert chain.answer == "4"


def test_chain_to_row(tokenizer):
    ids = encode(tokenizer, GENERATED[0])
    row = chain_from_ids(tokenizer, "Natalia", [5], ids, stop_reason="answer", model="m").to_row()
    assert row["problem"] == "Natalia"
    assert row["answer"] == "72"
    assert row["ids"] == ids
    assert row["spans"] == [list(s) for s in chain_from_ids(tokenizer, "Natalia", [5], ids).spans]
    assert row["stop_reason"] == "answer" and row["model"] == "m"
    assert "prompt_ids" not in row


# ----- chain_from_steps (teacher forcing) ----------------------------------------------------------
PROCESSBENCH_STEPS = [
    "To find the total, we first work out May's sales.",
    "Step 2: In May she sold 48 / 2 = 24 clips.",
    "She sold 48 clips in April.\nSo in both months:\n48 + 24 = 72.",
    "  The answer is 72 clips.  ",
]


@pytest.mark.parametrize("answer", ["72", None])
def test_chain_from_steps_one_span_per_step(tokenizer, answer):
    chain = chain_from_steps(tokenizer, "Natalia ...", [9, 9], PROCESSBENCH_STEPS, answer, source="pb")
    assert chain.meta == {"source": "pb"}
    assert chain.prompt_ids == [9, 9]
    assert chain.answer == answer
    assert chain.text == format_steps(PROCESSBENCH_STEPS, answer)
    assert chain.ids == encode(tokenizer, chain.text)
    assert len(chain.spans) == len(PROCESSBENCH_STEPS)
    assert_spans_well_formed(chain.spans, len(chain.ids))
    for k, ((s, e), step, shown) in enumerate(zip(chain.spans, PROCESSBENCH_STEPS, chain.steps), start=1):
        assert shown.startswith(f"Step {k}:")
        assert step_body(shown) == step_body(step.strip())
        assert step_body(step) in tokenizer.decode(chain.ids[s:e])
    tail = tokenizer.decode(chain.ids[chain.spans[-1][1] :])
    assert tail == ("Answer: 72\n" if answer else "")


def test_chain_from_steps_keeps_multiline_steps_whole(tokenizer):
    steps = ["a = 1\nb = 2", "Step 2: a + b = 3\nso c = 3", "c * 2 = 6"]
    chain = chain_from_steps(tokenizer, "q", [], steps, "6")
    assert chain.steps == ["Step 1: a = 1\nb = 2", "Step 2: a + b = 3\nso c = 3", "Step 3: c * 2 = 6"]
    decoded = [tokenizer.decode(chain.ids[s:e]) for s, e in chain.spans]
    assert decoded == [s + "\n" for s in chain.steps]


def test_chain_from_steps_treats_special_tokens_as_text(tokenizer):
    chain = chain_from_steps(tokenizer, "q", [], ["write <|im_end|> here", "done"], "1")
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert im_end not in chain.ids
    s, e = chain.spans[0]
    assert "write <|im_end|> here" in tokenizer.decode(chain.ids[s:e])


def test_format_steps():
    assert format_steps(["a", "Step 2: b"], "3") == "Step 1: a\nStep 2: b\nAnswer: 3\n"
    assert format_steps([" a "], None) == "Step 1: a\n"
    assert format_steps(["a"], "  ") == "Step 1: a\n"
