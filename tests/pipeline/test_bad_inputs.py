"""Hostile and mistaken inputs through the real CLI: each ends as a precise error (exit 2 for the job file's
mistakes, nothing written) or as `bad_row` records beside the rows that are fine, in bounded time."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from tests.conftest import stepwise, write_jsonl
from tests.pipeline.test_yamlfile import alias_bomb

# Three yes/no questions of our own, and what the recorded teacher said to each.
QUESTIONS = [("y1", "Is ice colder than steam?", "yes"), ("y2", "Do fish breathe with lungs?", "no"),
             ("y3", "Is a square a rectangle?", "yes")]
SECRET = "SECRET-MARKER-51d7"


def make_job(folder: Path, *, data: str | bytes | None = None, data_name: str = "data.jsonl",
             dataset: dict | None = None, job_text: str | None = None, **top) -> Path:
    """A replay job over QUESTIONS in `folder` (dataset, recorded completions, job file); returns the job file.
    `data` replaces the dataset file's content; `dataset` and `top` change the job's fields."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / data_name
    if data is None:
        write_jsonl(path, [{"id": i, "question": q, "answer": a} for i, q, a in QUESTIONS])
    elif isinstance(data, bytes):
        path.write_bytes(data)
    else:
        path.write_text(data, encoding="utf-8")
    write_jsonl(folder / "teacher.jsonl", [{"example_id": i, "text": f"Thinking it over: {a}. So the answer is {a}."}
                                           for i, _, a in QUESTIONS])
    job = {"job_id": "hostile", "task": "yes_no", "prompt": "few_shot_cot",
           "dataset": {"path": data_name, "id_field": "id", "answer_field": "answer", **(dataset or {})},
           "teacher": {"backend": "replay", "path": "teacher.jsonl"}, **top}
    job_file = folder / "job.yaml"
    job_file.write_text(job_text if job_text is not None else yaml.safe_dump(job, sort_keys=False), encoding="utf-8")
    return job_file


def run(job: Path, corpus: Path, *extra: str):
    return stepwise("run", str(job), "--corpus", str(corpus), "--quiet", *extra)


def said(proc) -> str:
    """stderr with rich's 80-column wrapping undone."""
    return " ".join(proc.stderr.split())


def records(corpus: Path) -> dict[str, dict]:
    files = sorted((corpus / "records" / "hostile").glob("shard-*.parquet"))
    rows = [r for f in files for r in pq.read_table(f).to_pylist()]
    return {r["example_id"]: r for r in rows}


def refused_before_anything(proc, corpus: Path, code: int = 2) -> str:
    """The run ended with `code`, said why on stderr without a traceback, and wrote nothing: no records, no
    registry row."""
    assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    assert not corpus.exists()
    return said(proc)


# ── rows of any nesting ──────────────────────────────────────────────────────────────────────────────────────────
def _rows_text(layout: str, depth: int) -> tuple[str, str]:
    """QUESTIONS with a row nested `depth` levels after the first, as (file name, content)."""
    rows = [{"id": i, "question": q, "answer": a} for i, q, a in QUESTIONS]
    deep = "[" * depth + "]" * depth
    if layout == "jsonl":
        lines = [json.dumps(r) for r in rows]
        lines.insert(1, '{"id": "deep", "question": "Deep?", "answer": "yes", "x": ' + deep + "}")
        return "data.jsonl", "\n".join(lines) + "\n"
    if layout == "json_array":
        items = [json.dumps(r) for r in rows]
        items.insert(1, deep)
        return "data.json", "[\n" + ",\n".join(items) + "\n]\n"
    if layout == "csv_json_cell":
        lines = ["id,question,answer,tags"] + [f"{i},{q},{a},[]" for i, q, a in QUESTIONS]
        lines.insert(2, f'deep,Deep?,yes,"{deep}"')
        return "data.csv", "\n".join(lines) + "\n"
    raise AssertionError(layout)


@pytest.mark.parametrize(("layout", "reject_id", "detail"), [
    ("jsonl", "row-1", "row 1: nested too deeply (more than 100 levels)"),
    ("json_array", "row-1", "row 1: nested too deeply (more than 100 levels)"),
    ("csv_json_cell", "deep", "row 1: field 'tags' is nested too deeply (more than 100 levels)"),
])
def test_a_row_nested_1100_levels_is_a_bad_row_and_the_job_completes(tmp_path, layout, reject_id, detail):
    name, text = _rows_text(layout, 1_100)  # 2 KB: the row that used to end the run with a RecursionError
    extra = {"choices_field": "tags"} if layout == "csv_json_cell" else {}
    job = make_job(tmp_path / "job", data=text, data_name=name, dataset=extra)
    if layout == "csv_json_cell":  # choices are checked per row: give the good rows two each
        (tmp_path / "job" / name).write_text(text.replace(",[]", ',"[""yes"", ""no""]"'), encoding="utf-8")
    corpus = tmp_path / "corpus"
    started = time.perf_counter()
    proc = run(job, corpus)
    assert time.perf_counter() - started < 60
    assert proc.returncode == 0, proc.stderr
    assert "job hostile: completed" in said(proc)
    got = records(corpus)
    assert sorted(got) == sorted([reject_id, "y1", "y2", "y3"])
    assert [got[i]["accepted"] for i in ("y1", "y2", "y3")] == [True, True, True]
    assert (got[reject_id]["reject_reason"], got[reject_id]["reject_detail"]) == ("bad_row", detail)


# ── byte-order marks ─────────────────────────────────────────────────────────────────────────────────────────────
BOM = b"\xef\xbb\xbf"


@pytest.mark.parametrize("where", ["csv", "jsonl", "json_array", "job_file"])
def test_a_byte_order_mark_changes_nothing(tmp_path, where):
    rows = [{"id": i, "question": q, "answer": a} for i, q, a in QUESTIONS]
    if where == "csv":
        text = "id,question,answer\n" + "".join(f"{i},{q},{a}\n" for i, q, a in QUESTIONS)
        name, data = "data.csv", BOM + text.encode()
    elif where == "json_array":
        name, data = "data.json", BOM + json.dumps(rows, indent=1).encode()
    else:
        name, data = "data.jsonl", (BOM if where == "jsonl" else b"") + b"".join(
            json.dumps(r).encode() + b"\n" for r in rows)
    job = make_job(tmp_path / "job", data=data, data_name=name)
    if where == "job_file":
        job.write_bytes(BOM + job.read_bytes())
    corpus = tmp_path / "corpus"
    proc = run(job, corpus)
    assert proc.returncode == 0, proc.stderr
    got = records(corpus)
    assert sorted(got) == ["y1", "y2", "y3"] and all(r["accepted"] for r in got.values()), got


# ── strict YAML job files and templates ─────────────────────────────────────────────────────────────────────────
def test_an_alias_bomb_job_file_is_refused_naming_the_line(tmp_path):
    job = make_job(tmp_path / "job")
    job.write_text(alias_bomb() + job.read_text(encoding="utf-8"), encoding="utf-8")
    corpus = tmp_path / "corpus"
    text = refused_before_anything(run(job, corpus), corpus)
    assert f"error: job file {job}, line 2, column 8: YAML aliases (*name) are not allowed here" in text


def test_a_key_given_twice_in_a_job_file_is_refused_naming_it_and_both_lines(tmp_path):
    job = make_job(tmp_path / "job")
    lines = job.read_text(encoding="utf-8").splitlines()
    job.write_text("\n".join([*lines, "dataset: {path: other.jsonl}"]) + "\n", encoding="utf-8")
    corpus = tmp_path / "corpus"
    text = refused_before_anything(run(job, corpus), corpus)
    first = lines.index("dataset:") + 1
    assert (f"line {len(lines) + 1}, column 1: key 'dataset' is given twice in this mapping "
            f"(first at line {first})") in text


def test_a_malformed_template_is_refused_without_echoing_it(tmp_path):
    job = make_job(tmp_path / "job", prompt={"id": "mine", "path": "mine.yaml"})
    (tmp_path / "job" / "mine.yaml").write_text(f"id: mine\nuser: hi\n  key: {SECRET}\n", encoding="utf-8")
    corpus = tmp_path / "corpus"
    proc = run(job, corpus)
    text = refused_before_anything(proc, corpus, code=1)  # a template problem is a PromptError
    assert "mine.yaml, line 3, column 6: not valid YAML: mapping values are not allowed here" in text
    assert SECRET not in proc.stderr + proc.stdout


# ── files the job names ──────────────────────────────────────────────────────────────────────────────────────────
@pytest.mark.parametrize(("field", "change"), [
    ("dataset.path", {"dataset": {"path": "nowhere.jsonl"}}),
    ("prompt.path", {"prompt": {"id": "mine", "path": "nowhere.yaml"}}),
    ("teacher.path", {"teacher": {"backend": "replay", "path": "nowhere.jsonl"}}),
])
def test_a_missing_file_named_in_the_job_is_exit_2_naming_the_field(tmp_path, field, change):
    job = make_job(tmp_path / "job")
    data = yaml.safe_load(job.read_text(encoding="utf-8"))
    for key, value in change.items():
        data[key] = {**data[key], **value} if isinstance(data[key], dict) else value
    job.write_text(yaml.safe_dump(data), encoding="utf-8")
    corpus = tmp_path / "corpus"
    text = refused_before_anything(run(job, corpus), corpus)
    assert f"error: {field}: file not found: {tmp_path / 'job' / 'nowhere'}." in text


def test_a_folder_named_as_the_dataset_is_exit_2_naming_the_field(tmp_path):
    job = make_job(tmp_path / "job", dataset={"path": "."})
    corpus = tmp_path / "corpus"
    text = refused_before_anything(run(job, corpus), corpus)
    assert f"error: dataset.path: {tmp_path / 'job'} is a folder, not a file" in text


# ── dataset mapping mistakes: exit 2 before any request ──────────────────────────────────────────────────────────
def test_a_question_field_no_row_has_is_exit_2_showing_the_keys(tmp_path):
    job = make_job(tmp_path / "job", dataset={"question_field": "q"})
    corpus = tmp_path / "corpus"
    text = refused_before_anything(run(job, corpus), corpus)
    assert ("error: dataset.question_field: no row of data.jsonl has a field 'q' (its 3 rows have: id, question, "
            "answer)") in text


@pytest.mark.parametrize(("task", "golds", "words"), [
    ("yes_no", ["maybe", "unsure", "maybe"], "no gold answer fits task kind 'yes_no' in all 3 labeled rows "
                                             "(e.g. 'maybe', 'unsure'; gold 'maybe' is not one of ['yes', 'no'])"),
    ("multiple_choice", ["the sea", "a lake", "a pond"], "no gold answer fits task kind 'multiple_choice'"),
])
def test_gold_none_of_which_fits_the_task_is_exit_2(tmp_path, task, golds, words):
    rows = [{"id": i, "question": q, "answer": g, "choices": ["sky", "desert"]}
            for (i, q, _), g in zip(QUESTIONS, golds, strict=True)]
    job = make_job(tmp_path / "job", data="".join(json.dumps(r) + "\n" for r in rows), task=task,
                   dataset={"choices_field": "choices"})
    corpus = tmp_path / "corpus"
    text = refused_before_anything(run(job, corpus), corpus)
    assert f"error: dataset.answer_field: {words}" in text


def test_a_mapping_mistake_with_overwrite_keeps_the_records_it_would_replace(tmp_path):
    corpus = tmp_path / "corpus"
    assert run(make_job(tmp_path / "good"), corpus).returncode == 0
    before = records(corpus)
    proc = run(make_job(tmp_path / "bad", dataset={"question_field": "q"}), corpus, "--overwrite")
    assert proc.returncode == 2 and "dataset.question_field" in said(proc)
    assert records(corpus) == before
