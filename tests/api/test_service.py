"""The REST service over real HTTP: uvicorn on loopback (`stepwise serve` in a subprocess), jobs in their own
processes against the real simulator, the corpus read back through the same endpoints a client uses."""

from __future__ import annotations

import io
import os
import signal
import zipfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.api.conftest import TOKEN, open_settings, start_server, stop, stop_jobs
from tests.pipeline.teachers.test_live_jobs import problems
from tests.conftest import write_jsonl

FAST = ("--latency", "0.05", "--wrong-rate", "0")
SLOW = ("--latency", "0.25", "--wrong-rate", "0")


def job_body(folder, sim, job_id: str | None, n: int, **fields) -> dict:
    """A live job over n problems (the same file feeds the simulator's task-aware answers)."""
    folder.mkdir(parents=True, exist_ok=True)
    data = write_jsonl(folder / "problems.jsonl", problems(n))
    body = {
        "dataset": {"path": str(data), "id_field": "id", "question_field": "question", "answer_field": "answer"},
        "task": "arithmetic",
        "prompt": "few_shot_cot",
        "teacher": {"backend": "openai", "model": "stepwise-sim", "base_url": sim.base_url if sim else
                    "http://127.0.0.1:9/v1", "api_key_env": None, "max_concurrency": 8, "timeout_s": 10},
        "sampling": {"n": 1, "temperature": 0.7, "max_tokens": 128},
        "shard_size": 10,
    }
    if job_id is not None:
        body["job_id"] = job_id
    for key, value in fields.items():
        body[key] = {**body[key], **value} if isinstance(value, dict) and isinstance(body.get(key), dict) else value
    return body


def sim_for(start_sim, folder, n: int, *flags: str):
    """The simulator, answering from the same problems file (so its answers are task-aware)."""
    folder.mkdir(parents=True, exist_ok=True)
    write_jsonl(folder / "problems.jsonl", problems(n))
    return start_sim("--dataset", str(folder / "problems.jsonl"), *flags)


def no_duplicates(server, job_id: str, n: int) -> None:
    reply = server.post("/v1/query", {"sql": f"SELECT count(*) AS n, count(DISTINCT example_id || '/' || sample_idx)"
                                             f" AS distinct_n FROM records WHERE job_id = '{job_id}'"})
    assert reply.status == 200, reply.body
    assert reply.json()["rows"] == [{"n": n, "distinct_n": n}]


# ── (a) submit, watch, query, page, export ─────────────────────────────────────────────────────────────────────


def test_a_job_submitted_over_http_completes_and_is_queried_paged_and_exported(server, start_sim, tmp_path):
    sim = sim_for(start_sim, tmp_path, 30, *FAST)
    body = job_body(tmp_path, sim, "rest-a", 30, cost={"input_per_mtok": 0.5, "output_per_mtok": 1.5},
                    sampling={"seed": 1})
    reply = server.post("/v1/jobs", body)
    assert reply.status == 202, reply.body
    assert reply.json()["job_id"] == "rest-a"

    view = server.wait("rest-a", {"completed"})
    assert view["n_records"] == 30 and view["n_examples"] == 30 and view["progress"] == 1.0
    assert view["n_shards"] == view["shards_done"] == 3
    assert view["n_accepted"] + view["n_rejected"] == 30 and view["n_accepted"] >= 25
    assert view["tokens_in"] > 0 and view["tokens_out"] > 0 and view["cost_usd"] > 0
    assert view["teacher_model"] == "stepwise-sim" and view["error"] is None
    assert sim.stats()["completed_more_than_once"] == 0

    listed = server.get("/v1/jobs?status=completed&limit=10").json()
    assert "rest-a" in [j["job_id"] for j in listed["items"]]
    assert server.get("/v1/jobs?status=failed").json()["items"] == []

    reply = server.post("/v1/query", {"sql": "SELECT accepted, count(*) AS n FROM records "
                                             "WHERE job_id = 'rest-a' GROUP BY accepted ORDER BY accepted"})
    assert reply.status == 200, reply.body
    counts = {r["accepted"]: r["n"] for r in reply.json()["rows"]}
    assert counts.get(True, 0) == view["n_accepted"] and sum(counts.values()) == 30
    capped = server.post("/v1/query", {"sql": "SELECT * FROM records", "max_rows": 7}).json()
    assert len(capped["rows"]) == 7 and capped["truncated"] is True and "rationale" in capped["columns"]

    page = server.get("/v1/jobs/rest-a/records?accepted=true&limit=4&offset=2").json()
    assert page["total"] == view["n_accepted"] and len(page["items"]) == 4
    assert all(r["accepted"] is True and r["job_id"] == "rest-a" for r in page["items"])
    everything = server.get("/v1/jobs/rest-a/records?limit=1000").json()["items"]
    assert [r["example_id"] for r in everything] == sorted(p["id"] for p in problems(30))
    assert everything[2:6] == server.get("/v1/jobs/rest-a/records?limit=4&offset=2").json()["items"]

    reply = server.get("/v1/jobs/rest-a/export?format=parquet")
    assert reply.status == 200 and reply.headers["content-type"] == "application/vnd.apache.parquet"
    table = pq.read_table(io.BytesIO(reply.body))
    assert table.num_rows == view["n_accepted"]
    assert set(table.column("example_id").to_pylist()) <= {p["id"] for p in problems(30)}
    chat = server.get("/v1/jobs/rest-a/export?format=chat")
    assert chat.status == 200 and len(chat.body.decode().splitlines()) == view["n_accepted"]
    hub = server.get("/v1/jobs/rest-a/export?format=hf")  # a folder format: its folder, zipped
    assert hub.status == 200 and hub.headers["content-type"] == "application/zip"
    assert 'filename="rest-a.hf.zip"' in hub.headers["content-disposition"]
    with zipfile.ZipFile(io.BytesIO(hub.body)) as archive:
        names = archive.namelist()
        assert "README.md" in names and len(names) == len(set(names))
        parts = [n for n in names if n.startswith("data/") and n.endswith(".parquet")]
        assert parts and sum(pq.read_table(io.BytesIO(archive.read(n))).num_rows for n in parts) == view["n_accepted"]
        assert "rest-a" in archive.read("README.md").decode()

    again = server.post("/v1/jobs", body)  # the id is taken: resume it instead
    assert again.status == 409 and again.json()["error"]["type"] == "JobConflictError"
    assert server.post("/v1/jobs/rest-a/resume").status == 409  # completed: nothing to resume
    assert server.post("/v1/jobs/rest-a/cancel").status == 409  # not running


# ── (b) auth ───────────────────────────────────────────────────────────────────────────────────────────────────


@pytest.mark.parametrize("method,path", [("GET", "/v1/jobs"), ("GET", "/v1/jobs/x"), ("POST", "/v1/jobs"),
                                         ("POST", "/v1/jobs/x/cancel"), ("POST", "/v1/jobs/x/resume"),
                                         ("GET", "/v1/jobs/x/records"), ("GET", "/v1/jobs/x/export"),
                                         ("POST", "/v1/query"), ("POST", "/v1/query/parquet"),
                                         ("GET", "/metrics")])
@pytest.mark.parametrize("token", [None, "wrong-token", TOKEN + "x", ""])
def test_every_endpoint_but_healthz_needs_the_token(server, method, path, token):
    reply = server.call(method, path, {} if method == "POST" else None, token=token)
    assert reply.status == 401, reply.body
    assert reply.json()["error"]["type"] == "AuthError" and TOKEN not in reply.body.decode()
    assert reply.headers.get("www-authenticate", reply.headers.get("WWW-Authenticate")) == "Bearer"


def test_without_the_token_a_malformed_request_learns_nothing_but_401(server):
    reply = server.call("POST", "/v1/jobs", raw=b"{not json", token=None)
    assert reply.status == 401 and reply.json()["error"]["type"] == "AuthError"
    assert server.get("/v1/nowhere?x=1", token=None).status == 401


def test_a_wrong_method_names_every_method_the_path_has(server):
    reply = server.call("DELETE", "/v1/jobs")
    assert reply.status == 405 and reply.headers["allow"] == "GET, POST"
    assert reply.json()["error"]["type"] == "http_error"


def test_healthz_and_the_openapi_schema_need_no_token(server):
    assert server.get("/healthz", token=None).json() == {"status": "ok"}
    schema = server.get("/openapi.json", token=None).json()
    assert {"/v1/jobs", "/v1/jobs/{job_id}", "/v1/jobs/{job_id}/cancel", "/v1/jobs/{job_id}/resume",
            "/v1/jobs/{job_id}/records", "/v1/jobs/{job_id}/export", "/v1/query", "/v1/query/parquet", "/metrics",
            "/healthz"} <= set(schema["paths"])
    assert "JobSpec" in schema["components"]["schemas"]  # POST /v1/jobs takes the job-file schema
    assert schema["paths"]["/v1/jobs/{job_id}"]["get"]["responses"]["404"]["content"]["application/json"][
        "schema"] == {"$ref": "#/components/schemas/ErrorBody"}


# ── (c) bad input: 4xx naming the field, never a 500 ──────────────────────────────────────────────────────────


@pytest.mark.parametrize("change,field", [
    ({"teacher": {"backend": "openai", "base_url": "http://127.0.0.1:9/v1"}}, "teacher.model"),
    ({"teacher": {"backend": "nope", "model": "m"}}, "teacher.backend"),
    ({"sampling": {"n": 0}}, "sampling.n"),
    ({"dataset": {"path": "/no/such/problems.jsonl"}}, "dataset.path"),
    ({"job_id": "../../etc"}, "job_id"),
    ({"surprise": 1}, "surprise"),
    ({"task": "not-a-kind"}, "task.kind"),
])
def test_a_bad_job_body_is_a_422_naming_the_field(server, tmp_path, change, field):
    body = job_body(tmp_path, None, "bad", 3)
    body.update(change)
    reply = server.post("/v1/jobs", body)
    assert reply.status == 422, reply.body
    error = reply.json()["error"]
    assert error["field"] == field, error
    assert field.split(".")[-1] in error["message"]
    assert not (server.corpus / "jobs" / "bad.spec.json").exists()


@pytest.mark.parametrize("method,path,raw,status,field", [
    ("POST", "/v1/jobs", b"{not json", 422, None),
    ("POST", "/v1/jobs", b"[1, 2]", 422, None),
    ("GET", "/v1/jobs?limit=0", None, 422, "query.limit"),
    ("GET", "/v1/jobs?status=sleeping", None, 422, "query.status"),
    ("GET", "/v1/jobs/no-such-job", None, 404, None),
    ("GET", "/v1/jobs/no-such-job/records", None, 404, None),
    ("GET", "/v1/jobs/no-such-job/export", None, 404, None),
    ("POST", "/v1/jobs/no-such-job/cancel", None, 404, None),
    ("POST", "/v1/jobs/no-such-job/resume", None, 404, None),
    ("GET", "/v1/jobs/bad%20id%27", None, 422, "path.job_id"),
    ("GET", "/v1/jobs/x/export?format=csv", None, 422, "query.format"),
    ("GET", "/v1/nowhere", None, 404, None),
    ("POST", "/v1/query", b'{"sql": "SELECT 1", "max_rows": 0}', 422, "max_rows"),
    ("POST", "/v1/query", b'{"sql": ""}', 422, "sql"),
    ("POST", "/v1/query", b'{"sql": "\xff\xfe"}', 422, None),  # not UTF-8
    ("GET", "/v1/jobs/x/records?acepted=true", None, 422, "query.acepted"),  # a typo is never ignored
    ("GET", "/v1/jobs?limit=5&page=2", None, 422, "query.page"),
    ("GET", "/healthz?verbose=1", None, 422, "query.verbose"),
])
def test_bad_requests_get_a_4xx_error_body(server, method, path, raw, status, field):
    reply = server.call(method, path, raw=raw)
    assert reply.status == status, reply.body
    error = reply.json()["error"]
    assert error["type"] and error["message"]
    if field:
        assert error["field"] == field, error


# Queries that try to leave the sandbox (a 400, the corpus byte-identical): tests/api/test_query_sandbox.py


def test_query_values_that_json_cannot_hold_still_serialise(server):
    reply = server.post("/v1/query", {"sql": "SELECT 'nan'::DOUBLE AS a, 'inf'::DOUBLE AS b, '\\xFF'::BLOB AS c, "
                                             "DATE '2024-01-02' AS d, [1, 2] AS e, {'k': 1.5} AS f"})
    assert reply.status == 200, reply.body
    assert reply.json()["rows"] == [{"a": None, "b": None, "c": "ff", "d": "2024-01-02", "e": [1, 2],
                                     "f": {"k": 1.5}}]


# ── (d) cancel, resume, and a job whose process died ──────────────────────────────────────────────────────────


def test_a_running_job_is_cancelled_and_resumed_with_nothing_lost_or_duplicated(server, start_sim, tmp_path):
    sim = sim_for(start_sim, tmp_path, 40, *SLOW)
    # each live test its own seed: the corpus's request cache would answer another test's requests at once
    body = job_body(tmp_path, sim, "rest-cancel", 40, shard_size=4, teacher={"max_concurrency": 2},
                    sampling={"seed": 21})
    assert server.post("/v1/jobs", body).status == 202
    server.wait("rest-cancel", {"running"}, shards_done=1)

    reply = server.post("/v1/jobs/rest-cancel/cancel")
    assert reply.status == 202 and reply.json() == {"job_id": "rest-cancel", "action": "cancel"}
    view = server.wait("rest-cancel", {"cancelled"}, timeout_s=15)
    assert 0 < view["n_records"] < 40 and view["shards_done"] < view["n_shards"] == 10
    assert server.post("/v1/jobs/rest-cancel/cancel").status == 409

    assert server.post("/v1/jobs/rest-cancel/resume").status == 202
    assert server.post("/v1/jobs/rest-cancel/resume").json()["error"]["type"] == "JobStateError"  # running now
    view = server.wait("rest-cancel", {"completed"})
    assert view["n_records"] == 40
    no_duplicates(server, "rest-cancel", 40)
    # at most the requests in flight when it stopped are asked again (as in the CLI's cancel tests)
    assert sim.stats()["completed_more_than_once"] <= 2


def test_a_job_whose_process_died_is_interrupted_and_resumes(server, start_sim, tmp_path):
    sim = sim_for(start_sim, tmp_path, 40, *SLOW)
    body = job_body(tmp_path, sim, "rest-killed", 40, shard_size=4, teacher={"max_concurrency": 2},
                    sampling={"seed": 11})
    assert server.post("/v1/jobs", body).status == 202
    server.wait("rest-killed", {"running"}, shards_done=1)

    pid = int((server.corpus / "jobs" / "rest-killed.pid").read_text())
    os.killpg(pid, signal.SIGKILL)  # the job runs in its own session: the machine "dies" under it
    view = server.wait("rest-killed", {"interrupted"}, timeout_s=10)
    assert view["error"] and view["shards_done"] < 10
    assert "rest-killed" in [j["job_id"] for j in server.get("/v1/jobs?status=interrupted").json()["items"]]
    assert server.post("/v1/jobs/rest-killed/cancel").status == 409  # nothing runs to cancel

    assert server.post("/v1/jobs/rest-killed/resume").status == 202
    view = server.wait("rest-killed", {"completed"})
    assert view["n_records"] == 40
    no_duplicates(server, "rest-killed", 40)
    assert sim.stats()["completed_more_than_once"] <= 2  # paid once: the request cache kept what arrived


def test_a_job_outlives_the_api_process_and_a_new_server_reports_it(start_sim, tmp_path):
    sim = sim_for(start_sim, tmp_path, 40, *SLOW)
    corpus = tmp_path / "corpus"
    first = start_server(corpus, tmp_path / "first.log", env=open_settings(tmp_path, tmp_path))
    try:
        body = job_body(tmp_path, sim, "rest-outlives", 40, shard_size=4, teacher={"max_concurrency": 2})
        assert first.post("/v1/jobs", body).status == 202
        first.wait("rest-outlives", {"running"}, shards_done=1)
        first.proc.send_signal(signal.SIGKILL)  # the API dies; the job, in its own session, does not
        first.proc.wait(timeout=10)

        second = start_server(corpus, tmp_path / "second.log", env=open_settings(tmp_path, tmp_path))
        try:
            view = second.get("/v1/jobs/rest-outlives").json()
            assert view["status"] in {"running", "completed"}, view  # not interrupted: its process lives
            view = second.wait("rest-outlives", {"completed"})
            assert view["n_records"] == 40
            no_duplicates(second, "rest-outlives", 40)
            assert sim.stats()["completed_more_than_once"] == 0
        finally:
            stop(second.proc)
    finally:
        stop(first.proc)
        stop_jobs(corpus)


def test_without_a_token_the_server_listens_on_loopback_only_and_says_so(tmp_path):
    srv = start_server(tmp_path / "corpus", tmp_path / "server.log", None, "--host", "0.0.0.0")
    try:
        assert srv.get("/v1/jobs", token=None).json()["total"] == 0  # no auth configured: local callers get in
        log = " ".join(srv.log.read_text().split())
        assert "--host 0.0.0.0 ignored" in log and "listens on 127.0.0.1 only" in log
        port = int(srv.url.rsplit(":", 1)[1])
        listening = [line.split()[1] for line in Path("/proc/net/tcp").read_text().splitlines()[1:]
                     if line.split()[3] == "0A" and line.split()[1].endswith(f":{port:04X}")]
        assert listening == [f"0100007F:{port:04X}"]  # 127.0.0.1 only, not 0.0.0.0
    finally:
        stop(srv.proc)


def test_a_job_that_fails_before_it_starts_reports_failed_with_its_log(server, tmp_path):
    bad = tmp_path / "problems.parquet"
    bad.write_text("not parquet at all")
    body = job_body(tmp_path, None, "rest-broken", 3, dataset={"path": str(bad), "format": "parquet"})
    assert server.post("/v1/jobs", body).status == 202
    view = server.wait("rest-broken", {"failed"}, timeout_s=20)
    error = "".join(view["error"].split())  # the log's own line breaks aside
    assert "problems.parquet" in error and "Parquetmagicbytesnotfound" in error and view["n_records"] == 0


def test_the_api_package_never_loads_ray_or_vllm():
    import subprocess
    import sys

    code = ("import sys, stepwise.api.app; from stepwise.api.app import create_app; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('ray', 'vllm', 'torch')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
