"""Watching jobs over real HTTP: the job view's rate, ETA, progress and last errors (from the job's heartbeat),
Prometheus /metrics, and large query results as a Parquet download."""

from __future__ import annotations

import io
import time

import pyarrow.parquet as pq
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.api.test_service import FAST, SLOW, job_body, sim_for


def samples(text: str) -> dict[str, list]:
    """Prometheus text -> {sample name: [(labels, value), ...]}, parsed by the reference parser."""
    out: dict[str, list] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def value(found: dict[str, list], name: str, **labels) -> float:
    matches = [v for lab, v in found.get(name, []) if all(lab.get(k) == w for k, w in labels.items())]
    assert len(matches) == 1, (name, labels, found.get(name))
    return matches[0]


def test_a_running_job_reports_its_rate_eta_and_progress_then_its_finished_run(server, start_sim, tmp_path):
    # 2 in flight at 0.25 s each: about 8 requests/s, 48 requests in about 6 s, in 2 shards of 24
    sim = sim_for(start_sim, tmp_path, 48, *SLOW)
    body = job_body(tmp_path, sim, "obs-rate", 48, shard_size=24, teacher={"max_concurrency": 2},
                    sampling={"seed": 31})
    assert server.post("/v1/jobs", body).status == 202

    deadline = time.monotonic() + 30
    while True:  # until the heartbeat has a rate: 10 requests done and more than a second measured
        view = server.get("/v1/jobs/obs-rate").json()
        run = view["run"]
        if view["status"] == "running" and run and run["requests_done"] >= 10 and run["requests_per_s"]:
            break
        assert view["status"] in {"starting", "running"} and time.monotonic() < deadline, view
        time.sleep(0.1)
    assert run["live"] is True and run["finished"] is False and run["requests_total"] == 48
    assert run["shards_total"] == 2 and run["shards_skipped"] == 0
    assert 2.0 < run["requests_per_s"] < 20.0, run  # the limit is 8/s
    left = 48 - run["requests_done"]
    assert view["eta_s"] == pytest.approx(left / run["requests_per_s"], rel=0.5), view
    # progress counts requests inside the unfinished shard, so it moves before the first part file
    assert view["shards_done"] / 2 <= view["progress"] < 1.0
    assert view["progress"] == pytest.approx(run["requests_done"] / 48, abs=0.15)

    view = server.wait("obs-rate", {"completed"})
    run = view["run"]
    assert run["finished"] is True and run["requests_done"] == 48 and run["shards_done"] == 2
    assert view["eta_s"] is None and view["progress"] == 1.0 and view["last_errors"] == []
    assert 2.0 < run["requests_per_s"] < 20.0  # the run's average once finished
    assert view["teacher_accuracy"] == 1.0  # the simulator answers right (--wrong-rate 0)


def test_failed_requests_show_as_last_errors_and_reject_reasons(server, start_sim, tmp_path):
    sim = sim_for(start_sim, tmp_path, 40, *FAST, "--faults", "error_500=0.3", "--seed", "5")
    body = job_body(tmp_path, sim, "obs-errors", 40, teacher={"max_attempts": 1}, sampling={"seed": 32},
                    max_error_rate=1.0)  # run to the end whatever fails
    assert server.post("/v1/jobs", body).status == 202
    view = server.wait("obs-errors", {"failed"})  # requests failed: the job says so, naming the URL
    assert sim.base_url in view["error"] and "teacher_unavailable" in view["error"]

    rows = server.post("/v1/query", {"sql": "SELECT example_id, sample_idx FROM records WHERE job_id = "
                                            "'obs-errors' AND reject_reason = 'teacher_unavailable'"}).json()["rows"]
    refused = {(r["example_id"], r["sample_idx"]) for r in rows}
    assert 3 <= len(refused) <= 25, refused  # 30 % of 40, give or take
    assert view["reject_reasons"]["teacher_unavailable"] == len(refused)
    assert sum(view["reject_reasons"].values()) == view["n_rejected"]
    errors = view["last_errors"]
    assert len(errors) == min(10, len(refused))
    assert all("500" in e["message"] and (e["example_id"], e["sample_idx"]) in refused for e in errors)
    assert [e["at"] for e in errors] == sorted(e["at"] for e in errors)  # newest last


def test_metrics_speak_prometheus_and_agree_with_the_job_view(server, start_sim, tmp_path):
    sim = sim_for(start_sim, tmp_path, 20, *FAST)
    body = job_body(tmp_path, sim, "obs-metrics", 20, sampling={"seed": 33},
                    cost={"input_per_mtok": 1.0, "output_per_mtok": 2.0})
    assert server.post("/v1/jobs", body).status == 202
    view = server.wait("obs-metrics", {"completed"})
    assert server.get("/v1/jobs/no-such-job").status == 404

    reply = server.get("/metrics")
    assert reply.status == 200 and reply.headers["content-type"].startswith("text/plain; version=0.0.4")
    found = samples(reply.body.decode())
    assert value(found, "stepwise_jobs", status="completed") >= 1
    assert value(found, "stepwise_job_info", job_id="obs-metrics", status="completed", task="arithmetic",
                 teacher_backend="openai", teacher_model="stepwise-sim") == 1
    assert value(found, "stepwise_job_records_total", job_id="obs-metrics", outcome="accepted") == view["n_accepted"]
    assert value(found, "stepwise_job_records_total", job_id="obs-metrics", outcome="rejected") == view["n_rejected"]
    assert value(found, "stepwise_job_tokens_total", job_id="obs-metrics", direction="in") == view["tokens_in"]
    assert value(found, "stepwise_job_cost_usd_total", job_id="obs-metrics") == pytest.approx(view["cost_usd"])
    assert value(found, "stepwise_job_progress_ratio", job_id="obs-metrics") == 1.0
    # HTTP traffic counts under route templates, never raw paths (job ids would multiply the series)
    routes = {lab["route"] for lab, _ in found["stepwise_http_requests_total"]}
    assert "/v1/jobs/{job_id}" in routes and not any("obs-metrics" in r for r in routes)
    assert value(found, "stepwise_http_requests_total", method="GET", route="/v1/jobs/{job_id}", status="404") >= 1
    assert value(found, "stepwise_http_request_duration_seconds_count", method="POST", route="/v1/jobs") >= 1


def test_a_large_query_result_downloads_as_parquet(server, start_sim, tmp_path):
    sim = sim_for(start_sim, tmp_path, 30, *FAST)
    body = job_body(tmp_path, sim, "obs-parquet", 30, sampling={"seed": 34})
    assert server.post("/v1/jobs", body).status == 202
    server.wait("obs-parquet", {"completed"})
    sql = "SELECT example_id, sample_idx, label, rationale FROM records WHERE job_id = 'obs-parquet' ORDER BY 1, 2"

    reply = server.post("/v1/query/parquet", {"sql": sql})
    assert reply.status == 200, reply.body
    assert reply.headers["content-type"] == "application/vnd.apache.parquet"
    assert reply.headers["x-stepwise-rows"] == "30" and reply.headers["x-stepwise-truncated"] == "false"
    table = pq.read_table(io.BytesIO(reply.body))
    assert table.column_names == ["example_id", "sample_idx", "label", "rationale"]
    as_json = server.post("/v1/query", {"sql": sql}).json()["rows"]
    assert table.to_pylist() == as_json

    # beyond what JSON answers may hold (100,000 rows), in batches, capped by max_rows
    reply = server.post("/v1/query/parquet", {"sql": "SELECT i, i * 2 AS j FROM range(250000) t(i)",
                                              "max_rows": 200_000})
    assert reply.status == 200 and reply.headers["x-stepwise-truncated"] == "true"
    table = pq.read_table(io.BytesIO(reply.body))
    assert table.num_rows == int(reply.headers["x-stepwise-rows"]) == 200_000
    assert table.column("j").to_pylist()[-1] == 2 * 199_999


@pytest.mark.parametrize("sql", [
    "SELECT * FROM read_csv('/etc/passwd')",
    "COPY (SELECT 1) TO '/tmp/stepwise-api-escape.parquet'",
    "SELECT 1; SELECT 2",
])
def test_the_parquet_download_keeps_the_sandbox(server, sql):
    reply = server.post("/v1/query/parquet", {"sql": sql})
    assert reply.status == 400, reply.body
    assert reply.json()["error"]["field"] == "sql"


@pytest.mark.parametrize("raw,field", [(b'{"sql": "SELECT 1", "max_rows": 0}', "max_rows"),
                                       (b'{"sql": "SELECT 1", "timeout_s": -1}', "timeout_s"),
                                       (b'{"max_rows": 5}', "sql")])
def test_a_bad_parquet_download_request_names_the_field(server, raw, field):
    reply = server.call("POST", "/v1/query/parquet", raw=raw)
    assert reply.status == 422 and reply.json()["error"]["field"] == field, reply.body
