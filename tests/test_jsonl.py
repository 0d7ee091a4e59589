"""Resumable JSONL output and lenient reading of JSONL / JSON-list inputs."""

from __future__ import annotations

import json

import pytest

from uhead_viz.errors import RowError
from uhead_viz.jsonl import ResumableWriter, read_rows


def lines(path):
    return path.read_text(encoding="utf-8").splitlines()


# ----- ResumableWriter --------------------------------------------------------------------------
def test_new_file_is_created_with_parents(tmp_path):
    path = tmp_path / "a" / "b" / "out.jsonl"
    with ResumableWriter(path) as w:
        assert w.done == set()
        w.write({"id": "q1", "x": 1})
        w.write({"id": 2, "text": "é ü"})
        w.write({"no_id": True})
        assert w.done == {"q1", "2"}
    assert [json.loads(x) for x in lines(path)] == [{"id": "q1", "x": 1}, {"id": 2, "text": "é ü"}, {"no_id": True}]
    assert "é ü" in path.read_text(encoding="utf-8")  # written as UTF-8, not escaped


def test_torn_last_line_is_dropped_and_done_ids_reported(tmp_path):
    path = tmp_path / "out.jsonl"
    path.write_text('{"id": "a", "v": 1}\n\n{"id": "b", "v": 2}\n{"id": "c", "v": ', encoding="utf-8")
    with ResumableWriter(path) as w:
        assert w.done == {"a", "b"}
        assert lines(path) == ['{"id": "a", "v": 1}', '{"id": "b", "v": 2}']
        w.write({"id": "c", "v": 3})
    assert [json.loads(x)["id"] for x in lines(path)] == ["a", "b", "c"]
    assert not path.with_suffix(".jsonl.tmp").exists()
    with ResumableWriter(path) as w:
        assert w.done == {"a", "b", "c"}


def test_complete_last_line_without_newline_is_not_merged(tmp_path):
    path = tmp_path / "out.jsonl"
    path.write_text('{"id": "a"}\n{"id": "b"}', encoding="utf-8")
    with ResumableWriter(path) as w:
        assert w.done == {"a", "b"}
        w.write({"id": "c"})
    assert lines(path) == ['{"id": "a"}', '{"id": "b"}', '{"id": "c"}']
    with ResumableWriter(path) as w:
        assert w.done == {"a", "b", "c"}


def test_intact_file_is_left_alone(tmp_path):
    path = tmp_path / "out.jsonl"
    path.write_text('{"id": "a"}\n{"id": "b"}\n', encoding="utf-8")
    before = path.stat().st_ino
    with ResumableWriter(path) as w:
        assert w.done == {"a", "b"}
    assert path.stat().st_ino == before  # not rewritten
    assert path.read_text() == '{"id": "a"}\n{"id": "b"}\n'


def test_custom_id_key(tmp_path):
    path = tmp_path / "out.jsonl"
    path.write_text('{"key": 7, "id": "x"}\n', encoding="utf-8")
    with ResumableWriter(path, id_key="key") as w:
        assert w.done == {"7"}
        w.write({"key": 8})
        assert w.done == {"7", "8"}


# ----- read_rows ---------------------------------------------------------------------------------
def test_read_rows_jsonl_with_bad_lines(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_text(
        '{"question": "q1"}\n\n{"question": "q2"\n[1, 2]\n  {"question": "q3", "id": 9}\n"just a string"\n',
        encoding="utf-8",
    )
    rows = list(read_rows(path))
    assert [(n, r) for n, r, _ in rows] == [
        (1, {"question": "q1"}),
        (3, None),
        (4, None),
        (5, {"question": "q3", "id": 9}),
        (6, None),
    ]
    errors = {n: e for n, _, e in rows}
    assert errors[1] is None and errors[5] is None
    assert errors[3].startswith("not valid JSON")
    assert errors[4] == errors[6] == "not a JSON object"


def test_read_rows_json_list(tmp_path):
    path = tmp_path / "in.json"
    path.write_text('\n  [{"problem": "p1"}, 3, {"problem": "p2"}]\n', encoding="utf-8")
    assert list(read_rows(path)) == [
        (1, {"problem": "p1"}, None),
        (2, None, "not a JSON object"),
        (3, {"problem": "p2"}, None),
    ]


def test_read_rows_broken_json_list(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('[{"problem": "p1"},\n {"problem": ', encoding="utf-8")
    with pytest.raises(RowError, match="broken.json looks like a JSON list but does not parse"):
        list(read_rows(path))


def test_read_rows_tolerates_bad_utf8(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_bytes(b'{"question": "caf\xe9"}\n{"question": "ok"}\n')
    rows = list(read_rows(path))
    assert rows[0][1] == {"question": "caf\ufffd"}
    assert rows[1] == (2, {"question": "ok"}, None)


def test_read_rows_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        list(read_rows(tmp_path / "nope.jsonl"))


def test_line_separators_inside_strings_stay_in_their_row(tmp_path):
    # a 0.5B-model chain held raw U+2028s; str.splitlines() cut its row into five bad lines
    p = tmp_path / "chains.jsonl"
    odd = "Step 1: 6 blue\u2028Step 2: 4 red\x85 and\x0c\x1e\u2029 more"
    with ResumableWriter(p) as w:
        w.write({"id": "a", "steps": [odd]})
        w.write({"id": "b", "steps": ["x"]})
    got = list(read_rows(p))
    assert [(n, r, e) for n, r, e in got] == [
        (1, {"id": "a", "steps": [odd]}, None),
        (2, {"id": "b", "steps": ["x"]}, None),
    ]
    assert ResumableWriter(p).done == {"a", "b"}
    assert p.read_text(encoding="utf-8").count("\n") == 2  # nothing was rewritten as torn
