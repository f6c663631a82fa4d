"""Dataset readers: every format, field mapping, stable ids, and one RowReject per malformed row."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.datasets import content_id, detect_format, read_examples
from pipeline.errors import DatasetError
from pipeline.spec import DatasetSpec
from pipeline.types import Example, RowReject
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
