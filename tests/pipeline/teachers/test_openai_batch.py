"""The `openai_batch` backend against the real simulator's Batch API (`/v1/files`, `/v1/batches`) over loopback.

Counts come from the simulator's /stats: batches created, files uploaded, and every line's `custom_id` counted as
a request key when its batch is created (received) and when it is answered (completed), so a request submitted
twice, or a batch created twice, shows up as a wrong number.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml
from openai import OpenAI

from stepwise.storage.cache import RequestCache
from stepwise.pipeline.errors import RequestRejectedError, TeacherAuthError
from stepwise.pipeline.spec import JobSpec, OpenAIBatchTeacherSpec, parse_job
from stepwise.pipeline.teachers import build_backend
from stepwise.pipeline.teachers.openai_batch import BatchLedger, OpenAIBatchBackend
from stepwise.pipeline.teachers.limits import estimate_tokens
from stepwise.pipeline.teachers.transport import chat_body
from stepwise.pipeline.types import Completion, Sampling, TeacherRequest
from stepwise.storage.catalog import query
from tests.conftest import sigkill_when, write_jsonl

ROOT = Path(__file__).resolve().parents[3]
MODEL = "stepwise-sim"
GENERIC = "Adding the numbers step by step gives 42. So the answer is 42."  # the simulator's answer without a dataset
QUICK = ("--batch-delay", "0.3")
POLL = 0.1
WRONG_KEY = "sk-wrong-SECRET-123"
FOLLOWUP = "Therefore, the answer (arabic numerals) is"


def question(i: int) -> str:
    return f"Noor bakes {4 + i} loaves and sells {i % 3} of them. How many loaves are left?"


def gold(i: int) -> int:
    return 4 + i - i % 3


def make_requests(n_examples: int, n_samples: int = 1, *, start: int = 0, sample_major: bool = False,
                  followup: str | None = None, padding: int = 0) -> list[TeacherRequest]:
    """Requests as the runner builds them: one messages tuple per example, shared by its samples."""
    msgs = {i: ({"role": "system", "content": "Think step by step." + " " * padding},
                {"role": "user", "content": question(i)}) for i in range(start, start + n_examples)}
    pairs = [(i, k) for i in msgs for k in range(n_samples)]
    if sample_major:  # interleave the examples, so that request order differs from line order
        pairs.sort(key=lambda p: (p[1], p[0]))
    return [TeacherRequest(f"ex{i:02d}", k, msgs[i], Sampling(max_tokens=64, temperature=0.7), "few_shot_cot",
                           "hash", "openai_batch", MODEL, followup) for i, k in pairs]


def dataset(folder: Path, n: int) -> Path:
    return write_jsonl(folder / "sim-dataset.jsonl",
                       [{"id": f"ex{i:02d}", "question": question(i), "answer": str(gold(i))} for i in range(n)])


@pytest.fixture
def open_backend(tmp_path: Path) -> Iterator[Callable[..., OpenAIBatchBackend]]:
    """`open_backend(sim, cache="a", **teacher_fields)`: a batch backend closed at teardown; backends given the
    same `cache` name share one cache file (and its batch ledger)."""
    opened: list[OpenAIBatchBackend] = []

    def make(sim, *, cache: str = "cache", **fields) -> OpenAIBatchBackend:
        fields.setdefault("api_key_env", None)
        fields.setdefault("poll_interval_s", POLL)
        fields.setdefault("base_url", sim.base_url)
        spec = OpenAIBatchTeacherSpec(backend="openai_batch", model=MODEL, **fields)
        backend = OpenAIBatchBackend(spec, cache=RequestCache(tmp_path / f"{cache}.sqlite"))
        opened.append(backend)
        return backend

    yield make
    for backend in opened:
        backend.close()
        backend.cache.close()


def assert_in_request_order(requests: list[TeacherRequest], out: list[Completion]) -> None:
    assert len(out) == len(requests)
    for req, c in zip(requests, out, strict=True):
        assert (c.example_id, c.sample_idx, c.request_key) == (req.example_id, req.sample_idx, req.cache_key())


def per_key(sim) -> dict[str, dict[str, int]]:
    return sim.stats(keys=True)["per_key"]


# ── answers, order, cache ───────────────────────────────────────────────────────────────────────────────────────


def test_a_batch_answers_in_request_order_is_cached_and_a_second_backend_sends_nothing(
        start_sim, open_backend, tmp_path):
    sim = start_sim(*QUICK, "--dataset", str(dataset(tmp_path, 4)), "--wrong-rate", "0")
    reqs = make_requests(4, 3, sample_major=True)
    first = open_backend(sim)
    seen: list[tuple[str, bool]] = []
    first.events = lambda c, cached: seen.append((c.request_key, cached))
    out = first.complete(reqs)

    assert_in_request_order(reqs, out)
    for c in out:
        g = gold(int(c.example_id[2:]))
        assert c.error is None and c.finish_reason == "stop" and c.model == MODEL
        assert c.text.endswith(f" gives {g}. So the answer is {g}."), c.text  # this example's answer
        assert c.tokens_in is not None and c.tokens_out > 0 and c.latency_s > 0
    assert len({(c.example_id, c.text) for c in out}) > 4  # choice i of a line is sample i: samples differ
    stats = sim.stats()
    assert (stats["batches_created"], stats["files_uploaded"]) == (1, 1)
    # one line per example (n=3), its custom_id the cache key of the example's first sample
    assert set(per_key(sim)) == {r.cache_key() for r in reqs if r.sample_idx == 0}
    assert (stats["received"], stats["completed"], stats["completed_more_than_once"]) == (4, 4, 0)
    assert (first.stats.sent, first.stats.completed, first.stats.batches_created) == (4, 12, 1)
    assert sorted(seen) == sorted((r.cache_key(), False) for r in reqs)
    assert first.cache.count() == 12
    assert [row.status for row in first.ledger.rows()] == ["collected"]

    again = open_backend(sim)  # the same cache file
    seen.clear()
    again.events = lambda c, cached: seen.append((c.request_key, cached))
    second = again.complete(reqs)
    assert sim.stats()["batches_created"] == 1 and sim.stats()["files_uploaded"] == 1  # nothing sent
    assert (again.stats.cache_hits, again.stats.sent) == (12, 0)
    assert sorted(seen) == sorted((r.cache_key(), True) for r in reqs)
    assert_in_request_order(reqs, second)
    assert [(c.text, c.tokens_in, c.tokens_out) for c in second] == [(c.text, c.tokens_in, c.tokens_out) for c in out]


def test_a_batch_keeps_a_trace_sent_in_its_own_field_and_sends_the_reasoning_fields(start_sim, open_backend,
                                                                                     tmp_path):
    sim = start_sim(*QUICK, "--dataset", str(dataset(tmp_path, 3)), "--wrong-rate", "0", "--reasoning", "field")
    sampling = Sampling(max_tokens=64, max_completion_tokens=4096, reasoning_effort="high",
                        chat_template_kwargs=json.dumps({"enable_thinking": True}))
    reqs = [TeacherRequest(r.example_id, r.sample_idx, r.messages, sampling, r.prompt_id, r.prompt_hash, r.backend,
                           r.model) for r in make_requests(3, 2)]
    out = open_backend(sim).complete(reqs)
    for c in out:
        g = gold(int(c.example_id[2:]))
        assert c.text.endswith(f"so the answer is \\boxed{{{g}}}.") and c.reasoning.endswith(f"So the answer is {g}.")
        assert c.reasoning.startswith("Okay, let me work through this. The problem: Noor bakes")
        assert c.reasoning_tokens == estimate_tokens(c.reasoning)
    line = chat_body(MODEL, reqs[0], 2)  # what each line's body is
    assert (line["max_completion_tokens"], line["reasoning_effort"], line["chat_template_kwargs"]) == \
        (4096, "high", {"enable_thinking": True}) and "max_tokens" not in line
    again = open_backend(sim).complete(reqs)  # from the cache, the trace with it
    assert sim.stats()["batches_created"] == 1
    assert [(c.reasoning, c.reasoning_tokens) for c in again] == [(c.reasoning, c.reasoning_tokens) for c in out]


def test_without_n_every_sample_is_its_own_line_keyed_by_its_cache_key(start_sim, open_backend):
    sim = start_sim(*QUICK)
    reqs = make_requests(3, 2)
    out = open_backend(sim, supports_n=False).complete(reqs)
    assert_in_request_order(reqs, out)
    assert all(c.text == GENERIC for c in out)
    assert per_key(sim) == {r.cache_key(): {"received": 1, "completed": 1} for r in reqs}


def test_zero_shot_cot_runs_as_two_rounds_of_batches(start_sim, open_backend, tmp_path):
    sim = start_sim(*QUICK, "--dataset", str(dataset(tmp_path, 3)), "--wrong-rate", "0")
    reqs = make_requests(3, 2, followup=FOLLOWUP)
    backend = open_backend(sim)
    out = backend.complete(reqs)
    assert_in_request_order(reqs, out)
    for c in out:
        reasoning, answer = c.text.split(f"\n{FOLLOWUP} ")
        assert reasoning.endswith(f"So the answer is {gold(int(c.example_id[2:]))}.")
        assert answer == f"{gold(int(c.example_id[2:]))}."
    stats = sim.stats()
    assert stats["batches_created"] == 2  # the reasoning, then the answer prompts: 3 lines with n=2, then 6
    assert (stats["received"], stats["completed_more_than_once"]) == (3 + 6, 0)
    assert backend.cache.count() == 6 + 6 + 6  # both stages and the combined completion
    again = open_backend(sim).complete(reqs)
    assert [c.text for c in again] == [c.text for c in out] and sim.stats()["batches_created"] == 2


# ── the API's limits ────────────────────────────────────────────────────────────────────────────────────────────


def test_batches_are_split_by_requests_per_batch(start_sim, open_backend):
    sim = start_sim(*QUICK)
    reqs = make_requests(10)
    backend = open_backend(sim, max_requests_per_batch=4)
    out = backend.complete(reqs)
    assert_in_request_order(reqs, out)
    assert all(c.text == GENERIC for c in out)
    stats = sim.stats()
    assert (stats["batches_created"], stats["files_uploaded"], backend.stats.batches_created) == (3, 3, 3)
    assert per_key(sim) == {r.cache_key(): {"received": 1, "completed": 1} for r in reqs}


def test_batches_are_split_by_bytes_and_a_request_too_big_for_any_batch_is_an_error(start_sim, open_backend):
    sim = start_sim(*QUICK)
    open_backend(sim, cache="probe").complete(make_requests(1, padding=600, start=50))
    line = sim.stats()["largest_upload_bytes"]  # one line, as the simulator received it
    assert 600 < line < 1000

    limit = 2 * line + line // 2  # two lines fit, three do not
    reqs = make_requests(10, padding=600)
    too_big = make_requests(1, padding=3 * line, start=90)
    backend = open_backend(sim, max_bytes_per_batch=limit)
    out = backend.complete(reqs + too_big)
    assert_in_request_order(reqs + too_big, out)
    assert all(c.text == GENERIC for c in out[:10])
    assert out[10].text is None and "more than max_bytes_per_batch" in out[10].error
    stats = sim.stats()
    assert stats["batches_created"] == 1 + 5 and stats["largest_upload_bytes"] <= limit
    assert too_big[0].cache_key() not in per_key(sim)  # never sent


# ── failed, expired and refused requests ────────────────────────────────────────────────────────────────────────


def test_only_failed_lines_are_submitted_again_and_each_is_paid_once(start_sim, open_backend):
    sim = start_sim(*QUICK, "--batch-fail-rate", "0.3", "--seed", "1")
    reqs = make_requests(20)
    backend = open_backend(sim, max_attempts=8)
    out = backend.complete(reqs)
    assert_in_request_order(reqs, out)
    assert all(c.text == GENERIC and c.error is None for c in out)
    stats = sim.stats()
    counts = per_key(sim)
    assert set(counts) == {r.cache_key() for r in reqs}
    assert all(c["completed"] == 1 for c in counts.values()) and stats["completed_more_than_once"] == 0
    resent = sum(c["received"] - 1 for c in counts.values())
    assert resent > 0 and backend.stats.retries == resent  # failures really happened, and only they went again
    assert stats["received"] == 20 + resent and stats["batches_created"] >= 2
    # each later batch holds only lines that failed in the one before it
    assert stats["batches_created"] == max(c["received"] for c in counts.values())


def test_an_expired_batch_is_submitted_again_without_its_answered_lines(start_sim, open_backend):
    sim = start_sim(*QUICK, "--batch-expire")
    first = make_requests(4)
    backend = open_backend(sim)
    out = backend.complete(first)  # the run's first batch expires with no output: all four go again
    assert all(c.text == GENERIC for c in out)
    assert per_key(sim) == {r.cache_key(): {"received": 2, "completed": 1} for r in first}
    assert sim.stats()["batches_created"] == 2
    assert [row.status for row in backend.ledger.rows()] == ["collected", "collected"]


def test_what_still_fails_after_max_attempts_becomes_an_error_and_is_not_cached(start_sim, open_backend):
    sim = start_sim(*QUICK, "--batch-fail-rate", "1")
    reqs = make_requests(3)
    backend = open_backend(sim, max_attempts=2)
    out = backend.complete(reqs)
    assert_in_request_order(reqs, out)
    for c in out:
        assert c.text is None and c.error.startswith("gave up after 2 batches: server_error:"), c.error
    assert sim.stats()["batches_created"] == 2 and backend.stats.failed == 3
    assert backend.cache.count() == 0
    assert per_key(sim) == {r.cache_key(): {"received": 2, "completed": 0} for r in reqs}


def test_a_request_the_api_refuses_is_an_error_at_once_and_not_sent_again(start_sim, open_backend):
    sim = start_sim(*QUICK, "--no-n")  # the server answers lines asking for n > 1 with a 400
    reqs = make_requests(2, 2)
    out = open_backend(sim, max_attempts=3).complete(reqs)
    assert all(c.text is None and "HTTP 400" in c.error and "n > 1" in c.error for c in out)
    assert sim.stats()["batches_created"] == 1


def test_a_wrong_key_fails_with_the_variable_name_and_never_the_key(start_sim, open_backend, monkeypatch):
    sim = start_sim(*QUICK, "--api-key-env", "SIM_KEY", env={"SIM_KEY": "sk-sim-right"})
    monkeypatch.setenv("STEPWISE_BATCH_KEY", WRONG_KEY)
    backend = open_backend(sim, api_key_env="STEPWISE_BATCH_KEY")
    with pytest.raises(TeacherAuthError) as info:
        backend.complete(make_requests(2))
    message = str(info.value)
    assert "refused the credentials" in message and "STEPWISE_BATCH_KEY" in message
    assert WRONG_KEY not in "".join(traceback.format_exception(info.value))
    assert sim.stats()["statuses"] == {"401": 1} and sim.stats()["files_uploaded"] == 0
    with pytest.raises(TeacherAuthError):  # the backend stays stopped
        backend.complete(make_requests(1))
    assert sim.stats()["statuses"] == {"401": 1}

    monkeypatch.setenv("STEPWISE_BATCH_KEY", "sk-sim-right")
    assert open_backend(sim, api_key_env="STEPWISE_BATCH_KEY").complete(make_requests(1))[0].text == GENERIC


# ── restarts ────────────────────────────────────────────────────────────────────────────────────────────────────


def test_a_backend_stopped_while_its_batch_runs_is_followed_by_one_that_polls_it(start_sim, open_backend,
                                                                                  tmp_path):
    sim = start_sim("--batch-delay", "1.5")
    reqs = make_requests(5, 2)
    first = open_backend(sim)
    future = first.submit(reqs)
    deadline = time.monotonic() + 10
    while sim.stats()["batches_created"] < 1:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    first.close()
    assert future.exception(timeout=5) is not None  # it was stopped, not answered
    ledger = BatchLedger(tmp_path / "cache.sqlite")
    assert [row.status for row in ledger.rows()] in (["validating"], ["in_progress"])  # open, and known
    ledger.close()

    second = open_backend(sim)  # the same cache file and ledger
    out = second.complete(reqs)
    assert_in_request_order(reqs, out)
    assert all(c.text == GENERIC for c in out)
    assert (second.stats.batches_resumed, second.stats.batches_created) == (1, 0)
    stats = sim.stats()
    assert (stats["batches_created"], stats["received"], stats["completed_more_than_once"]) == (1, 5, 0)


def test_a_batch_the_server_does_not_know_is_submitted_again_but_not_on_a_wrong_url(start_sim, open_backend,
                                                                                   tmp_path):
    old = start_sim("--batch-delay", "30")
    reqs = make_requests(3)
    first = open_backend(old)
    first.submit(reqs)
    deadline = time.monotonic() + 10
    while old.stats()["batches_created"] < 1:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    first.close()

    new = start_sim(*QUICK)  # another server: the recorded batch means nothing to it
    wrong = open_backend(new, base_url=f"{new.url}/nowhere/v1")  # no Batch API there: the batch is kept
    with pytest.raises(RequestRejectedError, match="HTTP 404"):
        wrong.complete(reqs)
    ledger = BatchLedger(tmp_path / "cache.sqlite")
    assert [row.status for row in ledger.rows()] in (["validating"], ["in_progress"])
    ledger.close()

    out = open_backend(new, cache="cache").complete(reqs)
    assert all(c.text == GENERIC for c in out)
    assert new.stats()["batches_created"] == 1 and old.stats()["completed"] == 0
    ledger = BatchLedger(tmp_path / "cache.sqlite")
    assert [row.status for row in ledger.rows()] == ["lost", "collected"]
    ledger.close()


def test_a_batch_created_just_before_a_crash_is_found_and_not_created_again(start_sim, open_backend, tmp_path):
    """The worst moment to die: the API made the batch, the ledger does not know its id yet."""
    sim = start_sim(*QUICK)
    reqs = make_requests(3)
    # what the crashed run did before it died: upload the lines, record them, ask for the batch
    lines = [{"custom_id": r.cache_key(), "method": "POST", "url": "/v1/chat/completions",
              "body": chat_body(MODEL, r, 1)} for r in reqs]
    client = OpenAI(base_url=sim.base_url, api_key="none")
    upload = client.files.create(file=("in.jsonl", "".join(json.dumps(x) + "\n" for x in lines).encode()),
                                 purpose="batch")
    ledger = BatchLedger(tmp_path / "cache.sqlite")
    ledger.record(upload.id, "crashed", sim.base_url, 1, [x["custom_id"] for x in lines])
    ledger.close()
    client.batches.create(input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h")
    client.close()

    backend = open_backend(sim)
    out = backend.complete(reqs)
    assert all(c.text == GENERIC for c in out)
    assert sim.stats()["batches_created"] == 1 and sim.stats()["files_uploaded"] == 1
    assert per_key(sim) == {r.cache_key(): {"received": 1, "completed": 1} for r in reqs}
    assert backend.stats.batches_resumed == 1


def problems(n: int) -> list[dict]:
    return [{"id": f"ex{i:02d}", "question": question(i), "answer": str(gold(i))} for i in range(n)]


def test_a_batch_job_killed_between_submission_and_completion_resumes_without_submitting_again(start_sim, tmp_path):
    n_examples, n = 12, 2
    folder = tmp_path / "job"
    folder.mkdir()
    write_jsonl(folder / "problems.jsonl", problems(n_examples))
    job = folder / "job.yaml"
    job.write_text(yaml.safe_dump({
        "job_id": "batch",
        "dataset": {"path": "problems.jsonl", "id_field": "id", "question_field": "question",
                    "answer_field": "answer"},
        "task": "arithmetic", "prompt": "few_shot_cot",
        "teacher": {"backend": "openai_batch", "model": MODEL, "base_url": "http://127.0.0.1:9/v1",
                    "api_key_env": None, "poll_interval_s": 0.2},
        "sampling": {"n": n, "temperature": 0.7, "max_tokens": 128},
    }, sort_keys=False), encoding="utf-8")
    sim = start_sim("--dataset", str(folder / "problems.jsonl"), "--wrong-rate", "0", "--batch-delay", "4")
    corpus = tmp_path / "corpus"
    args = [sys.executable, "-m", "stepwise", "run", str(job), "--corpus", str(corpus), "--quiet",
            "--set", f"teacher.base_url={sim.base_url}"]

    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    sigkill_when(proc, lambda: sim.stats()["batches_created"] >= 1, what="the job submitted no batch")
    assert sim.stats()["completed"] == 0  # killed before the batch completed

    again = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=60,
                           env={**os.environ, "COLUMNS": "300"})
    assert again.returncode == 0, again.stderr
    stats = sim.stats()
    assert (stats["batches_created"], stats["files_uploaded"]) == (1, 1)  # it polled the batch it had
    assert (stats["received"], stats["completed"], stats["completed_more_than_once"]) == (12, 12, 0)
    records = query(corpus, "SELECT example_id, sample_idx, label, teacher_backend, tokens_in FROM records"
                    ).table.to_pylist()
    assert len(records) == n_examples * n
    assert {(r["example_id"], r["sample_idx"]) for r in records} == {(f"ex{i:02d}", k) for i in range(n_examples)
                                                                      for k in range(n)}
    assert all(r["label"] == str(gold(int(r["example_id"][2:]))) for r in records)
    assert {r["teacher_backend"] for r in records} == {"openai_batch"} and all(r["tokens_in"] for r in records)
    assert query(corpus, "SELECT status, n_records FROM jobs").table.to_pylist() == [
        {"status": "completed", "n_records": n_examples * n}]
    ledger = BatchLedger(corpus / "cache" / "requests.sqlite")
    assert [row.status for row in ledger.rows()] == ["collected"]
    ledger.close()


# ── the spec ────────────────────────────────────────────────────────────────────────────────────────────────────


def _job(teacher: dict) -> JobSpec:
    return parse_job({"job_id": "j", "dataset": {"path": "d.jsonl"}, "task": "arithmetic", "prompt": "few_shot_cot",
                      "teacher": {"backend": "openai_batch", "model": "gpt-4o-mini", **teacher}})


@pytest.mark.parametrize("field, value", [
    ("base_url", "http://127.0.0.1:1/v1"), ("api_key_env", "OTHER_KEY"), ("poll_interval_s", 1),
    ("max_attempts", 7), ("max_requests_per_batch", 10), ("max_bytes_per_batch", 4096), ("timeout_s", 5),
])
def test_how_batches_are_sent_does_not_change_the_job_fingerprint(field, value):
    assert _job({field: value}).fingerprint() == _job({}).fingerprint()
    assert _job({"model": "gpt-4o"}).fingerprint() != _job({}).fingerprint()


@pytest.mark.parametrize("field, value, message", [
    ("max_requests_per_batch", 50_001, "less than or equal to 50000"),
    ("max_bytes_per_batch", 200_000_001, "less than or equal to 200000000"),
    ("poll_interval_s", 0, "greater than 0"),
    ("completion_window", "1h", "'24h'"),
    ("api_key_env", "sk-live-123", "NAME of an environment variable"),
    ("base_url", "api.openai.com", "http(s) URL"),
])
def test_a_bad_batch_teacher_names_the_field(field, value, message):
    from stepwise.pipeline.errors import JobSpecError

    with pytest.raises(JobSpecError) as info:
        _job({field: value})
    assert f"teacher.{field}:" in str(info.value) and message in str(info.value)


def test_build_backend_makes_a_batch_backend_caching_under_the_corpus(start_sim, tmp_path):
    sim = start_sim(*QUICK)
    spec = _job({"base_url": sim.base_url, "api_key_env": None, "poll_interval_s": POLL}).teacher
    backend = build_backend(spec, corpus=tmp_path / "corpus")
    try:
        assert isinstance(backend, OpenAIBatchBackend) and backend.backend == "openai_batch"
        assert backend.complete(make_requests(1))[0].text == GENERIC
    finally:
        backend.close()
        backend.cache.close()
    assert (tmp_path / "corpus" / "cache" / "requests.sqlite").exists()
