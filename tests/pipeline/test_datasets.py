"""Dataset readers: every format, field mapping, stable ids, and one RowReject per malformed row."""

from __future__ import annotations

import csv
import io
import json
import re
import time
import tracemalloc
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stepwise.pipeline.datasets import _read_json, check_fields, check_gold, content_id, detect_format, read_examples
from stepwise.pipeline.errors import DatasetError, JobSpecError
from stepwise.pipeline.spec import DatasetSpec, TaskSpec
from stepwise.pipeline.tasks import build_task
from stepwise.pipeline.types import Example, RowReject
from tests.conftest import write_jsonl

# Three small rows of our own, used across formats.
ROWS = [
    {"id": "q1", "question": "A shelf holds 4 jars and Lena adds 3 more. How many jars are on it?",
     "answer": "7", "choices": ["6", "7", "8"]},
    {"id": "q2", "question": "Which season comes right after winter?",
     "answer": "spring", "choices": ["autumn", "spring", "summer"]},
    {"id": "q3", "question": "How many legs do two chairs with four legs each have?",
     "answer": "8", "choices": ["4", "8", "12"]},
]
FIELDS = {"id_field": "id", "answer_field": "answer", "choices_field": "choices"}


def spec(path: Path, **kw) -> DatasetSpec:
    return DatasetSpec(path=str(path), **kw)


def read(path: Path, **kw) -> list[Example | RowReject]:
    return list(read_examples(spec(path, **kw)))


def _csv_text(rows: list[dict], choices_as: str) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    for r in rows:
        if "choices" in r:
            r = {**r, "choices": json.dumps(r["choices"]) if choices_as == "json" else "|".join(r["choices"])}
        writer.writerow(r)
    return buf.getvalue()


def write_format(tmp_path: Path, fmt: str, rows: list[dict]) -> Path:
    """Write `rows` in one of the supported layouts; returns the file."""
    if fmt == "jsonl":
        return write_jsonl(tmp_path / "data.jsonl", rows)
    if fmt == "json_array":
        path = tmp_path / "data.json"
        path.write_text(json.dumps(rows, indent=2), encoding="utf-8")
        return path
    if fmt == "json_wrapper":
        path = tmp_path / "data.json"
        path.write_text(json.dumps({"version": 3, "data": rows}, indent=2), encoding="utf-8")
        return path
    if fmt == "json_wrapper_one_line":
        path = tmp_path / "data.json"
        path.write_text(json.dumps({"version": 3, "data": rows}), encoding="utf-8")
        return path
    if fmt == "json_lines_named_json":
        return write_jsonl(tmp_path / "data.json", rows)
    if fmt in ("csv_pipe", "csv_json"):
        path = tmp_path / "data.csv"
        path.write_text(_csv_text(rows, "pipe" if fmt == "csv_pipe" else "json"), encoding="utf-8")
        return path
    if fmt == "parquet":
        path = tmp_path / "data.parquet"
        pq.write_table(pa.Table.from_pylist(rows), path)
        return path
    raise AssertionError(fmt)


FORMATS = [
    ("jsonl", "jsonl"),
    ("json_array", "json"),
    ("json_wrapper", "json"),
    ("json_wrapper_one_line", "json"),
    ("json_lines_named_json", "jsonl"),
    ("csv_pipe", "csv"),
    ("csv_json", "csv"),
    ("parquet", "parquet"),
]


@pytest.mark.parametrize(("fmt", "detected"), FORMATS)
def test_every_format_reads_the_same_examples(tmp_path, fmt, detected):
    path = write_format(tmp_path, fmt, ROWS)
    assert detect_format(path) == detected
    items = read(path, **FIELDS)
    assert items == [
        Example(id="q1", input=ROWS[0]["question"], gold="7", choices=("6", "7", "8"), meta={"row": 0}),
        Example(id="q2", input=ROWS[1]["question"], gold="spring", choices=("autumn", "spring", "summer"),
                meta={"row": 1}),
        Example(id="q3", input=ROWS[2]["question"], gold="8", choices=("4", "8", "12"), meta={"row": 2}),
    ]


@pytest.mark.parametrize("fmt", ["jsonl", "json_array", "parquet"])
def test_declared_format_overrides_the_suffix(tmp_path, fmt):
    real = write_format(tmp_path, fmt, ROWS)
    odd = real.rename(tmp_path / "data.bin")
    declared = {"jsonl": "jsonl", "json_array": "json", "parquet": "parquet"}[fmt]
    items = read(odd, format=declared, **FIELDS)
    assert [i.id for i in items] == ["q1", "q2", "q3"]


# ── field mapping ────────────────────────────────────────────────────────────────────────────────────────────────
def test_custom_field_names_and_integer_ids(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [
        {"qid": 17, "prompt": "Is a tomato botanically a fruit?", "target": True, "options": ["yes", "no"]},
        {"qid": 18, "prompt": "Half of 7?", "target": 3.5, "options": ["3.5", "4"]},
        {"qid": "x-9", "prompt": "Name the colour of a clear daytime sky.", "target": "blue",
         "options": ["blue", "green"]},
    ])
    items = read(path, id_field="qid", question_field="prompt", answer_field="target", choices_field="options")
    assert [(i.id, i.input, i.gold, i.choices) for i in items] == [
        ("17", "Is a tomato botanically a fruit?", "yes", ("yes", "no")),
        ("18", "Half of 7?", "3.5", ("3.5", "4")),
        ("x-9", "Name the colour of a clear daytime sky.", "blue", ("blue", "green")),
    ]


def test_unlabeled_data_has_no_gold_and_no_choices(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"question": "Why do cats purr?", "answer": "ignored"}])
    (item,) = read(path)
    assert isinstance(item, Example)
    assert item.gold is None and item.choices is None


@pytest.mark.parametrize("fmt", ["jsonl", "csv_pipe", "parquet"])
def test_premise_and_hypothesis_make_the_input(tmp_path, fmt):
    rows = [{"p": "A dog sleeps on the porch.", "h": "An animal is resting.", "lab": "entailment"},
            {"p": "Two kids fly a kite.", "h": "The kids are swimming.", "lab": "contradiction"}]
    if fmt == "csv_pipe":
        path = tmp_path / "d.csv"
        path.write_text("p,h,lab\n" + "".join(f"{r['p']},{r['h']},{r['lab']}\n" for r in rows), encoding="utf-8")
    else:
        path = write_format(tmp_path, fmt, rows)
    items = read(path, premise_field="p", hypothesis_field="h", answer_field="lab")
    assert [(i.input, i.gold) for i in items] == [
        ("Premise: A dog sleeps on the porch.\nHypothesis: An animal is resting.", "entailment"),
        ("Premise: Two kids fly a kite.\nHypothesis: The kids are swimming.", "contradiction"),
    ]
    assert items[1].meta == {"row": 1, "premise": "Two kids fly a kite.", "hypothesis": "The kids are swimming."}


# ── stable content-hash ids ──────────────────────────────────────────────────────────────────────────────────────
def _no_ids(rows):
    return [{k: v for k, v in r.items() if k != "id"} for r in rows]


@pytest.mark.parametrize("fmt", ["jsonl", "json_array", "parquet"])
def test_content_ids_are_stable_across_reads_and_row_order(tmp_path, fmt):
    rows = _no_ids(ROWS)
    first = read(write_format(tmp_path, fmt, rows), answer_field="answer")
    again = read(write_format(tmp_path, fmt, rows), answer_field="answer")
    reordered = read(write_format(tmp_path, fmt, rows[::-1]), answer_field="answer")
    ids = [i.id for i in first]
    assert all(re.fullmatch(r"[0-9a-f]{16}", i) for i in ids)
    assert len(set(ids)) == 3
    assert ids == [i.id for i in again]
    assert ids == [i.id for i in reordered][::-1]
    assert ids[0] == content_id(rows[0])


def test_content_id_changes_with_any_field(tmp_path):
    a = {"question": "What is 2 + 2?", "answer": "4"}
    assert content_id(a) != content_id({**a, "answer": "5"})
    assert content_id(a) == content_id(dict(reversed(list(a.items()))))  # key order does not matter


@pytest.mark.parametrize("fmt", ["jsonl", "json_array", "csv_pipe", "parquet"])
def test_identical_rows_get_distinct_suffixed_ids(tmp_path, fmt):
    row = _no_ids(ROWS)[1]
    other = _no_ids(ROWS)[2]
    items = read(write_format(tmp_path, fmt, [row, other, row, row]), answer_field="answer")
    assert all(isinstance(i, Example) for i in items)
    base = items[0].id
    assert [i.id for i in items] == [base, items[1].id, f"{base}~2", f"{base}~3"]
    assert items[1].id != base
    again = read(write_format(tmp_path, fmt, [row, other, row, row]), answer_field="answer")
    assert [i.id for i in again] == [i.id for i in items]


# ── malformed rows become RowRejects; later rows still load ──────────────────────────────────────────────────────
GOOD_A = json.dumps({"id": "g1", "question": "What is 10 minus 4?", "answer": "6", "choices": ["5", "6"]}).encode()
GOOD_B = json.dumps({"id": "g2", "question": "What is 3 times 3?", "answer": "9", "choices": ["6", "9"]}).encode()


def _jsonl(middle: bytes) -> bytes:
    return GOOD_A + b"\n" + middle + b"\n" + GOOD_B + b"\n"


BAD_JSONL = [
    ("missing_question", json.dumps({"id": "b1", "answer": "2"}).encode(), {}, "b1",
     "row 1: missing field 'question'"),
    ("missing_answer", json.dumps({"id": "b1", "question": "Where is it?"}).encode(), {}, "b1",
     "row 1: missing field 'answer'"),
    ("question_is_a_number", json.dumps({"id": "b1", "question": 12, "answer": "2"}).encode(), {}, "b1",
     "row 1: field 'question' should be a string, got int"),
    ("question_is_blank", json.dumps({"id": "b1", "question": "   ", "answer": "2"}).encode(), {}, "b1",
     "row 1: field 'question' is empty"),
    ("answer_is_a_list", json.dumps({"id": "b1", "question": "Pick two.", "answer": [1, 2]}).encode(), {}, "b1",
     "row 1: field 'answer' should be a string or a number, got list"),
    ("choices_not_a_list", json.dumps({"id": "b1", "question": "Pick.", "answer": "a", "choices": 5}).encode(),
     {"choices_field": "choices"}, "b1", "row 1: field 'choices' should be a list of at least two non-empty strings"),
    ("choices_one_item", json.dumps({"id": "b1", "question": "Pick.", "answer": "a", "choices": ["a"]}).encode(),
     {"choices_field": "choices"}, "b1", "row 1: field 'choices' should be a list of at least two non-empty strings"),
    ("row_not_an_object", b"[1, 2, 3]", {}, "row-1", "row 1: row should be an object, got list"),
    ("invalid_utf8", b'{"id": "b1", "question": "caf\xe9 \xff\xfe", "answer": "2"}', {}, "row-1",
     "row 1: invalid UTF-8 at byte 29"),
    ("enormous_row", json.dumps({"id": "b1", "question": "x" * 5000, "answer": "2"}).encode(),
     {"max_row_bytes": 1000}, "row-1", "row 1: row is 5044 bytes, larger than max_row_bytes=1000"),
    ("invalid_json", b'{"id": "b1", "question": "unterminated', {}, "row-1", "row 1: invalid JSON: "),
    ("duplicate_id", GOOD_A, {}, "row-1", "row 1: duplicate id 'g1' (first at row 0)"),
    ("missing_id", json.dumps({"question": "No id here?", "answer": "2"}).encode(), {}, "row-1",
     "row 1: field 'id' should be a non-empty string or integer id"),
    ("id_is_a_list", json.dumps({"id": ["b"], "question": "Odd id?", "answer": "2"}).encode(), {}, "row-1",
     "row 1: field 'id' should be a non-empty string or integer id"),
]


@pytest.mark.parametrize(("middle", "extra", "reject_id", "reason"),
                         [pytest.param(*c[1:], id=c[0]) for c in BAD_JSONL])
def test_bad_jsonl_row_becomes_a_reject_and_later_rows_load(tmp_path, middle, extra, reject_id, reason):
    path = tmp_path / "d.jsonl"
    path.write_bytes(_jsonl(middle))
    items = read(path, id_field="id", answer_field="answer", **extra)
    assert [type(i).__name__ for i in items] == ["Example", "RowReject", "Example"]
    assert [items[0].id, items[2].id] == ["g1", "g2"]
    assert items[2].gold == "9" and items[2].meta == {"row": 2}
    assert items[1].id == reject_id
    assert items[1].reason.startswith(reason), items[1].reason


def test_blank_lines_do_not_count_as_rows(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_bytes(GOOD_A + b"\n\n   \n" + b'{"id": "b", "question": 1}\n' + GOOD_B + b"\n")
    items = read(path, id_field="id")
    assert [getattr(i, "reason", i.id) for i in items] == [
        "g1", "row 1: field 'question' should be a string, got int", "g2"]


def test_bad_rows_in_a_json_array(tmp_path):
    path = tmp_path / "d.json"
    path.write_bytes(b'[{"id": "g1", "question": "Fine?"}, 7, {"id": "b2", "question": "bad \xff byte"},'
                     b' {"id": "b3", "question": "' + b"y" * 400 + b'"}, {"id": "g2", "question": "Also fine?"}]')
    items = read(path, id_field="id", max_row_bytes=300)
    assert [getattr(i, "reason", i.id) for i in items] == [
        "g1",
        "row 1: row should be an object, got int",
        "row 2: invalid UTF-8 in a string value",
        "row 3: row is 428 bytes, larger than max_row_bytes=300",
        "g2",
    ]


def test_bad_rows_in_a_csv(tmp_path):
    path = tmp_path / "d.csv"
    path.write_bytes(
        b"id,question,answer,choices\n"
        b"g1,Which is a vowel?,a,a|b|c\n"
        b"b1,Too many cells here,a,a|b,surplus\n"              # one field more than the header
        b"b2,Only one choice,a,a\n"                            # choices split on '|' -> one item
        b'b3,Bad JSON list,a,"[""a"", 3]"\n'                   # a JSON list that is not all strings
        b"b4,Broken \xff byte,a,a|b\n"                         # invalid UTF-8
        b"g2,Which is a consonant?,b,\"[\"\"a\"\", \"\"b\"\"]\"\n"
    )
    items = read(path, id_field="id", answer_field="answer", choices_field="choices")
    assert [getattr(i, "reason", i.id) for i in items] == [
        "g1",
        "row 1: row has 5 fields, the header has 4",
        "row 2: field 'choices' should be a list of at least two non-empty strings",
        "row 3: field 'choices' should be a list of at least two non-empty strings",
        "row 4: invalid UTF-8 in a field",
        "g2",
    ]
    assert items[-1].choices == ("a", "b")
    assert [i.id for i in items[1:5]] == ["row-1", "b2", "b3", "row-4"]


def test_enormous_parquet_row_is_rejected(tmp_path):
    path = write_format(tmp_path, "parquet", [
        {"id": "g1", "question": "Short one?"}, {"id": "b1", "question": "z" * 3000}, {"id": "g2", "question": "Ok?"}])
    items = read(path, id_field="id", max_row_bytes=1000)
    assert [getattr(i, "reason", i.id) for i in items] == [
        "g1", "row 1: row is 3028 bytes, larger than max_row_bytes=1000", "g2"]


@pytest.mark.parametrize("fmt", ["jsonl", "json_array", "csv_pipe", "parquet"])
def test_max_row_bytes_counts_bytes_not_characters(tmp_path, fmt):
    # 60 two-byte characters: 136 bytes in UTF-8 as a JSON object, but only 76 characters.
    rows = [{"question": "é" * 60}]
    items = read(write_format(tmp_path, fmt, rows), max_row_bytes=100)
    assert isinstance(items[0], RowReject)
    assert "larger than max_row_bytes=100" in items[0].reason


# ── limit ────────────────────────────────────────────────────────────────────────────────────────────────────────
@pytest.mark.parametrize(("limit", "expected"), [(1, ["r0"]), (3, ["r0", "r1", "r2"]), (10, [f"r{i}" for i in range(5)])])
def test_limit_reads_at_most_that_many_rows(tmp_path, limit, expected):
    path = write_jsonl(tmp_path / "d.jsonl", [{"id": f"r{i}", "question": f"Question number {i}?"} for i in range(5)])
    assert [i.id for i in read(path, id_field="id", limit=limit)] == expected


def test_limit_counts_rejected_rows_too(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"id": "r0", "question": 5}, {"id": "r1", "question": "Fine?"},
                                              {"id": "r2", "question": "Also fine?"}])
    items = read(path, id_field="id", limit=2)
    assert [type(i).__name__ for i in items] == ["RowReject", "Example"]


# ── files that cannot be read at all ─────────────────────────────────────────────────────────────────────────────
@pytest.mark.parametrize(("name", "content", "message"), [
    ("missing.jsonl", None, "dataset file not found"),
    ("trunc.json", b'[{"question": "cut off"', "is not valid JSON"),
    ("extra_data.json", b'  ["a", 1]  extra', "is not valid JSON"),
    ("object.json", b'\n{\n"rows": [{"question": "q"}]\n}\n', "expected a JSON array of objects, got dict"),
    ("unclosed.json", b"\n[\n1\n", "is not valid JSON"),
    ("notes.txt", b'{"question": "q"}\n', "cannot tell the format"),
    ("broken.parquet", b"PAR1 this is not parquet", "cannot read Parquet file"),
])
def test_unreadable_files_raise_dataset_error(tmp_path, name, content, message):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(DatasetError, match=re.escape(message)):
        read(path)


def test_a_folder_is_not_a_dataset(tmp_path):
    with pytest.raises(DatasetError, match="dataset file not found"):
        read(tmp_path)


# ── hostile rows: any nesting, any size, a byte-order mark ───────────────────────────────────────────────────────
def _deep(depth: int) -> str:
    """A list nested `depth` levels deep: 2 bytes a level, 1,100 levels is the 2 KB row that crashed runs."""
    return "[" * depth + "]" * depth


def _deep_object(depth: int) -> dict:
    """A row whose objects nest `depth` levels (the row is level 1)."""
    row: dict = {"id": "b1", "question": "Deep?"}
    node = row
    for _ in range(depth - 1):
        node["m"] = {"v": 1}
        node = node["m"]
    return row


GOOD_ROWS = [{"id": "g1", "question": "What is 10 minus 4?"}, {"id": "g2", "question": "What is 3 times 3?"}]


def _deep_file(tmp_path: Path, layout: str, depth: int) -> Path:
    """GOOD_ROWS with a row nested `depth` levels between them, in one layout."""
    a, b = (json.dumps(r) for r in GOOD_ROWS)
    deep = _deep(depth)
    if layout == "jsonl":
        return _write(tmp_path / "d.jsonl", f"{a}\n{deep}\n{b}\n")
    if layout == "jsonl_object":
        return _write(tmp_path / "d.jsonl", f'{a}\n{{"id": "b1", "question": "q", "x": {deep}}}\n{b}\n')
    if layout == "json_lines_named_json":  # the deep row first: the format is told from the first line
        return _write(tmp_path / "d.json", f'{{"id": "b1", "question": "q", "x": {deep}}}\n{a}\n{b}\n')
    if layout == "json_array":
        return _write(tmp_path / "d.json", f"[{a}, {deep}, {b}]")
    if layout == "json_wrapper":  # a deep value beside `data` is skipped without being built
        return _write(tmp_path / "d.json", f'{{"meta": {deep}, "data": [{a}, {deep}, {b}], "tail": {deep}}}')
    if layout == "csv_json_cell":
        return _write(tmp_path / "d.csv", f'id,question,choices\ng1,Q1?,a|b\nb1,Deep?,"{deep}"\ng2,Q2?,a|b\n')
    raise AssertionError(layout)


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


DEEP_LAYOUTS = [
    ("jsonl", "row 1: nested too deeply (more than 100 levels)"),
    ("jsonl_object", "row 1: nested too deeply (more than 100 levels)"),
    ("json_lines_named_json", "row 0: nested too deeply (more than 100 levels)"),
    ("json_array", "row 1: nested too deeply (more than 100 levels)"),
    ("json_wrapper", "row 1: nested too deeply (more than 100 levels)"),
    ("csv_json_cell", "row 1: field 'choices' is nested too deeply (more than 100 levels)"),
]


@pytest.mark.parametrize("depth", [101, 1_100, 300_000])
@pytest.mark.parametrize(("layout", "reason"), DEEP_LAYOUTS)
def test_a_row_of_any_nesting_is_a_bad_row_and_the_others_load(tmp_path, layout, reason, depth):
    path = _deep_file(tmp_path, layout, depth)
    extra = {"choices_field": "choices"} if layout == "csv_json_cell" else {}
    started = time.perf_counter()
    items = read(path, id_field="id", max_row_bytes=10_000_000, **extra)
    elapsed = time.perf_counter() - started
    good = [i.id for i in items if isinstance(i, Example)]
    bad = [i.reason for i in items if isinstance(i, RowReject)]
    assert sorted(good) == ["g1", "g2"] and bad == [reason]
    assert elapsed < 5, f"{elapsed:.2f} s for a row nested {depth} levels"


def test_a_parquet_schema_nested_too_deeply_is_a_dataset_error(tmp_path):
    # Parquet has one schema for every row, and pyarrow reads at most 100 levels of it
    path = write_format(tmp_path, "parquet", [_deep_object(101)])
    with pytest.raises(DatasetError, match="cannot read Parquet file .* too deeply nested"):
        read(path, id_field="id")


@pytest.mark.parametrize("fmt", ["jsonl", "json_array"])
def test_rows_nested_up_to_the_limit_load(tmp_path, fmt):
    rows = [_deep_object(100), {**_deep_object(101), "id": "b2"}]
    path = write_format(tmp_path, fmt, rows)
    items = read(path, id_field="id")
    assert isinstance(items[0], Example) and items[0].id == "b1"
    assert items[1].reason == "row 1: nested too deeply (more than 100 levels)"


@pytest.mark.parametrize(("middle", "reason"), [
    ('{"id": "b1", "question": "lone \\udc80 escape"}', "row 1: invalid UTF-8 in a string value"),
    ('{"id": "b1", "question": "Fine", "k\\ud800": 1}', "row 1: invalid UTF-8 in a string value"),
    ('{"id": "b1", "question": "a\\ud800\\u0041"}', "row 1: invalid UTF-8 in a string value"),
    ('{"id": "b1", "question": "Pick.", "answer": [' + ", ".join(["1"] * 10_000) + "]}",
     "row 1: field 'answer' should be a string or a number, got list: [1, 1, 1, 1, ...]"),
    ('{"id": "b1", "question": "Pick.", "answer": ' + '{"a": ' * 50 + "1" + "}" * 50 + "}",
     "row 1: field 'answer' should be a string or a number, got dict: {'a': {'a': {...}}}"),
], ids=["lone_surrogate_value", "lone_surrogate_key", "high_surrogate_then_letter", "huge_list_gold",
         "nested_gold"])
@pytest.mark.parametrize("layout", ["jsonl", "json_array"])
def test_rows_that_would_echo_or_break_become_short_bad_rows(tmp_path, layout, middle, reason):
    a, b = (json.dumps(r | {"answer": "1"}) for r in GOOD_ROWS)
    path = (_write(tmp_path / "d.jsonl", f"{a}\n{middle}\n{b}\n") if layout == "jsonl"
            else _write(tmp_path / "d.json", f"[{a}, {middle}, {b}]"))
    items = read(path, id_field="id", answer_field="answer")
    assert [type(i).__name__ for i in items] == ["Example", "RowReject", "Example"]
    assert items[1].reason == reason


def test_a_duplicate_id_message_shows_a_short_id(tmp_path):
    long_id = "x" * 100_000
    path = write_jsonl(tmp_path / "d.jsonl", [{"id": long_id, "question": "One?"}, {"id": long_id, "question": "Two?"}])
    items = read(path, id_field="id")
    assert items[1].reason.startswith("row 1: duplicate id 'xxxxxxxxxxxxxxxxx") and len(items[1].reason) < 120


@pytest.mark.parametrize("fmt", ["jsonl", "json_array", "json_wrapper", "json_lines_named_json", "csv_pipe",
                                 "csv_json"])
def test_a_utf8_byte_order_mark_is_ignored(tmp_path, fmt):
    plain = read(write_format(tmp_path, fmt, ROWS), **FIELDS)
    path = write_format(tmp_path, fmt, ROWS)
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    assert read(path, **FIELDS) == plain
    assert all(isinstance(i, Example) for i in plain)


def test_a_tsv_with_a_byte_order_mark(tmp_path):
    path = tmp_path / "d.tsv"
    path.write_bytes(b"\xef\xbb\xbfid\tquestion\nq1\tHow many?\n")
    assert [(i.id, i.input) for i in read(path, id_field="id")] == [("q1", "How many?")]


# ── JSON arrays are read element by element ──────────────────────────────────────────────────────────────────────
def _json_value(draw_children):
    return st.one_of(st.lists(draw_children, max_size=4),
                     st.dictionaries(st.text(max_size=6), draw_children, max_size=4))


def _json_rows():
    scalars = st.one_of(st.none(), st.booleans(), st.integers(-(10**30), 10**30),
                        st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20))
    values = st.recursive(scalars, _json_value, max_leaves=20)
    return st.lists(st.dictionaries(st.text(max_size=8), values, max_size=5), min_size=1, max_size=5)


def test_streamed_rows_equal_json_loads_and_sizes_equal_json_dumps(tmp_path):
    """The element builder against the standard library: the same rows, and the same byte counts."""
    path = tmp_path / "d.json"

    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(_json_rows())
    def check(rows):
        text = json.dumps(rows, ensure_ascii=False)
        path.write_text(text, encoding="utf-8")
        built = list(_read_json(path, max_bytes=10**9))
        assert [row for _, row, _, _ in built] == json.loads(text)
        assert [size for _, _, _, size in built] == [len(json.dumps(r, ensure_ascii=False).encode()) for r in rows]
        tiny = list(_read_json(path, max_bytes=1))
        assert all(row is None and problem for _, row, problem, _ in tiny)

    check()


def test_an_oversized_element_is_measured_exactly_but_not_kept(tmp_path):
    row = {"id": "b1", "question": "é" * 3000, "tags": ["a\"b", "c\\d", 1.5, True, None, {"k": "\n"}]}
    path = _write(tmp_path / "d.json", json.dumps([GOOD_ROWS[0], row, GOOD_ROWS[1]]))
    items = read(path, id_field="id", max_row_bytes=1000)
    size = len(json.dumps(row, ensure_ascii=False).encode())
    assert [getattr(i, "reason", i.id) for i in items] == [
        "g1", f"row 1: row is {size} bytes, larger than max_row_bytes=1000", "g2"]


def test_a_json_array_is_not_held_whole_in_memory(tmp_path):
    rows = [{"id": f"r{i}", "question": f"Question {i}: " + "words " * 150} for i in range(20_000)]
    path = _write(tmp_path / "d.json", json.dumps(rows))
    assert path.stat().st_size > 18_000_000
    tracemalloc.start()
    try:
        n = 0
        for item in read_examples(spec(path, id_field="id")):
            n += isinstance(item, Example)
            item = None
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert n == 20_000
    # the ids seen so far (duplicate check) grow with the file; the rows themselves do not stay
    assert peak < 6_000_000, f"peak {peak / 1e6:.1f} MB while reading a {path.stat().st_size / 1e6:.0f} MB array"


def test_rows_before_a_syntax_error_are_read_and_the_error_does_not_quote_the_file(tmp_path):
    path = _write(tmp_path / "d.json", '[{"id": "g1", "question": "Fine?"}, {"id": SECRET-MARKER-7]')
    reader = read_examples(spec(path, id_field="id"))
    assert next(reader).id == "g1"
    with pytest.raises(DatasetError) as info:
        next(reader)
    assert "is not valid JSON" in str(info.value) and "after 1 array elements" in str(info.value)
    assert "SECRET" not in str(info.value)


@pytest.mark.parametrize(("content", "words"), [
    (b'[{"id": "g1", "question": "Fine?"}] SECRET-MARKER-7', "trailing garbage"),
    (b'[{"id": "g1", "question": "Fine?"}, {"SECRET-MARKER-7": ', "premature EOF"),
    (b'{"meta": "SECRET-MARKER-7"}', "expected a JSON array of objects, got dict"),
    (b'"SECRET-MARKER-7"', "expected a JSON array of objects, got str"),
    (b'[{"id": "g1", "question": "caf\xe9"}, SECRET-MARKER-7 \xff]', "is not valid JSON: Unexpected symbol"),
    (b'[{"id": "g1", "question": "caf\\ud800"}, SECRET-MARKER-7]', "is not valid JSON: Unexpected symbol"),
])
def test_broken_json_arrays_raise_without_quoting_the_file(tmp_path, content, words):
    path = tmp_path / "d.json"
    path.write_bytes(content)
    with pytest.raises(DatasetError) as info:
        read(path, id_field="id", format="json")
    assert words in str(info.value) and "SECRET" not in str(info.value), str(info.value)


# ── mapping checks: a field no row has, gold none of which fits ──────────────────────────────────────────────────
MAPPING_ROWS = [{"id": "q1", "question": "Is snow cold?", "answer": "yes", "choices": ["yes", "no"],
                 "p": "Snow fell.", "h": "It is cold."},
                {"id": "q2", "question": "Is fire cold?", "answer": "no", "choices": ["yes", "no"],
                 "p": "A fire burns.", "h": "It is cold."}]


@pytest.mark.parametrize(("fields", "field"), [
    ({"question_field": "q"}, "dataset.question_field"),
    ({"id_field": "qid"}, "dataset.id_field"),
    ({"answer_field": "label"}, "dataset.answer_field"),
    ({"choices_field": "options"}, "dataset.choices_field"),
    ({"premise_field": "premise", "hypothesis_field": "h"}, "dataset.premise_field"),
    ({"premise_field": "p", "hypothesis_field": "hyp"}, "dataset.hypothesis_field"),
], ids=lambda v: v if isinstance(v, str) else None)
@pytest.mark.parametrize("fmt", ["jsonl", "json_array", "csv_json", "parquet"])
def test_a_field_no_row_has_is_a_job_spec_error_showing_the_keys(tmp_path, fmt, fields, field):
    path = write_format(tmp_path, fmt, MAPPING_ROWS)
    with pytest.raises(JobSpecError) as info:
        check_fields(spec(path, **fields))
    assert info.value.field == field
    wanted = next(v for k, v in fields.items() if f"dataset.{k}" == field)
    assert str(info.value) == (f"{field}: no row of {path.name} has a field {wanted!r} "
                               f"(its 2 rows have: id, question, answer, choices, p, h)")


def test_fields_that_every_row_has_pass(tmp_path):
    path = write_format(tmp_path, "jsonl", MAPPING_ROWS)
    check_fields(spec(path, id_field="id", answer_field="answer", choices_field="choices"))
    check_fields(spec(path, question_field="ignored with premise and hypothesis", premise_field="p",
                      hypothesis_field="h"))


def test_a_field_some_rows_have_is_left_to_bad_rows(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"id": "a", "question": "One?"}, {"id": "b", "text": "Two?"}])
    check_fields(spec(path, id_field="id"))
    assert [type(i).__name__ for i in read(path, id_field="id")] == ["Example", "RowReject"]


def test_only_the_first_thousand_rows_are_looked_at(tmp_path):
    rows = [{"id": f"r{i}", "text": f"Row {i}?"} for i in range(1500)] + [{"id": "late", "question": "Late?"}]
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    with pytest.raises(JobSpecError, match=r"\(the first 1,000 rows have: id, text\)"):
        check_fields(spec(path))


def test_rows_that_cannot_be_read_leave_the_check_to_bad_rows(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text("not json\n[1, 2]\n", encoding="utf-8")
    check_fields(spec(path, question_field="q"))


def test_many_long_keys_are_shown_short(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{f"{'k' * 60}{i}": i for i in range(30)}])
    with pytest.raises(JobSpecError) as info:
        check_fields(spec(path))
    message = str(info.value)
    assert "its one row has: kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk..., " in message and message.endswith(", ...)")
    assert len(message) < 1000


def _examples(golds, choices=None):
    return [Example(f"e{i}", f"Question {i}?", g, choices) for i, g in enumerate(golds)]


@pytest.mark.parametrize(("kind", "golds", "choices", "words"), [
    ("yes_no", ["maybe", "perhaps", "maybe"], None, "'maybe', 'perhaps'; gold 'maybe' is not one of ['yes', 'no']"),
    ("multiple_choice", ["the sea", "a river"], ("sky", "desert"), "gold 'the sea' is neither a choice"),
    ("multiple_choice", ["the sea"], None, "needs choices"),
    ("arithmetic", ["seven", "nine"], None, "gold 'seven' is not a number"),
    ("nli", ["sometimes"], None, "gold 'sometimes' is not one of ['entailment', 'neutral', 'contradiction']"),
])
def test_gold_none_of_which_fits_the_task_is_a_job_spec_error(kind, golds, choices, words):
    with pytest.raises(JobSpecError) as info:
        check_gold(build_task(TaskSpec(kind=kind)), _examples(golds, choices))
    assert info.value.field == "dataset.answer_field"
    assert str(info.value).startswith(f"dataset.answer_field: no gold answer fits task kind {kind!r}")
    assert words in str(info.value), str(info.value)


def test_gold_that_fits_once_or_is_absent_passes():
    task = build_task(TaskSpec(kind="yes_no"))
    check_gold(task, _examples(["maybe"] * 50 + ["Yes"]))  # the misfits become bad rows, as before
    check_gold(task, _examples([None, None]))
    check_gold(task, [])


def test_a_huge_gold_value_is_shown_short():
    with pytest.raises(JobSpecError) as info:
        check_gold(build_task(TaskSpec(kind="yes_no")), _examples(["w" * 1_000_000]))
    assert len(str(info.value)) < 400
