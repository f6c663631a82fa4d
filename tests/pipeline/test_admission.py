"""The REST service's admission rules on their own (`pipeline/admission.py`), and the service settings that feed
them (`api/settings.py`). The same rules are tried over real HTTP in tests/api/test_security.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from stepwise.api.settings import ServiceSettings
from stepwise.pipeline.admission import DataRoots, TeacherProfiles, admit_teacher, apply_profile, resolve_profile
from stepwise.pipeline.errors import JobSpecError
from stepwise.pipeline.spec import JobSpec, load_job
from tests.conftest import stepwise, write_jsonl


@pytest.fixture
def roots(tmp_path: Path) -> tuple[DataRoots, Path, Path]:
    first, second, outside = tmp_path / "first", tmp_path / "second", tmp_path / "outside"
    for folder in (first, second, outside):
        folder.mkdir()
    (first / "a.jsonl").write_text("{}\n")
    (second / "b.jsonl").write_text("{}\n")
    (second / "a.jsonl").write_text("{}\n")
    (outside / "c.jsonl").write_text("{}\n")
    (second / "link.jsonl").symlink_to(outside / "c.jsonl")
    (second / "inner.jsonl").symlink_to(second / "b.jsonl")  # a link that stays inside is fine
    (first / "sub").mkdir()
    return DataRoots([first, second]), first, second


@pytest.mark.parametrize(("path", "found"), [
    ("a.jsonl", "first/a.jsonl"),            # the first root that holds it
    ("b.jsonl", "second/b.jsonl"),
    ("inner.jsonl", "second/b.jsonl"),
    ("sub/../a.jsonl", "first/a.jsonl"),
    ("ABS:second/a.jsonl", "second/a.jsonl"),
])
def test_a_path_inside_a_root_resolves_to_its_real_file(roots, tmp_path, path, found):
    data_roots = roots[0]
    path = str(tmp_path / path.removeprefix("ABS:")) if path.startswith("ABS:") else path
    assert data_roots.resolve("dataset.path", path) == str(tmp_path / found)


@pytest.mark.parametrize("path", ["link.jsonl", "../outside/c.jsonl", "ABS:outside/c.jsonl", "ABS:first/../outside/c.jsonl",
                                  "ABS:first-twin/a.jsonl", "/", "ABS:outside/missing.jsonl", "../../../../etc/passwd"])
def test_a_path_that_leaves_the_roots_is_refused_the_same_way_whether_or_not_it_exists(roots, tmp_path, path):
    path = str(tmp_path / path.removeprefix("ABS:")) if path.startswith("ABS:") else path
    with pytest.raises(JobSpecError, match="is not inside the server's data roots") as err:
        roots[0].resolve("dataset.path", path)
    assert err.value.field == "dataset.path"


@pytest.mark.parametrize("path", ["missing.jsonl", "sub", "ABS:first/sub"])
def test_a_path_inside_a_root_that_is_no_file_names_the_field(roots, tmp_path, path):
    path = str(tmp_path / path.removeprefix("ABS:")) if path.startswith("ABS:") else path
    with pytest.raises(JobSpecError, match="no such file") as err:
        roots[0].resolve("prompt.path", path)
    assert err.value.field == "prompt.path"


PROFILES = TeacherProfiles.model_validate({"profiles": {
    "hosted": {"backend": "openai", "base_url": "https://teacher.invalid/v1", "api_key_env": "HOSTED_KEY",
               "models": ["big-*"], "max_concurrency": 16, "rpm": 600},
    "batch": {"backend": "openai_batch", "base_url": "https://teacher.invalid/v1", "api_key_env": "HOSTED_KEY",
              "models": ["big-1"]},
}})


def teacher(**fields):
    return JobSpec.model_validate({"dataset": {"path": "d.jsonl"}, "task": "arithmetic", "prompt": "few_shot_cot",
                                   "teacher": fields}).teacher


def test_a_profile_gives_its_url_key_and_limits_and_the_job_its_model_and_lower_limits():
    got = admit_teacher(teacher(backend="openai", profile="hosted", model="big-2", max_concurrency=4), PROFILES)
    assert (got.base_url, got.api_key_env, got.model) == ("https://teacher.invalid/v1", "HOSTED_KEY", "big-2")
    assert (got.max_concurrency, got.rpm, got.profile) == (4, 600, "hosted")
    assert admit_teacher(teacher(backend="openai", profile="hosted", model="big-2"), PROFILES).max_concurrency == 16


def test_a_job_file_run_by_its_owner_may_override_a_profile():
    got = apply_profile(teacher(backend="openai", profile="hosted", model="other", max_concurrency=99,
                                base_url="http://127.0.0.1:8000/v1"), PROFILES, strict=False)
    assert (got.base_url, got.api_key_env, got.max_concurrency, got.model) == \
        ("http://127.0.0.1:8000/v1", "HOSTED_KEY", 99, "other")


def test_a_job_file_names_a_profile_from_the_file_stepwise_teachers_names(tmp_path, monkeypatch, listener):
    write_jsonl(tmp_path / "d.jsonl", [{"id": "q1", "question": "What is 2 + 2?", "answer": "4"}])
    (tmp_path / "teachers.yaml").write_text(f"profiles:\n  local:\n    backend: openai\n    base_url: {listener.base_url}\n"
                                            f"    api_key_env: null\n    models: ['*']\n")
    job = tmp_path / "job.yaml"
    job.write_text("job_id: by-profile\ndataset: {path: d.jsonl, id_field: id, answer_field: answer}\n"
                   "task: arithmetic\nprompt: few_shot_cot\nteacher: {backend: openai, profile: local, model: m}\n")
    monkeypatch.setenv("STEPWISE_TEACHERS", str(tmp_path / "teachers.yaml"))
    assert resolve_profile(load_job(job)).teacher.base_url == listener.base_url
    proc = stepwise("run", str(job), "--corpus", str(tmp_path / "corpus"), "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert len(listener.seen) == 1
    monkeypatch.delenv("STEPWISE_TEACHERS")
    with pytest.raises(JobSpecError, match="STEPWISE_TEACHERS"):
        resolve_profile(load_job(job))


@pytest.mark.parametrize(("text", "problem"), [
    ("profiles: {x: {backend: nope, models: [m]}}", "backend"),
    ("profiles: {x: {backend: openai, models: []}}", "models"),
    ("profiles: {x: {backend: openai, models: [m], base_url: 'ftp://x'}}", "base_url"),
    ("profiles: {x: {backend: openai, models: [m], api_key_env: 'sk-123 not a name'}}", "api_key_env"),
    ("profiles: {x: {backend: openai, models: [m], max_concurrency: 0}}", "max_concurrency"),
    ("allow_free_urls: true\nallow_free_urls: false\n", "twice"),
    ("base: &b {backend: openai, models: [m]}\nprofiles: {x: *b}\n", "alias"),
    ("surprise: 1\n", "surprise"),
])
def test_a_bad_profiles_file_is_an_error_naming_what_is_wrong(tmp_path, text, problem):
    path = tmp_path / "teachers.yaml"
    path.write_text(text)
    with pytest.raises(JobSpecError, match=problem):
        TeacherProfiles.load(path)


def test_service_settings_come_from_the_environment_and_flags_win(tmp_path, monkeypatch):
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    monkeypatch.setenv("STEPWISE_DATA_DIRS", f"{one}:{two}")
    monkeypatch.setenv("STEPWISE_API_TOKEN", "t0ken")
    monkeypatch.setenv("STEPWISE_CORPUS", str(tmp_path / "corpus"))
    settings = ServiceSettings.load(port=None, host="0.0.0.0")
    assert settings.data_dirs == (one, two) and settings.token == "t0ken" and settings.host == "0.0.0.0"
    assert settings.uploads == tmp_path / "corpus" / "uploads"
    assert "t0ken" not in repr(settings)  # a secret never shows in a repr or a log line
    roots = settings.admission().roots.roots
    assert roots == ((tmp_path / "corpus" / "uploads").resolve(), one.resolve(), two.resolve())


@pytest.mark.parametrize(("env", "field"), [
    ({"STEPWISE_DATA_DIRS": "/no/such/folder"}, "data_dirs"),
    ({"STEPWISE_PORT": "http"}, "port"),
    ({"STEPWISE_MAX_UPLOAD_BYTES": "0"}, "max_upload_bytes"),
])
def test_a_bad_setting_stops_the_service_naming_it(monkeypatch, env, field):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(JobSpecError, match=field):
        ServiceSettings.load()


def test_serve_refuses_to_start_with_a_bad_setting(tmp_path):
    import os
    import subprocess
    import sys

    env = {**os.environ, "STEPWISE_DATA_DIRS": str(tmp_path / "missing")}
    proc = subprocess.run([sys.executable, "-m", "stepwise", "serve", "--corpus", str(tmp_path / "c")],
                          capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 2 and "data_dirs" in proc.stderr, proc.stderr
