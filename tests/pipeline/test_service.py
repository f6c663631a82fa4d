"""`JobService` reading jobs: counters summed from part files once each, and equal to a full re-read."""

from __future__ import annotations

import shutil
from dataclasses import asdict

import stepwise.pipeline.run.summary as summary_module
from stepwise.pipeline.run.job import run_job
from stepwise.pipeline.run.summary import merge_summaries, summarize, summarize_files
from stepwise.pipeline.service import JobService
from stepwise.pipeline.spec import load_job
from stepwise.storage.location import CorpusLocation
from tests.pipeline.test_runner import make_job

COUNTERS = ("n_examples", "n_records", "n_accepted", "n_rejected", "n_correct", "n_with_gold", "tokens_in",
            "tokens_out", "cost_usd", "reject_reasons")


def counters(summary) -> dict:
    return {k: v for k, v in asdict(summary).items() if k in COUNTERS}


def test_summaries_of_disjoint_part_files_add_up_to_the_whole(tmp_path):
    job = load_job(make_job(tmp_path, 250, samples=2, shard_size=60))
    run_job(job, tmp_path / "corpus")
    corpus = CorpusLocation.of(tmp_path / "corpus")
    files = corpus.list_files("records", job.job_id)
    parts = [summarize_files(corpus, job.job_id, files[:2]), summarize_files(corpus, job.job_id, files[2:])]
    whole = summarize(corpus, job.job_id)
    assert counters(merge_summaries(job.job_id, parts)) == counters(whole)
    assert whole.n_records == 500 and whole.reject_reasons  # make_job's teacher is wrong every fourth sample


def test_the_service_reads_each_new_part_file_once(tmp_path, monkeypatch):
    job = load_job(make_job(tmp_path, 250, samples=2, shard_size=60))
    run_job(job, tmp_path / "corpus")
    corpus = CorpusLocation.of(tmp_path / "corpus")
    files = corpus.list_files("records", job.job_id)
    whole = counters(summarize(corpus, job.job_id))
    read: list[list[str]] = []
    real = summary_module.summarize_files
    monkeypatch.setattr(summary_module, "summarize_files", lambda c, j, fs: read.append(list(fs)) or real(c, j, fs))

    service = JobService(tmp_path / "corpus")
    summary, n = service._summary(service.registry.get(job.job_id))
    assert counters(summary) == whole and n == 5 and read == [files]
    service._summary(service.registry.get(job.job_id))
    assert len(read) == 1  # nothing new: nothing read

    # a part file goes away (only an --overwrite does that): start again from what is there
    aside = tmp_path / "aside.parquet"
    shutil.move(files[-1], aside)
    summary, n = service._summary(service.registry.get(job.job_id))
    assert n == 4 and read[-1] == files[:-1] and summary.n_records < 500
    # it comes back (a shard finished): only it is read, and the sum is the whole again
    shutil.move(aside, files[-1])
    summary, n = service._summary(service.registry.get(job.job_id))
    assert n == 5 and read[-1] == [files[-1]] and counters(summary) == whole

    run_job(job, tmp_path / "corpus", overwrite=True)  # a rewritten registry row: everything again
    summary, _ = service._summary(service.registry.get(job.job_id))
    assert read[-1] == files and counters(summary) == whole
