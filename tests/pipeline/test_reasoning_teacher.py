"""The Fine-tune-CoT datasets: every file reads, its task kind is inferred, every gold answer normalises."""

from __future__ import annotations

from collections import Counter
from functools import cache
from pathlib import Path

import pytest

from stepwise.pipeline.datasets import read_examples
from stepwise.pipeline.spec import DatasetSpec, TaskSpec
from stepwise.pipeline.tasks import build_task, infer_kind
from stepwise.pipeline.types import Example

# file stem: (kind, rows, first three normalised golds)
DATASETS = {
    "addsub": ("arithmetic", 395, ["43", "26", "6"]),
    "multiarith": ("arithmetic", 600, ["39", "8", "2"]),
    "multiarith_template_split": ("arithmetic", 600, ["39", "8", "2"]),
    "single_eq": ("arithmetic", 508, ["43", "26", "135"]),
    "svamp": ("arithmetic", 1000, ["51", "1", "17"]),
    "svamp_template_split": ("arithmetic", 1000, ["51", "1", "17"]),
    "gsm8k_test_only": ("arithmetic", 1319, ["18", "3", "70000"]),
    "coin_flip": ("yes_no", 500, ["yes", "no", "no"]),
    "strategy_qa": ("yes_no", 2290, ["yes", "no", "no"]),
    "commonsense_qa": ("multiple_choice", 10962, ["ignore", "populated areas", "jewelry store"]),
    "date_understanding": ("multiple_choice", 369, ["05/01/2021", "05/02/2021", "04/30/2021"]),
    "date_understanding_template_split": ("multiple_choice", 369, ["05/01/2021", "05/02/2021", "04/30/2021"]),
    "tracking_shuffled_objects": ("multiple_choice", 750, ["blue ball", "white ball", "orange ball"]),
    "last_letter_concatenation": ("exact", 500, ["yajo", "yajc", "berl"]),
}

# how many choices the multiple-choice questions offer inline
CHOICE_COUNTS = {
    "commonsense_qa": {5},
    "date_understanding": {5, 6},
    "date_understanding_template_split": {5, 6},
    "tracking_shuffled_objects": {3},
}


@cache
def _examples(path: Path) -> list:
    spec = DatasetSpec(path=str(path), format="json", question_field="question", answer_field="answer")
    return list(read_examples(spec))


def test_every_dataset_file_is_covered(reasoning_teacher_dir):
    assert sorted(p.stem for p in (reasoning_teacher_dir / "dataset").glob("*.json")) == sorted(DATASETS)


@pytest.mark.parametrize("stem", sorted(DATASETS))
def test_dataset_reads_infers_its_kind_and_every_gold_normalises(reasoning_teacher_dir, stem):
    kind, rows, first_golds = DATASETS[stem]
    items = _examples(reasoning_teacher_dir / "dataset" / f"{stem}.json")
    assert len(items) == rows
    assert all(isinstance(ex, Example) for ex in items), [ex for ex in items if not isinstance(ex, Example)][:3]
    assert len({ex.id for ex in items}) == rows

    assert infer_kind(items) == kind
    assert infer_kind(items[:20]) == kind  # a small sample, as `kind: auto` would see

    task = build_task(TaskSpec(kind=kind))
    golds = []
    for ex in items:
        prepared = task.prepare(ex)
        golds.append(task.normalize_gold(prepared.gold, prepared))
    assert golds[:3] == first_golds


@pytest.mark.parametrize("stem", sorted(CHOICE_COUNTS))
def test_multiple_choice_golds_are_the_lettered_choice(reasoning_teacher_dir, stem):
    task = build_task(TaskSpec(kind="multiple_choice"))
    counts = set()
    for ex in _examples(reasoning_teacher_dir / "dataset" / f"{stem}.json"):
        prepared = task.prepare(ex)
        assert ex.choices is None and prepared.meta["choices_inline"] is True
        counts.add(len(prepared.choices))
        assert len(ex.gold) == 1 and ex.gold.isupper()
        gold = task.normalize_gold(ex.gold, prepared)
        assert gold == prepared.choices[ord(ex.gold) - ord("A")]
        assert task.compare(task.extract(f"({ex.gold.lower()}) {gold}", prepared), gold)
        assert task.student_input(prepared) == ex.input
    assert counts == CHOICE_COUNTS[stem]


@pytest.mark.parametrize("stem, counts", [
    ("coin_flip", {"yes": 253, "no": 247}),
    ("strategy_qa", {"yes": 1071, "no": 1219}),
])
def test_yes_no_label_counts(reasoning_teacher_dir, stem, counts):
    task = build_task(TaskSpec(kind="yes_no"))
    items = _examples(reasoning_teacher_dir / "dataset" / f"{stem}.json")
    assert Counter(task.normalize_gold(ex.gold, ex) for ex in items) == counts


@pytest.mark.parametrize("stem", ["addsub", "multiarith", "single_eq", "svamp", "gsm8k_test_only"])
def test_arithmetic_golds_are_canonical_numbers(reasoning_teacher_dir, stem):
    task = build_task(TaskSpec(kind="arithmetic"))
    for ex in _examples(reasoning_teacher_dir / "dataset" / f"{stem}.json"):
        gold = task.normalize_gold(ex.gold, ex)
        assert abs(float(gold) - float(ex.gold.replace(",", ""))) <= 5e-7  # rounded to 6 decimals
        assert task.compare(gold, ex.gold.replace(",", ""))
        assert not gold.endswith(".0")
        assert task.extract(f"{ex.gold}.", ex) == gold
