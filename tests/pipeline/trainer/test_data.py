"""Training data: reading exports and jobs, the split by example, data fractions, and the pairs of each mode."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stepwise.pipeline.errors import DatasetError, TrainerError
from stepwise.pipeline.exports import assign_split
from stepwise.pipeline.trainer.config import TrainConfig
from stepwise.pipeline.trainer.data import (
    Pair,
    Record,
    build_train_set,
    eval_examples,
    load_data,
    read_export,
    read_export_file,
    resolve_task,
    take_fraction,
)
from tests.conftest import write_jsonl
from tests.pipeline.trainer.conftest import SVAMP_JOB, export_row, write_export

SPLIT = (0.8, 0.1, 0.1)


def rec(example_id: str, sample_idx: int = 0, *, rationale: str | None = "why", teacher: str | None = "1",
        gold: str | None = "1") -> Record:
    return Record(example_id, sample_idx, f"question {example_id}", rationale, teacher, gold)


# ── reading ─────────────────────────────────────────────────────────────────────────────────────────────────────
def test_parquet_and_jsonl_exports_read_the_same(tmp_path: Path):
    rows = [export_row("a", 0, teacher="3", gold="4"), export_row("a", 1, teacher="4", gold="4"),
            export_row("b", 0, rationale=None, teacher="7", gold=None)]
    from_parquet = read_export_file(write_export(tmp_path / "e.parquet", rows))
    from_jsonl = read_export_file(write_jsonl(tmp_path / "e.jsonl", rows))
    assert from_parquet == from_jsonl
    assert from_parquet[0] == Record("a", 0, "question a", "some reasoning", "3", "4")
    assert from_parquet[2].gold_label is None and from_parquet[2].rationale is None


@pytest.mark.parametrize(("row", "fmt"), [
    ({"example_id": "a", "sample_idx": 0, "task": "predict", "input": "predict: q", "target": "1"}, "dsbs"),
    ({"example_id": "a", "sample_idx": 0, "prompt": "q ###", "completion": " r --> 1 END"}, "finetune_cot"),
    ({"messages": [{"role": "user", "content": "q"}]}, "chat or chat_think"),
])
def test_other_export_formats_are_refused_with_the_reason(tmp_path: Path, row: dict, fmt: str):
    with pytest.raises(DatasetError, match=f"looks like a `{fmt}` export.*--format parquet"):
        read_export_file(write_jsonl(tmp_path / "x.jsonl", [row]))


def test_missing_columns_and_bad_lines_are_named(tmp_path: Path):
    with pytest.raises(DatasetError, match="missing column.*gold_label"):
        read_export_file(write_jsonl(tmp_path / "x.jsonl", [{"example_id": "a", "input": "q", "rationale": "r",
                                                             "teacher_label": "1"}]))
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(export_row("a")) + "\n{not json\n")
    with pytest.raises(DatasetError, match="line 2: not JSON"):
        read_export_file(bad)


def test_a_single_file_is_split_by_example_like_the_export(tmp_path: Path):
    rows = [export_row(f"e{i}", k) for i in range(60) for k in range(3)]
    splits = read_export(write_export(tmp_path / "e.parquet", rows), SPLIT, 7)
    for name, records in splits.items():
        assert {assign_split(r.example_id, SPLIT, 7) for r in records} <= {name}
    ids = {name: {r.example_id for r in records} for name, records in splits.items()}
    assert not ids["train"] & ids["test"] and not ids["train"] & ids["valid"] and not ids["valid"] & ids["test"]
    assert sum(len(r) for r in splits.values()) == 180 and ids["train"] and ids["test"]


def test_a_split_export_folder_keeps_its_own_split(tmp_path: Path):
    folder = tmp_path / "split"
    folder.mkdir()
    write_export(folder / "train.parquet", [export_row("t1"), export_row("t2")])
    write_jsonl(folder / "test.jsonl", [export_row("x1")])  # a test file alone is enough; valid is optional
    splits = read_export(folder, SPLIT, 0)
    assert [r.example_id for r in splits["train"]] == ["t1", "t2"]
    assert [r.example_id for r in splits["test"]] == ["x1"] and splits["valid"] == []
    (folder / "test.jsonl").unlink()
    with pytest.raises(DatasetError, match="needs train and test"):
        read_export(folder, SPLIT, 0)


def test_the_real_export_never_leaks_a_question_across_splits(svamp_export: Path, release_corpus: Path,
                                                              tmp_path: Path):
    from_file = load_data(TrainConfig(out=str(tmp_path), export=str(svamp_export)))
    from_job = load_data(TrainConfig(out=str(tmp_path), corpus=str(release_corpus), job=SVAMP_JOB))
    train_ids = {r.example_id for r in from_file.train}
    test_ids = {t.example_id for t in from_file.test}
    assert train_ids and test_ids and not train_ids & test_ids
    # the corpus job and its export, split with the same seed, give the same split
    assert train_ids == {r.example_id for r in from_job.train}
    assert test_ids == {t.example_id for t in from_job.test}
    assert from_file.task.kind == from_job.task.kind == "arithmetic"  # inferred from gold vs the job's own
    assert from_file.counts == from_job.counts and sum(from_file.counts.values()) == 198


def test_a_jobs_test_split_scores_every_question_also_those_the_teacher_got_wrong(tmp_path: Path):
    from stepwise.pipeline.exports import assign_split
    from stepwise.pipeline.run.job import run_job
    from stepwise.pipeline.spec import load_job
    from tests.pipeline.test_runner import make_job

    # a recorded teacher that is wrong on every fourth question: those are rejected (`incorrect`), so a test
    # split of accepted records only would hold just the questions it got right
    job = load_job(make_job(tmp_path, 120))
    run_job(job, tmp_path / "corpus")
    data = load_data(TrainConfig(out=str(tmp_path / "out"), corpus=str(tmp_path / "corpus"), job=job.job_id))
    expected = {f"q{i}" for i in range(120) if assign_split(f"q{i}", (0.8, 0.1, 0.1), 0) == "test"}
    wrong = {f"q{i}" for i in range(0, 120, 4)}
    assert {t.example_id for t in data.test} == expected and expected & wrong
    assert all(t.gold_label for t in data.test)
    assert not {r.example_id for r in data.train} & wrong  # training keeps accepted records only


def test_a_job_without_records_is_an_error(release_corpus: Path, tmp_path: Path):
    from stepwise.pipeline.errors import StorageError

    with pytest.raises(StorageError, match="no records"):
        load_data(TrainConfig(out=str(tmp_path), corpus=str(release_corpus), job="no-such-job"))


def test_a_test_split_without_gold_is_an_error(tmp_path: Path):
    folder = tmp_path / "split"
    folder.mkdir()
    write_export(folder / "train.parquet", [export_row("t1")])
    write_export(folder / "test.parquet", [export_row("x1", gold=None)])
    with pytest.raises(TrainerError, match="no example with a gold label"):
        load_data(TrainConfig(out=str(tmp_path), export=str(folder), task="arithmetic"))


# ── the task that scores ─────────────────────────────────────────────────────────────────────────────────────
def test_the_task_is_inferred_from_gold_labels_or_given():
    mc = Record("m", 0, "Where?\nAnswer Choices:\n(a) home\n(b) park", "r", "home", "park")
    assert resolve_task(None, None, [mc]).kind == "multiple_choice"
    assert resolve_task(None, None, [rec("a", gold="12"), rec("b", gold="3.5")]).kind == "arithmetic"
    assert resolve_task("exact", None, [rec("a", gold="12")]).kind == "exact"
    with pytest.raises(TrainerError, match="give --task"):
        resolve_task(None, None, [rec("a", gold=None)])


def test_eval_examples_are_one_per_question_with_normalised_gold():
    task = resolve_task("arithmetic", None, [])
    records = [rec("a", 0, gold="( 84.0 / 2.0 )"), rec("a", 1, gold="( 84.0 / 2.0 )"), rec("b", gold=None),
               rec("c", gold="not a number")]
    examples, skipped = eval_examples(records, task)
    assert [(e.example_id, e.gold_label) for e in examples] == [("a", "42")]
    assert skipped == 2
    mc = resolve_task("multiple_choice", None, [])
    [example], _ = eval_examples([Record("m", 0, "Where?\nAnswer Choices:\n(a) home\n(b) park", "r", "home",
                                         "(B)")], mc)
    assert example.gold_label == "park" and example.example.choices == ("home", "park")


# ── fractions and pairs ──────────────────────────────────────────────────────────────────────────────────────
def test_fractions_are_nested_and_keep_whole_examples():
    records = [rec(f"e{i}", k) for i in range(40) for k in range(2)]
    quarter, half = take_fraction(records, 0.25, 3), take_fraction(records, 0.5, 3)
    q_ids, h_ids = {r.example_id for r in quarter}, {r.example_id for r in half}
    assert len(q_ids) == 10 and len(h_ids) == 20 and q_ids < h_ids
    assert len(quarter) == 20  # both samples of every kept example
    assert take_fraction(records, 0.25, 4) != quarter  # the seed picks the subset
    assert take_fraction(records, 0.001, 3) and take_fraction(records, 1.0, 3) == records


def test_standard_mode_is_one_pair_per_example_with_the_chosen_label():
    records = [rec("a", 0, teacher="5", gold="6"), rec("a", 1, teacher="6", gold="6"), rec("a", 2, teacher="6"),
               rec("b", 0, teacher="2", gold=None), rec("c", 0, teacher="9", gold="9", rationale=None)]
    teacher = build_train_set(records, "standard", "teacher")
    # the majority of the teacher's samples; a missing rationale does not matter for label-only training
    assert teacher.label == [Pair("question a", "6"), Pair("question b", "2"), Pair("question c", "9")]
    assert teacher.rationale is None and teacher.examples == 3
    gold = build_train_set(records, "standard", "gold")
    assert [p.target for p in gold.label] == ["6", "9"] and gold.skipped_no_label == 1
    tie = build_train_set([rec("t", 0, teacher="1"), rec("t", 1, teacher="2")], "standard", "teacher")
    assert tie.label == [Pair("question t", "1")]  # a tie goes to the first sample


def test_multitask_pairs_both_tasks_of_each_record():
    records = [rec("a", 0, rationale="r0", teacher="5"), rec("a", 1, rationale="r1", teacher="6"),
               rec("b", 0, rationale=None)]
    s = build_train_set(records, "multitask", "teacher")
    assert s.label == [Pair("predict: question a", "5"), Pair("predict: question a", "6")]
    assert s.rationale == [Pair("explain: question a", "r0"), Pair("explain: question a", "r1")]
    assert s.skipped_no_rationale == 1 and s.examples == 1


def test_cot_targets_are_rationale_arrow_label_for_every_sample():
    records = [rec("a", 0, rationale=" 2 + 3 = 5. ", teacher="5", gold="5"),
               rec("a", 1, rationale="Five.", teacher="5", gold="5"), rec("b", 0, teacher="1", gold=None)]
    s = build_train_set(records, "cot", "gold")
    assert s.label == [Pair("question a", "2 + 3 = 5. --> 5"), Pair("question a", "Five. --> 5")]
    assert s.skipped_no_label == 1 and s.rationale is None
