"""The `hf` export (a folder `datasets.load_dataset` and the Hub read: split files and a dataset card with the job's
provenance), small-split honesty in every format (no empty split files, warnings below a consumer's minimum) and
the validation of `--push-to-hub` (never run: no network in tests). Corpora come from replay jobs of our own."""

from __future__ import annotations

import importlib
import json
import re
import sys
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from stepwise import __version__
from stepwise.pipeline.cli import main
from stepwise.pipeline.errors import StepwiseError
from stepwise.pipeline.exports import EXPORT_SCHEMA, FORMATS, export_job
from stepwise.pipeline.exports.hf import endpoint, size_category
from stepwise.pipeline.run.summary import summarize
from stepwise.storage.jobs import JobRegistry, JobState
from tests.pipeline.test_exports import (
    ARITH,
    MC,
    THINK,
    _reasoning_record,
    accepted,
    build_corpus,
    read_jsonl,
)

SPLIT = (0.8, 0.1, 0.1)
HF_COLUMNS = [*EXPORT_SCHEMA.names, "reasoning"]
HUB_NAME = {"train": "train", "valid": "validation", "test": "test"}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, dict, dict]:
    return build_corpus(tmp_path_factory.mktemp("hf-exports"))


@pytest.fixture
def offline_datasets(tmp_path, monkeypatch):
    """`datasets` with the network off (its config is read at import time) and caches under the test's folder."""
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    if "datasets" in sys.modules:
        importlib.reload(sys.modules["datasets"].config)
    import datasets

    assert datasets.config.HF_DATASETS_OFFLINE is True

    def load(folder: Path):
        return datasets.load_dataset(str(folder), cache_dir=str(tmp_path / "hf-cache"))

    return load


def card_parts(folder: Path) -> tuple[dict, str, str]:
    """The card's front matter (parsed), its raw YAML text and its Markdown body."""
    text = (folder / "README.md").read_text(encoding="utf-8")
    match = re.match(r"\A---\n(.*?)\n---\n(.*)\Z", text, re.S)
    assert match, text[:200]
    return yaml.safe_load(match.group(1)), match.group(1), match.group(2)


def data_files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in (folder / "data").iterdir())


# ── the folder loads as a dataset ────────────────────────────────────────────────────────────────────────────────
def test_without_a_split_one_train_file_loads_with_load_dataset(corpus, tmp_path, offline_datasets):
    root, arith, _ = corpus
    out = tmp_path / "pears-hf"
    summary = export_job(root, ARITH, "hf", out)
    want = [{"example_id": eid, "sample_idx": k, "input": e["input"], "rationale": e["rationale"],
             "label": e["label"], "gold_label": e["gold"], "teacher_label": e["label"], "reasoning": None}
            for (eid, k), e in accepted(arith)]
    assert summary.rows == {"train": len(want)} and summary.empty_splits == [] and summary.warnings == []
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "data"]
    assert data_files(out) == ["data/train-00000-of-00001.parquet"]
    loaded = offline_datasets(out)
    assert list(loaded) == ["train"]
    assert loaded["train"].num_rows == len(want)
    assert list(loaded["train"].features) == HF_COLUMNS  # no gold_rationale: no record has one
    assert loaded["train"].to_list() == want


def test_splits_load_with_their_row_counts_and_hub_names(corpus, tmp_path, offline_datasets):
    root, arith, _ = corpus
    out = tmp_path / "split-hf"
    summary = export_job(root, ARITH, "hf", out, split=SPLIT, seed=0)
    assert set(summary.rows) == {"train", "valid", "test"} and summary.empty_splits == []
    assert sum(summary.rows.values()) == len(accepted(arith)) == summary.records
    assert data_files(out) == ["data/test-00000-of-00001.parquet", "data/train-00000-of-00001.parquet",
                               "data/validation-00000-of-00001.parquet"]
    loaded = offline_datasets(out)
    assert {name: ds.num_rows for name, ds in loaded.items()} == {HUB_NAME[s]: n for s, n in summary.rows.items()}
    # the samples of one question stay in one split
    where = {}
    for name, ds in loaded.items():
        for eid in ds["example_id"]:
            assert where.setdefault(eid, name) == name


def test_an_empty_split_gets_no_file_and_an_earlier_one_is_removed(corpus, tmp_path, offline_datasets):
    root, _, _ = corpus
    out = tmp_path / "reused"
    export_job(root, ARITH, "hf", out, split=SPLIT, seed=0)
    assert (out / "data" / "test-00000-of-00001.parquet").exists()
    summary = export_job(root, ARITH, "hf", out, split=SPLIT, seed=1)  # seed 1 puts none of the 30 in test
    assert summary.empty_splits == ["test"] and set(summary.rows) == {"train", "valid"}
    assert data_files(out) == ["data/train-00000-of-00001.parquet", "data/validation-00000-of-00001.parquet"]
    meta, _, _ = card_parts(out)
    assert [f["split"] for f in meta["configs"][0]["data_files"]] == ["train", "validation"]
    loaded = offline_datasets(out)
    assert {name: ds.num_rows for name, ds in loaded.items()} == {"train": summary.rows["train"],
                                                                   "validation": summary.rows["valid"]}


# ── the card ─────────────────────────────────────────────────────────────────────────────────────────────────────
def test_the_front_matter_is_yaml_the_hub_reads(corpus, tmp_path):
    root, _, _ = corpus
    out = tmp_path / "card"
    summary = export_job(root, ARITH, "hf", out, split=SPLIT, seed=0)
    meta, raw, _ = card_parts(out)
    assert meta["configs"] == [{"config_name": "default", "data_files": [
        {"split": HUB_NAME[s], "path": f"data/{HUB_NAME[s]}-00000-of-00001.parquet"} for s in summary.rows]}]
    for entry in meta["configs"][0]["data_files"]:
        assert (out / entry["path"]).is_file()
    assert meta["task_categories"] == ["question-answering", "text-generation"]  # arithmetic
    assert meta["size_categories"] == ["n<1K"]
    assert {"distillation", "chain-of-thought", "synthetic"} <= set(meta["tags"])
    assert "license" not in meta  # left for the user, and said so in a comment
    assert re.search(r"^# license: fill this in", raw, re.M)


def test_the_body_tells_the_provenance_of_the_job(corpus, tmp_path):
    root, arith, _ = corpus
    out = tmp_path / "card"
    export_job(root, ARITH, "hf", out)
    _, _, body = card_parts(out)
    state, summary = JobRegistry(root).get(ARITH), summarize(root, ARITH)
    assert state.prompt_hash and state.fingerprint
    assert "`tiny-teacher` (backend `replay`)" in body
    assert f"| prompt | `few_shot_cot`, hash `{state.prompt_hash}` |" in body
    assert f"| job fingerprint | `{state.fingerprint}` |" in body
    accuracy = f"{summary.n_correct / summary.n_with_gold:.2%} ({summary.n_correct:,} of {summary.n_with_gold:,}"
    assert f"| teacher accuracy | {accuracy}" in body
    assert f"| accepted | {summary.n_accepted:,} of {summary.n_records:,} records" in body
    assert summary.reject_reasons == Counter(e["reason"] for e in arith.values() if not e["accepted"])
    for reason, n in summary.reject_reasons.items():
        assert f"| `{reason}` | {n:,} |" in body
    assert f"| tokens in / out | {summary.tokens_in:,} / {summary.tokens_out:,} |" in body
    assert f"| stepwise version | `{__version__}` |" in body
    assert "temperature: 0.7" in body and "require_correct: false" in body  # sampling and filters
    assert 'load_dataset("path/to/this/folder")' in body
    for column in HF_COLUMNS:
        assert f"| `{column}` |" in body
    assert "gold_rationale" not in body


def test_the_task_kind_chooses_the_task_categories(corpus, tmp_path):
    root, _, _ = corpus
    export_job(root, MC, "hf", tmp_path / "quiz")
    meta, _, _ = card_parts(tmp_path / "quiz")
    assert meta["task_categories"] == ["multiple-choice", "question-answering", "text-generation"]


@pytest.mark.parametrize(("n", "bucket"), [(0, "n<1K"), (999, "n<1K"), (1000, "1K<n<10K"), (54_321, "10K<n<100K"),
                                           (2_000_000, "1M<n<10M"), (10**13, "n>1T")])
def test_size_categories_are_the_hubs_buckets(n, bucket):
    assert size_category(n) == bucket


@pytest.fixture
def reasoning_root(tmp_path) -> Path:
    """Records of a reasoning-model job whose dataset has reference solutions, and a registry row whose teacher
    URL carries credentials."""
    from stepwise.storage import layout
    from stepwise.storage.parquet import write_records

    root = tmp_path / "corpus"
    first = replace(_reasoning_record("r1", "3 + 4?", "7", "3 + 4 = 7", reasoning="3 + 4 = 7", completion="7"),
                    gold_rationale="Add: 3 + 4 = 7.")
    second = _reasoning_record("r2", "5 - 2?", "3", "5 - 2 = 3")  # no trace, no reference solution
    write_records([first, second], root.joinpath(*layout.part(THINK, 0)))
    spec = {"task": {"kind": "arithmetic"}, "prompt": {"id": "zero_shot_cot"}, "rationale": "auto",
            "teacher": {"backend": "openai", "model": "qwen3-8b", "api_key_env": "MY_TEACHER_KEY",
                        "base_url": "https://alice:s3cret@teacher.example:8443/v1?api-key=k3y#frag"},
            "sampling": {"n": 1, "temperature": 0.6, "reasoning_effort": None}, "filters": {"max_repetition": 0.3}}
    JobRegistry(root).save(JobState(job_id=THINK, status="completed", fingerprint="fp-123",
                                    spec_json=json.dumps(spec), task="arithmetic", prompt_id="zero_shot_cot",
                                    prompt_hash="ph-456", teacher_backend="openai", teacher_model="qwen3-8b"))
    return root


def test_traces_and_reference_solutions_are_columns(reasoning_root, tmp_path, offline_datasets):
    out = tmp_path / "hf"
    export_job(reasoning_root, THINK, "hf", out)
    table = pq.read_table(out / "data" / "train-00000-of-00001.parquet")
    assert table.column_names == [*HF_COLUMNS, "gold_rationale"]
    assert table.select(["example_id", "reasoning", "gold_rationale"]).to_pylist() == [
        {"example_id": "r1", "reasoning": "3 + 4 = 7", "gold_rationale": "Add: 3 + 4 = 7."},
        {"example_id": "r2", "reasoning": None, "gold_rationale": None}]
    assert offline_datasets(out)["train"].num_rows == 2
    _, _, body = card_parts(out)
    assert "| `gold_rationale` |" in body and "| `reasoning` |" in body


def test_no_secret_goes_into_the_card(reasoning_root, tmp_path):
    out = tmp_path / "hf"
    export_job(reasoning_root, THINK, "hf", out)
    text = (out / "README.md").read_text(encoding="utf-8")
    for secret in ("alice", "s3cret", "k3y", "frag", "MY_TEACHER_KEY", "api_key_env"):
        assert secret not in text
    assert "`qwen3-8b` (backend `openai`, endpoint `https://teacher.example:8443/v1`)" in text
    assert "`fp-123`" in text and "`ph-456`" in text and "max_repetition: 0.3" in text
    assert "reasoning_effort" not in text  # unset sampling fields are left out


@pytest.mark.parametrize(("url", "shown"), [
    ("https://api.openai.com/v1", "https://api.openai.com/v1"),
    ("http://user:pw@10.0.0.5:8000/v1?token=abc#x", "http://10.0.0.5:8000/v1"),
    ("https://token@host.example/v1/", "https://host.example/v1/"),
    (None, None), ("", None),
])
def test_endpoint_keeps_no_credentials(url, shown):
    assert endpoint(url) == shown


def test_a_job_with_nothing_to_export_writes_no_folder(tmp_path):
    from stepwise.storage import layout
    from stepwise.storage.parquet import write_records

    root = tmp_path / "corpus"
    write_records([_reasoning_record("r1", "q", "7", "x", accepted=False)], root.joinpath(*layout.part(THINK, 0)))
    with pytest.raises(StepwiseError, match="no teacher-labelled accepted records to export as hf"):
        export_job(root, THINK, "hf", tmp_path / "hf")
    assert not (tmp_path / "hf").exists()


def test_the_format_name_offers_every_format_the_folder_one_included():
    """The REST export's `format` names every registered format; a folder format is sent as a zip of its folder
    (tests/api/test_service.py)."""
    from pydantic import TypeAdapter, ValidationError

    from stepwise.pipeline.exports import FormatName

    adapter = TypeAdapter(FormatName)
    assert adapter.validate_python("hf") == "hf" and adapter.validate_python("chat") == "chat"
    assert adapter.json_schema()["enum"] == list(FORMATS.names())
    with pytest.raises(ValidationError, match="unknown export format 'csv'"):
        adapter.validate_python("csv")


# ── small-split honesty, every format ────────────────────────────────────────────────────────────────────────────
@pytest.mark.parametrize(("fmt", "ext"), [("dsbs", "jsonl"), ("finetune_cot", "jsonl"), ("chat", "jsonl"),
                                          ("chat_think", "jsonl"), ("parquet", "parquet")])
def test_no_format_writes_an_empty_split_file(corpus, tmp_path, fmt, ext):
    root, _, _ = corpus
    out = tmp_path / "split"
    out.mkdir()
    (out / f"test.{ext}").write_text("left by an earlier export\n")
    summary = export_job(root, ARITH, fmt, out, split=SPLIT, seed=1)  # no example of the 30 falls in test
    assert summary.empty_splits == ["test"] and "test" not in summary.rows
    assert sorted(p.name for p in out.iterdir()) == [f"train.{ext}", f"valid.{ext}"]
    assert all(p.stat().st_size > 0 for p in out.iterdir())


def test_chat_warns_below_what_openai_fine_tuning_takes(corpus, tmp_path):
    root, _, mc = corpus
    summary = export_job(root, MC, "chat", tmp_path / "quiz.jsonl")
    n = len(accepted(mc))
    assert summary.rows == {"all": n} and n < 10
    assert summary.warnings == [f"the export has {n} rows; OpenAI fine-tuning asks for at least 10"]
    assert len(read_jsonl(tmp_path / "quiz.jsonl")) == n  # warned, still written
    split = export_job(root, ARITH, "chat_think", tmp_path / "split", split=SPLIT, seed=0)
    small = [s for s, rows in split.rows.items() if rows < 10]
    assert small and split.rows["train"] >= 10
    assert split.warnings == [f"split {s} has {split.rows[s]} rows; OpenAI fine-tuning asks for at least 10"
                              for s in small]


@pytest.mark.parametrize("fmt", ["dsbs", "finetune_cot", "parquet", "hf"])
def test_formats_without_a_minimum_do_not_warn(corpus, tmp_path, fmt):
    root, _, _ = corpus
    assert export_job(root, MC, fmt, tmp_path / "out").warnings == []


def test_an_export_with_no_rows_is_still_written_when_unsplit_and_warned(tmp_path):
    from stepwise.storage import layout
    from stepwise.storage.parquet import write_records

    root = tmp_path / "corpus"
    write_records([_reasoning_record("r1", "q", "7", "x", accepted=False)], root.joinpath(*layout.part(THINK, 0)))
    summary = export_job(root, THINK, "chat", tmp_path / "c.jsonl")  # the REST export sends this one file
    assert summary.rows == {"all": 0} and summary.warnings == ["the export has no rows"]
    assert (tmp_path / "c.jsonl").read_bytes() == b""


def _said(capsys) -> str:
    return " ".join(capsys.readouterr().err.split())  # rich wraps long lines


def test_the_cli_says_empty_splits_and_warnings(corpus, tmp_path, capsys):
    root, _, _ = corpus
    out = tmp_path / "split"
    code = main(["export", "--corpus", str(root), "--job", ARITH, "--format", "chat", "--out", str(out),
                 "--split", "0.8,0.1,0.1", "--seed", "1"])
    said = _said(capsys)
    assert code == 0
    assert "empty splits, no file written: test" in said
    assert re.search(r"warning: split valid has \d rows; OpenAI fine-tuning asks for at least 10", said)


# ── --push-to-hub: validated only, never run ─────────────────────────────────────────────────────────────────────
def test_push_to_hub_is_refused_without_the_hf_format(corpus, tmp_path, capsys):
    root, _, _ = corpus
    code = main(["export", "--corpus", str(root), "--job", ARITH, "--format", "parquet", "--out",
                 str(tmp_path / "p.parquet"), "--push-to-hub", "someone/pears"])
    assert code == 1
    assert "--push-to-hub uploads a dataset folder: use it with --format hf" in _said(capsys)
    assert not (tmp_path / "p.parquet").exists()


def test_push_to_hub_without_the_extra_names_it(corpus, tmp_path, capsys, monkeypatch):
    root, _, _ = corpus
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # `import huggingface_hub` now fails
    code = main(["export", "--corpus", str(root), "--job", ARITH, "--format", "hf", "--out",
                 str(tmp_path / "hf"), "--push-to-hub", "someone/pears"])
    assert code == 1
    assert "needs the hub extra (huggingface_hub): pip install 'stepwise-distill[hub]'" in _said(capsys)
    assert not (tmp_path / "hf").exists()  # checked before anything is written


def test_the_trainer_reads_an_hf_folder_as_it_reads_the_parquet_export(corpus, tmp_path):
    """`stepwise train --export DIR` on an hf folder: the same records by split as the parquet export gives, with
    its split kept; an hf folder exported without a split is split by the trainer, as a single file would be."""
    from stepwise.pipeline.trainer.data import read_export

    root, _, _ = corpus
    export_job(root, ARITH, "hf", tmp_path / "hf", split=SPLIT, seed=0)
    export_job(root, ARITH, "parquet", tmp_path / "pq", split=SPLIT, seed=0)
    assert read_export(tmp_path / "hf", SPLIT, 0) == read_export(tmp_path / "pq", SPLIT, 0)
    export_job(root, ARITH, "hf", tmp_path / "hf-whole")
    export_job(root, ARITH, "parquet", tmp_path / "whole.parquet")
    whole = read_export(tmp_path / "hf-whole", SPLIT, 3)
    assert whole == read_export(tmp_path / "whole.parquet", SPLIT, 3) and whole["train"] and whole["test"]
    (tmp_path / "hf" / "data" / "test-00000-of-00001.parquet").unlink()
    with pytest.raises(StepwiseError, match="needs its train and test splits"):
        read_export(tmp_path / "hf", SPLIT, 0)
