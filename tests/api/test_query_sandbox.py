"""The query sandbox over real HTTP (`POST /v1/query`, `POST /v1/query/parquet` on `stepwise serve`) and through
the real CLI (`stepwise query`): the same attacks as tests/storage/test_query_sandbox.py, each leaving the corpus
and everything around it byte-identical; refusals are a 400 (`QueryRefusedError`) or exit code 1; results stop
at the byte cap and say so."""

from __future__ import annotations

import io
from collections.abc import Iterator

import pyarrow.parquet as pq
import pytest

from tests.api.conftest import ROOT, Server, start_server, stop
from tests.conftest import stepwise
from tests.storage.test_query_sandbox import ALLOWED, ATTACKS, REFUSED, SECRETS, Site, make_site, snapshot

# where a relative path in SQL would land: the server's and the CLI's working directories
_RELATIVE = ("escape.csv", "escape.parquet", ":memory:", ":memory:.wal", ":memory:.wal.recovery")


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Site]]:
    """A server over a real corpus; its log lies outside the snapshotted folder."""
    site = make_site(tmp_path_factory.mktemp("sandbox-site"))
    srv = start_server(site.corpus, tmp_path_factory.mktemp("sandbox-log") / "server.log")
    yield srv, site
    stop(srv.proc)


def nothing_relative_written(*folders) -> bool:
    return not any((folder / name).exists() for folder in folders for name in _RELATIVE)


@pytest.mark.parametrize("endpoint", ["/v1/query", "/v1/query/parquet"])
@pytest.mark.parametrize(("sql", "outcome"), [pytest.param(s, o, id=i) for i, s, o in ATTACKS])
def test_no_query_over_http_changes_a_file(api, endpoint, sql, outcome):
    server, site = api
    before = snapshot(site.top)
    reply = server.post(endpoint, {"sql": site.fill(sql), "timeout_s": 20})
    assert snapshot(site.top) == before, f"the query changed a file: {sql}"
    assert nothing_relative_written(ROOT)
    if outcome == ALLOWED:
        assert reply.status == 200, reply.body
        return
    assert reply.status == 400, reply.body
    error = reply.json()["error"]
    assert error["type"] == "QueryRefusedError" if outcome == REFUSED else error["type"] in {"QueryError",
                                                                                            "QueryRefusedError"}
    assert error["field"] == "sql" and error["message"]
    assert not any(s in reply.body.decode() for s in SECRETS)


def test_allowed_queries_answer_over_http(api):
    server, _ = api
    reply = server.post("/v1/query", {"sql": "SELECT job_id, count(*) AS n FROM records GROUP BY 1 ORDER BY 1"})
    assert reply.status == 200, reply.body
    assert reply.json() == {"columns": ["job_id", "n"], "rows": [{"job_id": "job-a", "n": 3},
                                                               {"job_id": "job-b", "n": 1}],
                            "truncated": False, "truncated_by": None}
    reply = server.post("/v1/query/parquet", {"sql": "SELECT example_id FROM records ORDER BY 1"})
    assert reply.status == 200 and reply.headers["x-stepwise-truncated"] == "false"
    assert "x-stepwise-truncated-by" not in reply.headers
    assert pq.read_table(io.BytesIO(reply.body)).column(0).to_pylist() == ["e0", "e1", "e2", "x1"]


WIDE = "SELECT i, repeat('x', 1000) AS s FROM range(100000) t(i)"  # about 100 MB whole


def test_the_byte_cap_over_http(api):
    server, _ = api
    reply = server.post("/v1/query", {"sql": WIDE, "max_rows": 100_000, "max_bytes": 100_000})
    assert reply.status == 200, reply.body
    body = reply.json()
    assert body["truncated"] is True and body["truncated_by"] == "bytes"
    assert 50 < len(body["rows"]) < 100 and [r["i"] for r in body["rows"]] == list(range(len(body["rows"])))
    rows = server.post("/v1/query", {"sql": WIDE, "max_rows": 5}).json()
    assert (rows["truncated"], rows["truncated_by"], len(rows["rows"])) == (True, "rows", 5)
    default = server.post("/v1/query", {"sql": WIDE, "max_rows": 100_000}).json()  # 32 MiB by default
    assert default["truncated_by"] == "bytes" and 25_000 < len(default["rows"]) < 40_000


def test_the_byte_cap_of_a_download(api):
    server, _ = api
    reply = server.post("/v1/query/parquet", {"sql": WIDE, "max_bytes": 1 << 20})
    assert reply.status == 200, reply.body
    assert reply.headers["x-stepwise-truncated"] == "true" and reply.headers["x-stepwise-truncated-by"] == "bytes"
    table = pq.read_table(io.BytesIO(reply.body))
    assert table.num_rows == int(reply.headers["x-stepwise-rows"]) and 500 < table.num_rows < 1100
    reply = server.post("/v1/query/parquet", {"sql": WIDE, "max_rows": 10})
    assert reply.headers["x-stepwise-truncated-by"] == "rows" and reply.headers["x-stepwise-rows"] == "10"


@pytest.mark.parametrize(("endpoint", "max_bytes"), [("/v1/query", 0), ("/v1/query", (256 << 20) + 1),
                                                     ("/v1/query/parquet", (8 << 30) + 1)])
def test_byte_caps_out_of_range_are_a_422(api, endpoint, max_bytes):
    server, _ = api
    reply = server.post(endpoint, {"sql": "SELECT 1", "max_bytes": max_bytes})
    assert reply.status == 422 and reply.json()["error"]["field"] == "max_bytes", reply.body


# ── the CLI: a sample of the same attacks (a process each) ───────────────────────────────────────────────────────
CLI_ATTACKS = ["cte_copy", "cte_copy_lower", "cte_copy_overwrite_folder", "cte_copy_relative", "copy_memory_wal",
               "read_csv_secret", "read_parquet_part", "attach", "two_statements", "comment_hides_copy"]


@pytest.fixture()
def cli_site(tmp_path) -> Site:
    return make_site(tmp_path)


@pytest.mark.parametrize("name", CLI_ATTACKS)
def test_no_query_through_the_cli_changes_a_file(cli_site, name):
    sql = cli_site.fill(next(s for i, s, _ in ATTACKS if i == name))
    before = snapshot(cli_site.top)
    proc = stepwise("query", "--corpus", str(cli_site.corpus), "--format", "json", sql, cwd=cli_site.cwd)
    assert snapshot(cli_site.top) == before
    assert proc.returncode == 1 and proc.stdout == "" and "Traceback" not in proc.stderr
    assert "error" in proc.stderr and not any(s in proc.stderr for s in SECRETS)


def test_the_cli_warns_when_a_result_is_truncated(cli_site):
    proc = stepwise("query", "--corpus", str(cli_site.corpus), "--format", "jsonl", "--max-bytes", "20000", WIDE,
                    cwd=cli_site.cwd)
    assert proc.returncode == 0, proc.stderr
    assert 10 < len(proc.stdout.splitlines()) < 20
    assert "truncated at --max-bytes 20,000" in " ".join(proc.stderr.split())
    proc = stepwise("query", "--corpus", str(cli_site.corpus), "--format", "json", "SELECT count(*) AS n FROM records",
                    cwd=cli_site.cwd)
    assert proc.returncode == 0 and proc.stdout.strip() == '[{"n": 4}]' and "truncated" not in proc.stderr
