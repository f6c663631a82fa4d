"""What a token holder cannot do over REST, tried for real against `stepwise serve` on loopback.

A token holder may run jobs. It may not read the server's files (every path of a job must resolve, symlinks and
`..` included, inside the data roots), learn which paths exist outside them, point the server's keys at a URL of
its choice (teachers are the operator's profiles; a URL of the job's own never gets a key), name a Ray cluster,
use ids that are not plain names, or slip a second value of a key into a job body. Each class is tried with
several attacks; the server's own key and a marker in the secret file must appear in no answer, and a listener
standing in for an attacker's host counts what reached it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.api.conftest import Server, open_settings, start_server, stop, stop_jobs
from tests.conftest import Listener, start_listener, stepwise, write_jsonl
from tests.pipeline.teachers.test_live_jobs import problems

SECRET = "SECRET-MARKER-5b2f"  # in files outside the data roots: no answer may ever hold it
SERVER_KEY = "sk-server-key-SECRET-91d0"  # the server's own provider key, in its environment only
KEY_ENV = "STEPWISE_TEST_SERVER_KEY"


@dataclass
class Locked:
    """A server with one data root, a teacher profile for a simulator on a known port, and no free URLs."""

    server: Server
    root: Path
    outside: Path
    sim_port: int
    attacker: Listener


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def locked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Locked]:
    folder = tmp_path_factory.mktemp("locked")
    root, outside = folder / "data", folder / "outside"
    root.mkdir()
    outside.mkdir()
    write_jsonl(root / "problems.jsonl", problems(6))
    write_jsonl(root / "answers.jsonl", [{"example_id": p["id"], "text": f"Counting. So the answer is {p['answer']}."}
                                         for p in problems(6)])
    (outside / "secret.csv").write_text(f"id,question,answer\n1,{SECRET} what is 2+2?,4\n", encoding="utf-8")
    (outside / "secret.yaml").write_text(f"id: {SECRET}\nuser: '{{input}}'\n", encoding="utf-8")
    (root / "passwd.csv").symlink_to("/etc/passwd")
    (root / "escape").symlink_to(outside, target_is_directory=True)
    (root / "secret-link.csv").symlink_to(outside / "secret.csv")
    sim_port = _free_port()
    teachers = folder / "teachers.yaml"
    teachers.write_text(json.dumps({"profiles": {"sim": {
        "backend": "openai", "base_url": f"http://127.0.0.1:{sim_port}/v1", "api_key_env": KEY_ENV,
        "models": ["stepwise-*"], "max_concurrency": 8, "request_id_headers": True}}}), encoding="utf-8")
    attacker, stop_attacker = start_listener()
    srv = start_server(folder / "corpus", folder / "server.log",
                       env={"STEPWISE_DATA_DIRS": str(root), "STEPWISE_TEACHERS": str(teachers), KEY_ENV: SERVER_KEY,
                            "STEPWISE_MAX_UPLOAD_BYTES": "4096"})
    yield Locked(srv, root, outside, sim_port, attacker)
    stop(srv.proc)
    stop_jobs(folder / "corpus")
    stop_attacker()
    assert attacker.seen == []  # no job of this module ever reached the attacker's host
    log = (folder / "server.log").read_text(errors="replace")
    assert SERVER_KEY not in log and SECRET not in log


def replay_job(job_id: str, **changes) -> dict:
    body = {"job_id": job_id, "task": "arithmetic", "prompt": "few_shot_cot",
            "dataset": {"path": "problems.jsonl", "id_field": "id", "question_field": "question",
                        "answer_field": "answer"},
            "teacher": {"backend": "replay", "path": "answers.jsonl"}, "shard_size": 3}
    for key, value in changes.items():
        body[key] = {**body[key], **value} if isinstance(value, dict) and isinstance(body.get(key), dict) else value
    return body


def live_job(job_id: str, **teacher) -> dict:
    body = replay_job(job_id)
    body["teacher"] = {"backend": "openai", "model": "stepwise-sim", **teacher}
    return body


def refused(server: Server, body: dict, field: str) -> str:
    """Submit `body`; it must be a 422 naming `field`, hold no secret, and leave no job behind."""
    reply = server.post("/v1/jobs", body)
    assert reply.status == 422, reply.body
    error = reply.json()["error"]
    assert error["field"] == field, error
    assert SECRET not in reply.body.decode() and SERVER_KEY not in reply.body.decode()
    assert "root:" not in error["message"]  # nothing of /etc/passwd either
    assert not (server.corpus / "jobs" / f"{body['job_id']}.spec.json").exists()
    return error["message"]


# ── files: only inside the data roots, whatever the path says ──────────────────────────────────────────────────


def _outside_paths(locked: Locked) -> list[str]:
    return ["/etc/passwd", "/etc/shadow", str(locked.outside / "secret.csv"), "../outside/secret.csv",
            f"{locked.root}/../outside/secret.csv", "passwd.csv", "secret-link.csv", "escape/secret.csv",
            f"{locked.root}/escape/secret.csv", "/proc/self/environ", str(locked.outside / "nope.csv"),
            "/nonexistent/nope.csv", "../../../../../../etc/passwd", str(locked.root) + "-sibling/x.csv"]


@pytest.mark.parametrize("field", ["dataset.path", "prompt.path", "teacher.path"])
def test_no_rest_job_reads_a_file_outside_the_data_roots(locked, field):
    messages = []
    for i, path in enumerate(_outside_paths(locked)):
        section, key = field.split(".")
        body = replay_job(f"outside-{section}-{i}", **{section: {key: path}})
        if field == "prompt.path":
            body["prompt"] = {"id": "mine", "path": path}
        messages.append(refused(locked.server, body, field).replace(repr(path), "PATH"))
    # the same answer whether or not the file exists: the service tells nobody what lies outside its roots
    assert len(set(messages)) == 1, set(messages)
    assert "data roots" in messages[0]


def test_files_inside_a_root_are_found_by_relative_path_not_the_servers_folder(locked):
    reply = locked.server.post("/v1/jobs", replay_job("inside"))
    assert reply.status == 202, reply.body
    view = locked.server.wait("inside", {"completed"})
    assert view["n_records"] == 6 and view["n_accepted"] == 6
    spec = json.loads((locked.server.corpus / "jobs" / "inside.spec.json").read_text())
    assert spec["dataset"]["path"] == str((locked.root / "problems.jsonl").resolve())  # the real path, resolved


def test_a_missing_file_inside_a_root_names_the_field(locked):
    message = refused(locked.server, replay_job("missing", dataset={"path": "no-such.jsonl"}), "dataset.path")
    assert "no such file" in message


def test_the_job_process_checks_the_data_roots_again(tmp_path, locked):
    # the service starts `stepwise run --data-dir ROOT`: a spec naming a file elsewhere never opens it
    job = tmp_path / "job.json"
    job.write_text(json.dumps(replay_job("cli-confined", dataset={"path": str(locked.outside / "secret.csv")},
                                         teacher={"path": str(locked.root / "answers.jsonl")})))
    proc = stepwise("run", str(job), "--corpus", str(tmp_path / "corpus"), "--data-dir", str(locked.root))
    assert proc.returncode == 2, proc.stderr
    assert "dataset.path" in proc.stderr and SECRET not in proc.stderr + proc.stdout
    assert not (tmp_path / "corpus" / "records").exists()


# ── teachers: the operator's profiles; the server's key never goes anywhere else ───────────────────────────────


@pytest.mark.parametrize("teacher,field", [
    ({"base_url": "ATTACKER", "api_key_env": KEY_ENV}, "teacher.profile"),      # no profile: refused outright
    ({"base_url": "ATTACKER", "api_key_env": None}, "teacher.profile"),         # not even keyless, here
    ({"profile": "sim", "base_url": "ATTACKER"}, "teacher.base_url"),           # a profile's URL is fixed
    ({"profile": "sim", "api_key_env": "HOME"}, "teacher.api_key_env"),         # and so is its key
    ({"profile": "sim", "cache_namespace": "other"}, "teacher.cache_namespace"),
    ({"profile": "nope"}, "teacher.profile"),
    ({"profile": "sim", "model": "gpt-4o"}, "teacher.model"),                   # not on the profile's list
    ({"profile": "sim", "max_concurrency": 9}, "teacher.max_concurrency"),      # above the profile's ceiling
    ({"profile": "sim", "backend": "openai_batch"}, "teacher.backend"),
])
def test_a_job_cannot_point_the_servers_key_anywhere_else(locked, teacher, field):
    teacher = {k: locked.attacker.base_url if v == "ATTACKER" else v for k, v in teacher.items()}
    refused(locked.server, live_job(f"key-{field.split('.')[-1]}", **teacher), field)


@pytest.mark.parametrize("body,field", [
    (replay_job("ray-elsewhere", executor={"kind": "ray", "address": "ray://attacker.invalid:10001"}),
     "executor.address"),
    ({**replay_job("vllm"), "teacher": {"backend": "vllm", "model": "/etc"}}, "teacher.profile"),
])
def test_a_job_cannot_name_a_cluster_or_an_engine_of_its_own(locked, body, field):
    refused(locked.server, body, field)


def test_a_profile_job_runs_with_the_servers_key_at_the_declared_url(locked, start_sim):
    sim = start_sim("--port", str(locked.sim_port), "--latency", "0.02", "--wrong-rate", "0",
                    "--api-key-env", "SIM_KEY", env={"SIM_KEY": SERVER_KEY})  # the teacher wants the server's key
    reply = locked.server.post("/v1/jobs", live_job("profiled", profile="sim", max_concurrency=4))
    assert reply.status == 202, reply.body
    view = locked.server.wait("profiled", {"completed"})
    assert view["n_records"] == 6 and sim.stats()["statuses"] == {"200": 6}
    spec = json.loads((locked.server.corpus / "jobs" / "profiled.spec.json").read_text())
    assert spec["teacher"]["base_url"] == f"http://127.0.0.1:{locked.sim_port}/v1"
    assert spec["teacher"]["max_concurrency"] == 4 and SERVER_KEY not in json.dumps(spec)


def test_a_free_url_never_gets_a_server_key(tmp_path, start_sim):
    listener, stop_listener = start_listener()
    teachers = tmp_path / "teachers.yaml"
    teachers.write_text("allow_free_urls: true\n")
    write_jsonl(tmp_path / "problems.jsonl", problems(4))
    srv = start_server(tmp_path / "corpus", tmp_path / "server.log",
                       env={"STEPWISE_DATA_DIRS": str(tmp_path), "STEPWISE_TEACHERS": str(teachers),
                            KEY_ENV: SERVER_KEY, "OPENAI_API_KEY": SERVER_KEY})
    try:
        refused(srv, live_job("free-keyed", base_url=listener.base_url, api_key_env=KEY_ENV), "teacher.api_key_env")
        refused(srv, live_job("free-openai", base_url=listener.base_url, api_key_env="OPENAI_API_KEY"),
                "teacher.api_key_env")
        reply = srv.post("/v1/jobs", live_job("free", base_url=listener.base_url))  # the default key name, unsaid
        assert reply.status == 202, reply.body
        srv.wait("free", {"completed"})
        assert len(listener.seen) == 4
        assert listener.carried(SERVER_KEY) == 0
        assert not any(k.lower() == "authorization" for headers in listener.seen for k in headers)
        assert not any(k.lower().startswith("x-stepwise") for headers in listener.seen for k in headers)
    finally:
        stop(srv.proc)
        stop_jobs(tmp_path / "corpus")
        stop_listener()


# ── ids, bodies ────────────────────────────────────────────────────────────────────────────────────────────────


@pytest.mark.parametrize("job_id", ["x\n", "x\nmore", "x\r", "x\x00", "x\t", "x y", "../x", "x/y", ".x", "-x",
                                    "é", "x" * 129, ""])
def test_job_ids_are_plain_names_matched_whole(locked, job_id):
    reply = locked.server.post("/v1/jobs", replay_job(job_id))
    assert reply.status == 422, reply.body
    assert reply.json()["error"]["field"] == "job_id"


@pytest.mark.parametrize("path", ["/v1/jobs/x%0A", "/v1/jobs/x%0Amore/records", "/v1/jobs/x%00", "/v1/jobs/%2E%2E",
                                  "/v1/jobs/x%0D/cancel"])
def test_job_ids_in_paths_are_matched_whole(locked, path):
    reply = locked.server.call("POST" if path.endswith("cancel") else "GET", path)
    assert reply.status == 422, reply.body
    assert reply.json()["error"]["field"] == "path.job_id"


def test_a_key_given_twice_in_a_job_body_is_refused(locked):
    raw = json.dumps(replay_job("twice"))[:-1] + ', "dataset": {"path": "/etc/passwd"}}'
    reply = locked.server.call("POST", "/v1/jobs", raw=raw.encode())
    assert reply.status == 422, reply.body
    assert "'dataset' is given twice" in reply.json()["error"]["message"]
    assert not (locked.server.corpus / "jobs" / "twice.spec.json").exists()


# ── uploads: into the uploads root only, capped, never replaced ───────────────────────────────────────────────


def test_an_uploaded_dataset_runs_by_its_name(locked):
    data = "".join(json.dumps(p) + "\n" for p in problems(6)).encode()
    reply = locked.server.call("POST", "/v1/datasets?name=uploaded.jsonl", raw=data)
    assert reply.status == 201, reply.body
    info = reply.json()
    assert info["name"] == "uploaded.jsonl" and info["bytes"] == len(data) and len(info["sha256"]) == 64
    assert "uploaded.jsonl" in [d["name"] for d in locked.server.get("/v1/datasets").json()["items"]]
    again = locked.server.call("POST", "/v1/datasets?name=uploaded.jsonl", raw=b"{}\n")
    assert again.status == 409, again.body
    assert Path(info["path"]).read_bytes() == data  # never replaced
    reply = locked.server.post("/v1/jobs", replay_job("from-upload", dataset={"path": "uploaded.jsonl"},
                                                      teacher={"path": str(locked.root / "answers.jsonl")}))
    assert reply.status == 202, reply.body
    assert locked.server.wait("from-upload", {"completed"})["n_records"] == 6


@pytest.mark.parametrize("name", ["../x.jsonl", "a/b.jsonl", ".hidden.jsonl", "x.sh", "x", "x.jsonl/", "%2e%2e.jsonl",
                                  "x\n.jsonl", "x" * 130 + ".jsonl"])
def test_an_upload_with_a_name_that_is_not_plain_is_refused(locked, name):
    from urllib.parse import quote

    reply = locked.server.call("POST", f"/v1/datasets?name={quote(name, safe='')}", raw=b'{"a": 1}\n')
    assert reply.status == 422, reply.body
    assert reply.json()["error"]["field"] in ("name", "query.name")
    uploads = locked.server.corpus / "uploads"
    assert all(p.parent == uploads for p in uploads.rglob("*"))
    assert not list(locked.root.parent.glob("x.*"))


def test_an_upload_past_the_cap_is_refused_and_leaves_nothing(locked):
    before = sorted(p.name for p in (locked.server.corpus / "uploads").iterdir())
    reply = locked.server.call("POST", "/v1/datasets?name=big.jsonl", raw=b"x" * 5000)
    assert reply.status == 413, reply.body
    assert sorted(p.name for p in (locked.server.corpus / "uploads").iterdir()) == before


def test_uploads_need_the_token(locked):
    reply = locked.server.call("POST", "/v1/datasets?name=t.jsonl", raw=b"{}\n", token=None)
    assert reply.status == 401
    assert not (locked.server.corpus / "uploads" / "t.jsonl").exists()


def test_a_failing_jobs_view_holds_no_server_secret(locked):
    (locked.root / "broken.parquet").write_text("not parquet")  # inside the root, but not what it claims
    reply = locked.server.post("/v1/jobs", replay_job("broken", dataset={"path": "broken.parquet"}))
    assert reply.status == 202, reply.body
    view = locked.server.wait("broken", {"failed"})
    assert "broken.parquet" in view["error"] and SERVER_KEY not in json.dumps(view)
