"""Trainer fixtures: a small corpus imported from the real Distilling step-by-step release (svamp and cqa test
splits) with `stepwise import dsbs`, its parquet export, and hand-written export files for unit tests."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from stepwise.pipeline.exports import EXPORT_SCHEMA
from tests.conftest import stepwise

SVAMP_JOB, CQA_JOB = "svamp-test", "cqa-test"


@pytest.fixture(scope="session")
def release_corpus(dsbs_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A corpus holding the release's svamp test split (200 questions, arithmetic) and cqa test split (1,221,
    multiple choice), imported through the CLI as a user would."""
    corpus = tmp_path_factory.mktemp("release") / "corpus"
    for name, job, kind in (("svamp", SVAMP_JOB, "arithmetic"), ("cqa", CQA_JOB, "multiple_choice")):
        stepwise("import", "dsbs", "--src", str(dsbs_dir / name), "--split", "test", "--task", kind,
                 "--corpus", str(corpus), "--job-id", job, "--quiet", check=True)
    return corpus


@pytest.fixture(scope="session")
def svamp_export(release_corpus: Path) -> Path:
    """The svamp job's accepted records as one `stepwise export --format parquet` file (the trainer splits it)."""
    path = release_corpus.parent / "svamp.parquet"
    stepwise("export", "--corpus", str(release_corpus), "--job", SVAMP_JOB, "--format", "parquet",
             "--out", str(path), check=True)
    return path


def export_row(example_id: str, sample_idx: int = 0, *, question: str | None = None,
               rationale: str | None = "some reasoning", teacher: str | None = "1", gold: str | None = "1",
               label: str | None = None) -> dict:
    """One row of the parquet export format."""
    return {"example_id": example_id, "sample_idx": sample_idx, "input": question or f"question {example_id}",
            "rationale": rationale, "label": label if label is not None else teacher, "gold_label": gold,
            "teacher_label": teacher}


def write_export(path: Path, rows: list[dict]) -> Path:
    pq.write_table(pa.Table.from_pylist(rows, schema=EXPORT_SCHEMA), path)
    return path
