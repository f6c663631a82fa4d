"""Streaming datasets: shards read one at a time, duplicate ids found through the on-disk id index across
batches, resumed runs that do not decode finished shards, and cheap row counts."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from stepwise.pipeline import datasets
from stepwise.pipeline.datasets import BATCH_ROWS, count_rows, read_examples, read_shards
from stepwise.pipeline.spec import DatasetSpec
from stepwise.pipeline.types import Example, RowReject
from stepwise.storage.id_index import IdIndex
from tests.conftest import write_jsonl


def rows(n: int, start: int = 0) -> list[dict]:
    return [{"id": f"e{i}", "question": f"What is {i} plus one?", "answer": str(i + 1)} for i in range(start, n)]


def spec(path: Path, **kw) -> DatasetSpec:
    return DatasetSpec(path=str(path), id_field="id", answer_field="answer", **kw)


def flat(shards) -> list:
    return [item for _, items in shards for item in items]


# ── the id index ─────────────────────────────────────────────────────────────────────────────────────────────────


def test_id_index_answers_the_first_row_and_the_count_across_batches(tmp_path):
    ids = IdIndex(tmp_path / "ids.sqlite", signature="a")
    assert ids.fresh
    assert ids.resolve([("x", 0), ("y", 1)]) == [(0, 1), (1, 1)]
    assert ids.resolve([("x", 5), ("z", 6), ("x", 9)]) == [(0, 2), (6, 1), (0, 3)]
    # the same rows again (a shard run twice) resolve as the first time
    assert ids.resolve([("x", 5), ("x", 0)]) == [(0, 2), (0, 1)]
    ids.close()


def test_id_index_persists_for_the_same_file_and_starts_again_for_another(tmp_path):
    path = tmp_path / "ids.sqlite"
    first = IdIndex(path, signature="file:100:1")
    first.resolve([("x", 0)])
    first.close()
    same = IdIndex(path, signature="file:100:1")
    assert not same.fresh
    assert same.resolve([("x", 7)]) == [(0, 2)]  # row 0 is still known
    same.close()
    changed = IdIndex(path, signature="file:120:2")
    assert changed.fresh
    assert changed.resolve([("x", 7)]) == [(7, 1)]  # the old file's rows are forgotten
    changed.close()


def test_id_index_in_memory_holds_nothing_on_disk(tmp_path):
    ids = IdIndex()
    assert ids.fresh and ids.resolve([("a", 0), ("a", 1)]) == [(0, 1), (0, 2)]
    ids.close()
    assert list(tmp_path.iterdir()) == []


# ── shards ───────────────────────────────────────────────────────────────────────────────────────────────────────


def test_shards_cover_every_row_once_in_file_order(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", rows(25))
    shards = list(read_shards(spec(path), 10, set(), IdIndex()))
    assert [index for index, _ in shards] == [0, 1, 2]
    assert [len(items) for _, items in shards] == [10, 10, 5]
    assert [item.id for item in flat(shards)] == [f"e{i}" for i in range(25)]
    assert flat(shards) == list(read_examples(spec(path)))


def test_a_duplicate_id_in_a_later_batch_is_a_bad_row_naming_the_first(tmp_path):
    data = rows(BATCH_ROWS + 200)
    data[BATCH_ROWS + 100] = {**data[BATCH_ROWS + 100], "id": "e3"}  # a different batch from row 3
    path = write_jsonl(tmp_path / "d.jsonl", data)
    items = flat(read_shards(spec(path), 500, set(), IdIndex()))
    rejects = [item for item in items if isinstance(item, RowReject)]
    assert len(items) == len(data)
    assert [(r.id, r.reason) for r in rejects] == [
        (f"row-{BATCH_ROWS + 100}", f"row {BATCH_ROWS + 100}: duplicate id 'e3' (first at row 3)")]


def test_identical_rows_without_an_id_field_get_stable_distinct_ids_across_batches(tmp_path):
    same = {"question": "Is the sky blue?", "answer": "yes"}
    data = [same] + [{"question": f"Q{i}?", "answer": "no"} for i in range(BATCH_ROWS + 5)] + [same, same]
    path = write_jsonl(tmp_path / "d.jsonl", data)
    plain = DatasetSpec(path=str(path), answer_field="answer")
    items = flat(read_shards(plain, 300, set(), IdIndex()))
    first, second, third = items[0].id, items[-2].id, items[-1].id
    assert second == f"{first}~2" and third == f"{first}~3"
    assert len({item.id for item in items}) == len(items)
    assert [i.id for i in items] == [i.id for i in flat(read_shards(plain, 300, set(), IdIndex()))]  # stable


def test_a_resumed_run_skips_finished_shards_without_decoding_them(tmp_path, monkeypatch):
    data = rows(50)
    data[45] = {**data[45], "id": "e2"}  # a duplicate of a row in a finished shard
    path = write_jsonl(tmp_path / "d.jsonl", data)
    index_path = tmp_path / "ids.sqlite"
    ids = IdIndex(index_path, signature="v1")
    list(read_shards(spec(path), 10, set(), ids))  # the first run registered every id
    ids.close()

    decoded: list[int] = []
    real = datasets.row_to_example

    def counting(row, dataset, index):
        decoded.append(index)
        return real(row, dataset, index)

    monkeypatch.setattr(datasets, "row_to_example", counting)
    resumed = IdIndex(index_path, signature="v1")
    assert not resumed.fresh
    shards = list(read_shards(spec(path), 10, {0, 1, 3}, resumed))
    assert [index for index, _ in shards] == [2, 4]
    assert sorted(decoded) == list(range(20, 30)) + list(range(40, 50))  # done shards: not one row decoded
    dup = [item for item in flat(shards) if isinstance(item, RowReject)]
    assert [r.reason for r in dup] == ["row 45: duplicate id 'e2' (first at row 2)"]  # still found

    # a fresh index (the file changed, or it was lost) reads every row's id again, and still yields only the rest
    decoded.clear()
    again = list(read_shards(spec(path), 10, {0, 1, 3}, IdIndex()))
    assert [index for index, _ in again] == [2, 4]
    assert flat(again) == flat(shards)


@pytest.mark.parametrize("fmt", ["csv", "parquet", "json"])
def test_every_format_streams_the_same_shards(tmp_path, fmt):
    data = rows(23)
    path = tmp_path / f"d.{fmt}"
    if fmt == "csv":
        with path.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(data[0]))
            writer.writeheader()
            writer.writerows(data)
    elif fmt == "parquet":
        pq.write_table(pa.Table.from_pylist(data), path, row_group_size=4)
    else:
        path.write_text(json.dumps(data), encoding="utf-8")
    shards = list(read_shards(spec(path), 10, {1}, IdIndex()))
    assert [index for index, _ in shards] == [0, 2]
    assert [item.id for item in flat(shards)] == [f"e{i}" for i in list(range(10)) + list(range(20, 23))]
    assert all(isinstance(item, Example) for item in flat(shards))


def test_the_limit_ends_the_stream(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", rows(40))
    shards = list(read_shards(spec(path, limit=15), 10, set(), IdIndex()))
    assert [len(items) for _, items in shards] == [10, 5]


# ── counts ───────────────────────────────────────────────────────────────────────────────────────────────────────


def test_count_rows_is_cheap_where_it_can_be_and_unknown_elsewhere(tmp_path):
    lines = tmp_path / "d.jsonl"
    lines.write_bytes(b"\xef\xbb\xbf" + b"".join(json.dumps(r).encode() + b"\n\n" for r in rows(7)) + b"  \n")
    assert count_rows(spec(lines)) == 7  # blank lines and the byte-order mark are not rows
    assert count_rows(spec(lines, limit=3)) == 3
    table = tmp_path / "d.parquet"
    pq.write_table(pa.Table.from_pylist(rows(12)), table, row_group_size=5)
    assert count_rows(spec(table)) == 12
    text = tmp_path / "d.csv"
    text.write_text("id,question,answer\ne1,\"two\nlines\",1\n", encoding="utf-8")
    assert count_rows(spec(text)) is None  # a quoted newline: only a parse can tell
    assert count_rows(spec(write_jsonl(tmp_path / "e.jsonl", []))) == 0
