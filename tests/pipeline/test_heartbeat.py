"""The job heartbeat: its rate over a trailing window, its progress arithmetic, the file a run leaves behind, and
that a broken or missing file is only a missing figure."""

from __future__ import annotations

import json
import time

import pytest

from stepwise.pipeline.run.heartbeat import LAST_ERRORS, Heartbeat, HeartbeatWriter, _Rate, read_heartbeat
from stepwise.pipeline.run.job import run_job
from stepwise.pipeline.run.shard import ShardResult
from stepwise.pipeline.spec import load_job
from stepwise.pipeline.types import Completion
from stepwise.storage.location import CorpusLocation
from tests.pipeline.test_runner import make_job


def test_the_rate_is_measured_over_the_trailing_window_only():
    rate = _Rate(window_s=10.0)
    rate.add(0.0, 0)
    assert rate.per_s(0.5, 5) is None  # under a second measured: no figure yet
    for t in range(1, 21):  # 100 per second for 10 s, then 10 per second
        rate.add(float(t), 100 * t if t <= 10 else 1000 + 10 * (t - 10))
    assert rate.per_s(20.0, 1100) == pytest.approx(10.0)  # the fast first half has left the window
    assert rate.samples[0][0] >= 10.0 - 1e-9 and len(rate.samples) <= 12


def _beat(**kw) -> Heartbeat:
    base = dict(pid=1, started_at="2026-01-01T00:00:00Z", updated_at="2026-01-01T00:00:00Z", live=True,
                requests_total=0, shards_total=0)
    return Heartbeat(**{**base, **kw})


@pytest.mark.parametrize("kw,fraction", [
    (dict(shards_total=0), 0.0),
    (dict(live=False, shards_total=10, shards_skipped=4, shards_done=3), 0.7),
    (dict(live=True, shards_total=10, shards_skipped=4, requests_total=60, requests_done=30), 0.7),
    (dict(live=True, shards_total=4, requests_total=0, shards_done=1), 0.25),  # nothing to request: by shards
    (dict(live=True, shards_total=2, requests_total=10, requests_done=12), 1.0),  # never past the end
])
def test_progress_counts_skipped_shards_and_requests_inside_unfinished_ones(kw, fraction):
    assert _beat(**kw).fraction == pytest.approx(fraction)


def test_the_writer_counts_events_keeps_the_last_errors_and_passes_everything_on(tmp_path):
    seen = []

    class Inner:
        def start(self, *a): seen.append(("start", a))
        def completion(self, c, cached): seen.append(("completion", c.example_id, cached))
        def shard_done(self, r): seen.append(("shard", r.index, r.skipped))

    corpus = CorpusLocation.of(tmp_path)
    with HeartbeatWriter(corpus, "hb", inner=Inner(), interval_s=60) as beat:
        beat.start(30, 3, True)
        beat.shard_done(ShardResult(0, skipped=True))
        for i in range(20):
            error = f"HTTP 400: bad request {i}" if i % 2 else None
            beat.completion(Completion("k", f"e{i}", 0, None if error else "x", error=error), cached=i < 3)
        beat.shard_done(ShardResult(1, records=20, accepted=15))
        running = read_heartbeat(corpus, "hb")
        assert running is not None and running.finished is False and running.requests_done == 0  # the first write
    final = read_heartbeat(corpus, "hb")
    assert final.finished and final.requests_done == 20 and final.cached == 3 and final.records == 20
    assert (final.shards_total, final.shards_skipped, final.shards_done) == (3, 1, 1)
    assert [e.example_id for e in final.last_errors] == [f"e{i}" for i in range(1, 20, 2)][-LAST_ERRORS:]
    assert final.eta_s is None and final.requests_per_s > 0
    assert seen[0] == ("start", (30, 3, True)) and seen[1] == ("shard", 0, True)
    assert sum(1 for s in seen if s[0] == "completion") == 20 and seen[-1] == ("shard", 1, False)
    assert not list((tmp_path / "jobs").glob(".*"))  # written whole: no temp file left behind


def test_a_run_leaves_a_finished_heartbeat_that_agrees_with_its_records(tmp_path):
    job = load_job(make_job(tmp_path, 25, samples=2, shard_size=10))
    summary = run_job(job, tmp_path / "corpus")
    beat = read_heartbeat(CorpusLocation.of(tmp_path / "corpus"), job.job_id)
    assert beat is not None and beat.finished and beat.live is False  # a recorded teacher counts shards
    assert (beat.shards_total, beat.shards_done, beat.shards_skipped) == (3, 3, 0)
    assert beat.records == summary.n_records == 50 and beat.fraction == 1.0

    run_job(job, tmp_path / "corpus")  # a rerun finds every shard done: a new run, all skipped
    again = read_heartbeat(CorpusLocation.of(tmp_path / "corpus"), job.job_id)
    assert (again.shards_skipped, again.shards_done, again.records) == (3, 0, 0) and again.fraction == 1.0
    assert again.started_at > beat.started_at


@pytest.mark.parametrize("content", [b"", b"{not json", json.dumps({"pid": "x"}).encode()])
def test_an_unreadable_heartbeat_is_no_heartbeat(tmp_path, content):
    (tmp_path / "jobs").mkdir()
    (tmp_path / "jobs" / "j.progress.json").write_bytes(content)
    assert read_heartbeat(CorpusLocation.of(tmp_path), "j") is None
    assert read_heartbeat(CorpusLocation.of(tmp_path), "missing") is None


def test_a_heartbeat_that_cannot_be_written_never_fails_the_job(tmp_path, caplog):
    corpus = CorpusLocation.of(tmp_path)
    (tmp_path / "jobs").mkdir()
    (tmp_path / "jobs" / "hb.progress.json").mkdir()  # a folder where the file goes: every write fails
    with pytest.raises(OSError):
        HeartbeatWriter(corpus, "hb").write()
    with pytest.raises(KeyError, match="the job's own error"):  # the job's own exception comes through
        with HeartbeatWriter(corpus, "hb", interval_s=0.05):
            time.sleep(0.15)  # the thread tries too, and fails quietly
            raise KeyError("the job's own error")
    assert caplog.text.count("cannot write its heartbeat") >= 3  # the first write, the thread's, the last
    assert [p.name for p in (tmp_path / "jobs").iterdir()] == ["hb.progress.json"]  # no temp files left
