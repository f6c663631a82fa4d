"""JobSpec: one parametrised case per validation rule, each error naming its dotted field."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import yaml

from stepwise.pipeline.errors import JobSpecError
from stepwise.pipeline.spec import JobSpec, check_files, load_job, parse_job
from tests.conftest import stepwise

BASE = {
    "dataset": {"path": "data.jsonl", "answer_field": "answer"},
    "task": {"kind": "arithmetic"},
    "prompt": {"id": "few_shot_cot"},
    "teacher": {"backend": "replay", "path": "completions.jsonl"},
}
DELETE = object()


def job(**changes) -> dict:
    """BASE with dotted-path changes, e.g. job(**{"sampling.temperature": 3})."""
    data = copy.deepcopy(BASE)
    for dotted, value in changes.items():
        *parents, last = dotted.split(".")
        node = data
        for p in parents:
            node = node.setdefault(p, {})
        if value is DELETE:
            del node[last]
        else:
            node[last] = value
    return data


# (case id, changes, field the error must name (dotted, as written in the message), words of the message[, bug])
RULES = [
    # top level
    ("job_id_space", {"job_id": "my job"}, "job_id", "letters, digits"),
    ("job_id_empty", {"job_id": ""}, "job_id", "1-128 characters"),
    ("job_id_leading_dash", {"job_id": "-x"}, "job_id", "1-128 characters"),
    ("job_id_slash", {"job_id": "a/../b"}, "job_id", "1-128 characters"),
    ("job_id_too_long", {"job_id": "a" * 129}, "job_id", "1-128 characters"),
    ("job_id_not_a_string", {"job_id": 12}, "job_id", "valid string"),
    ("unknown_top_level_key", {"colour": "blue"}, "colour", "Extra inputs are not permitted"),
    ("dataset_missing", {"dataset": DELETE}, "dataset", "Field required"),
    ("task_missing", {"task": DELETE}, "task", "Field required"),
    ("prompt_missing", {"prompt": DELETE}, "prompt", "Field required"),
    ("teacher_missing", {"teacher": DELETE}, "teacher", "Field required"),
    ("shard_size_zero", {"shard_size": 0}, "shard_size", "greater than or equal to 1"),
    ("shard_size_huge", {"shard_size": 2_000_000}, "shard_size", "less than or equal to 1000000"),
    # dataset
    ("dataset_path_missing", {"dataset.path": DELETE}, "dataset.path", "Field required"),
    ("dataset_path_not_a_string", {"dataset.path": 5}, "dataset.path", "valid string"),
    ("dataset_format", {"dataset.format": "xlsx"}, "dataset.format", "'auto', 'jsonl', 'json', 'csv' or 'parquet'"),
    ("dataset_limit_zero", {"dataset.limit": 0}, "dataset.limit", "greater than 0"),
    ("dataset_max_row_bytes_zero", {"dataset.max_row_bytes": 0}, "dataset.max_row_bytes", "greater than 0"),
    ("dataset_unknown_key", {"dataset.sheet": "one"}, "dataset.sheet", "Extra inputs are not permitted"),
    ("dataset_premise_alone", {"dataset.premise_field": "p"}, "dataset",
     "premise_field and hypothesis_field go together"),
    ("dataset_hypothesis_alone", {"dataset.hypothesis_field": "h"}, "dataset",
     "premise_field and hypothesis_field go together"),
    # task
    ("task_kind_unknown", {"task.kind": "poetry"}, "task.kind", "'multiple_choice', 'nli'"),
    ("task_kind_missing", {"task.kind": DELETE}, "task.kind", "Field required"),
    ("task_custom_without_labels", {"task.kind": "custom"}, "task", "needs a non-empty 'labels' list"),
    ("task_custom_empty_labels", {"task": {"kind": "custom", "labels": []}}, "task", "needs a non-empty 'labels'"),
    ("task_labels_on_builtin_kind", {"task.labels": ["1", "2"]}, "task", "'labels' is only for kind 'custom'"),
    ("task_alias_to_unknown_label", {"task": {"kind": "custom", "labels": ["hot", "cold"], "aliases": {"warm": "tepid"}}},
     "task", "alias 'warm' maps to 'tepid', which is not in labels"),
    ("task_bad_answer_pattern", {"task.answer_pattern": "answer: (\\d+"}, "task.answer_pattern",
     "not a valid regular expression"),
    ("task_unknown_key", {"task.difficulty": "hard"}, "task.difficulty", "Extra inputs are not permitted"),
    ("task_not_a_mapping", {"task": 7}, "task", "valid dictionary"),
    # prompt
    ("prompt_id_missing", {"prompt": {"path": "mine.yaml"}}, "prompt.id", "Field required"),
    ("prompt_unknown_key", {"prompt.shots": 3}, "prompt.shots", "Extra inputs are not permitted"),
    # teacher
    ("teacher_backend_missing", {"teacher.backend": DELETE}, "teacher.backend", "discriminator 'backend'"),
    ("teacher_not_a_mapping", {"teacher": "replay"}, "teacher", "valid dictionary"),
    ("teacher_backend_unknown", {"teacher": {"backend": "telepathy", "path": "x"}}, "teacher.backend", "'replay'"),
    ("teacher_path_missing", {"teacher.path": DELETE}, "teacher.path", "Field required"),
    ("teacher_unknown_key", {"teacher.api_key": "sk-123"}, "teacher.api_key", "Extra inputs are not permitted"),
    # sampling
    ("sampling_n_zero", {"sampling.n": 0}, "sampling.n", "greater than or equal to 1"),
    ("sampling_n_too_many", {"sampling.n": 129}, "sampling.n", "less than or equal to 128"),
    ("sampling_n_fraction", {"sampling.n": 1.5}, "sampling.n", "valid integer"),
    ("sampling_temperature_negative", {"sampling.temperature": -0.1}, "sampling.temperature",
     "greater than or equal to 0"),
    ("sampling_temperature_high", {"sampling.temperature": 2.5}, "sampling.temperature", "less than or equal to 2"),
    ("sampling_temperature_text", {"sampling.temperature": "warm"}, "sampling.temperature", "valid number"),
    ("sampling_top_p_zero", {"sampling.top_p": 0}, "sampling.top_p", "greater than 0"),
    ("sampling_top_p_high", {"sampling.top_p": 1.01}, "sampling.top_p", "less than or equal to 1"),
    ("sampling_max_tokens_zero", {"sampling.max_tokens": 0}, "sampling.max_tokens", "greater than or equal to 1"),
    ("sampling_max_tokens_huge", {"sampling.max_tokens": 262145}, "sampling.max_tokens", "less than or equal to 262144"),
    ("sampling_seed_text", {"sampling.seed": "lucky"}, "sampling.seed", "valid integer"),
    ("sampling_stop_too_many", {"sampling.stop": ["a", "b", "c", "d", "e"]}, "sampling.stop", "at most 4 items"),
    ("sampling_best_of", {"sampling.best_of": 3}, "sampling.best_of", "Extra inputs are not permitted"),
    # filters
    ("filters_min_agreement_high", {"filters.min_agreement": 1.5}, "filters.min_agreement", "less than or equal to 1"),
    ("filters_min_agreement_negative", {"filters.min_agreement": -0.5}, "filters.min_agreement",
     "greater than or equal to 0"),
    ("filters_min_chars_negative", {"filters.min_rationale_chars": -1}, "filters.min_rationale_chars",
     "greater than or equal to 0"),
    ("filters_max_chars_zero", {"filters.max_rationale_chars": 0}, "filters.max_rationale_chars",
     "greater than or equal to 1"),
    ("filters_min_above_max", {"filters": {"min_rationale_chars": 50, "max_rationale_chars": 10}}, "filters",
     "min_rationale_chars is larger than max_rationale_chars"),
    ("filters_require_correct_text", {"filters.require_correct": "often"}, "filters.require_correct", "valid boolean"),
    ("filters_unknown_key", {"filters.min_words": 3}, "filters.min_words", "Extra inputs are not permitted"),
]


def _param(rule: tuple) -> object:
    """A 5th element is the reason of a known source bug: the case is a strict xfail."""
    case_id, changes, field, words, *bug = rule
    marks = [pytest.mark.xfail(strict=True, reason=bug[0])] if bug else []
    return pytest.param(changes, field, words, id=case_id, marks=marks)


@pytest.mark.parametrize(("changes", "field", "words"), [_param(r) for r in RULES])
def test_each_rule_names_its_field(changes, field, words):
    with pytest.raises(JobSpecError) as info:
        parse_job(job(**changes), source="job file x.yaml")
    message = str(info.value)
    assert message.startswith("job file x.yaml is invalid:\n"), message
    # the line of the problem begins with the dotted field, then says what is wrong
    assert re.search(rf"^  {re.escape(field)}: .*{re.escape(words)}", message, re.MULTILINE), message
    assert info.value.field == field


def test_every_problem_is_listed():
    with pytest.raises(JobSpecError) as info:
        parse_job(job(**{"sampling.temperature": 9, "dataset.path": DELETE, "shard_size": 0}))
    lines = str(info.value).splitlines()[1:]
    assert sorted(line.split(":")[0].strip() for line in lines) == ["dataset.path", "sampling.temperature",
                                                                   "shard_size"]


@pytest.mark.parametrize("data", [[1, 2], "just text", None, 3])
def test_top_level_must_be_a_mapping(data):
    with pytest.raises(JobSpecError, match=r"\(top level\): expected a mapping"):
        parse_job(data)


def test_shorthands_for_task_and_prompt():
    spec = parse_job(job(task="arithmetic", prompt="few_shot_cot"))
    assert spec.task.kind == "arithmetic" and spec.task.labels is None
    assert spec.prompt.id == "few_shot_cot" and spec.prompt.path is None
    assert spec == parse_job(job(task={"kind": "arithmetic"}, prompt={"id": "few_shot_cot"}))


def test_defaults():
    spec = parse_job(job(job_id="plain"))
    assert spec.job_id == "plain"
    assert (spec.sampling.n, spec.sampling.temperature, spec.sampling.top_p, spec.sampling.max_tokens) == (1, 0.0, 1.0, 512)
    assert spec.filters.require_correct is True and spec.filters.dedupe is True
    assert spec.shard_size == 1000 and spec.dataset.format == "auto" and spec.dataset.max_row_bytes == 1_000_000
    assert spec.teacher.model == "replay"


def test_a_spec_is_frozen():
    spec = parse_job(job())
    with pytest.raises(Exception, match="frozen"):
        spec.shard_size = 5  # type: ignore[misc]


# ── job files ────────────────────────────────────────────────────────────────────────────────────────────────────
def write_job(path: Path, data: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def test_relative_paths_resolve_against_the_job_file_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the working directory must not matter
    data = job(**{"dataset.path": "data/train.jsonl", "teacher.path": "../recorded/out.jsonl",
                  "prompt": {"id": "mine", "path": "prompts/mine.yaml"}})
    spec = load_job(write_job(tmp_path / "jobs" / "nightly" / "job.yaml", data))
    folder = (tmp_path / "jobs" / "nightly").resolve()
    assert spec.dataset.path == str(folder / "data" / "train.jsonl")
    assert spec.teacher.path == str((folder / ".." / "recorded" / "out.jsonl").resolve())
    assert spec.prompt.path == str(folder / "prompts" / "mine.yaml")


def test_absolute_and_home_paths_are_kept(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    data = job(**{"dataset.path": "/srv/data/train.jsonl", "teacher.path": "~/out.jsonl"})
    spec = load_job(write_job(tmp_path / "j.yaml", data))
    assert spec.dataset.path == "/srv/data/train.jsonl"
    assert spec.teacher.path == str(tmp_path / "home" / "out.jsonl")


def test_default_job_id_is_stem_and_stable_hash(tmp_path):
    path = write_job(tmp_path / "svamp cot.v2.yaml", job())
    first, second = load_job(path), load_job(path)
    assert re.fullmatch(r"svamp-cot\.v2-[0-9a-f]{8}", first.job_id), first.job_id
    assert first.job_id == second.job_id
    assert first.job_id.endswith(first.fingerprint()[:8])
    changed = load_job(write_job(path, job(**{"sampling.temperature": 0.7})))
    assert changed.job_id != first.job_id and changed.job_id.startswith("svamp-cot.v2-")


def test_explicit_job_id_wins(tmp_path):
    spec = load_job(write_job(tmp_path / "whatever.yaml", job(job_id="fixed.id_1")))
    assert spec.job_id == "fixed.id_1"


def test_parse_job_without_a_file_defaults_to_job_stem():
    assert re.fullmatch(r"job-[0-9a-f]{8}", parse_job(job()).job_id)


def test_fingerprint_ignores_job_id_but_not_the_rest():
    a = parse_job(job(job_id="alpha"))
    b = parse_job(job(job_id="beta"))
    assert a.fingerprint() == b.fingerprint()
    assert re.fullmatch(r"[0-9a-f]{64}", a.fingerprint())
    for changes in ({"sampling.temperature": 0.5}, {"filters.require_correct": False}, {"shard_size": 7},
                    {"dataset.path": "other.jsonl"}, {"teacher.model": "palm"}):
        assert parse_job(job(job_id="alpha", **changes)).fingerprint() != a.fingerprint(), changes


def test_fingerprint_treats_shorthand_and_long_form_alike():
    assert parse_job(job(task="arithmetic")).fingerprint() == parse_job(job()).fingerprint()


@pytest.mark.parametrize(("text", "message"), [
    ("dataset: [unclosed\n", "j.yaml, line 2, column 1: not valid YAML: expected ',' or ']'"),
    ("- just\n- a list\n", "(top level): expected a mapping, got list"),
    ("", "(top level): expected a mapping, got NoneType"),
])
def test_unusable_job_files(tmp_path, text, message):
    path = tmp_path / "j.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(JobSpecError) as info:
        load_job(path)
    assert message in str(info.value)


def test_missing_job_file(tmp_path):
    with pytest.raises(JobSpecError, match="cannot read job file"):
        load_job(tmp_path / "nope.yaml")


def test_job_spec_is_the_model_parse_job_builds():
    assert isinstance(parse_job(job()), JobSpec)


# ── through the real CLI: exit code 2, the field named, nothing written ──────────────────────────────────────────
@pytest.mark.parametrize(("text", "field"), [
    (yaml.safe_dump(job(**{"sampling.temperature": 5})), "sampling.temperature"),
    (yaml.safe_dump(job(**{"dataset.path": DELETE})), "dataset.path"),
    (yaml.safe_dump(job(**{"filters": {"min_rationale_chars": 9, "max_rationale_chars": 3}})), "filters"),
    (yaml.safe_dump(job(colour="blue")), "colour"),
    (yaml.safe_dump(job(task="poetry")), "task.kind"),
    ("dataset:\n  path: [data.jsonl\ntask: arithmetic\n", "bad.yaml, line 3, column 5: not valid YAML"),
], ids=["temperature", "dataset_path", "filters", "extra_key", "task_kind", "yaml_syntax"])
def test_cli_rejects_an_invalid_job_file_and_writes_nothing(tmp_path, text, field):
    job_file = tmp_path / "bad.yaml"
    job_file.write_text(text, encoding="utf-8")
    (tmp_path / "data.jsonl").write_text('{"question": "What is 1 + 1?", "answer": "2"}\n', encoding="utf-8")
    (tmp_path / "completions.jsonl").write_text('{"example_id": "x", "text": "So the answer is 2."}\n',
                                                encoding="utf-8")
    corpus = tmp_path / "corpus"
    proc = stepwise("run", str(job_file), "--corpus", str(corpus), "--quiet")
    assert proc.returncode == 2, proc.stderr
    said = " ".join(proc.stderr.split())  # rich wraps stderr at 80 columns when it is not a terminal
    assert said.startswith("error: job file ") and field in said, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""
    assert not corpus.exists()


# ── strict YAML job files (pipeline/yamlfile.py) ─────────────────────────────────────────────────────────────────
def test_an_alias_bomb_job_file_is_refused_fast_naming_the_line(tmp_path):
    import time

    from tests.pipeline.test_yamlfile import alias_bomb

    path = tmp_path / "bomb.yaml"
    path.write_text(alias_bomb() + yaml.safe_dump(job()), encoding="utf-8")
    started = time.perf_counter()
    with pytest.raises(JobSpecError) as info:
        load_job(path)
    assert time.perf_counter() - started < 0.2
    assert str(info.value) == (f"job file {path}, line 2, column 8: YAML aliases (*name) are not allowed here: "
                               f"write the value out")


@pytest.mark.parametrize(("text", "words"), [
    ("dataset: {path: a.jsonl}\ntask: exact\ndataset: {path: b.jsonl}\nprompt: few_shot_cot\n",
     "line 3, column 1: key 'dataset' is given twice in this mapping (first at line 1)"),
    ("dataset:\n  path: a.jsonl\n  question_field: q\n  question_field: question\n",
     "line 4, column 3: key 'question_field' is given twice in this mapping (first at line 3)"),
], ids=["top_level", "nested"])
def test_a_key_given_twice_in_a_job_file_names_the_key_and_both_lines(tmp_path, text, words):
    path = tmp_path / "j.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(JobSpecError) as info:
        load_job(path)
    assert str(info.value) == f"job file {path}, {words}"


def test_a_job_file_with_a_byte_order_mark_loads(tmp_path):
    path = tmp_path / "j.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + yaml.safe_dump(job()).encode())
    assert load_job(path).dataset.answer_field == "answer"


def test_a_job_file_that_is_not_utf8_names_the_line(tmp_path):
    path = tmp_path / "j.yaml"
    path.write_bytes(yaml.safe_dump(job()).encode() + b"note: caf\xe9\n")
    with pytest.raises(JobSpecError, match=r"j\.yaml, line \d+, column 10: not valid UTF-8"):
        load_job(path)


# ── files the job names: check_files (exit 2 through run_job) ────────────────────────────────────────────────────
def _files(tmp_path: Path, **changes) -> JobSpec:
    for name in ("data.jsonl", "completions.jsonl", "mine.yaml"):
        (tmp_path / name).write_text("{}\n", encoding="utf-8")
    data = job(**{"prompt": {"id": "mine", "path": "mine.yaml"}, **changes})
    return load_job(write_job(tmp_path / "j.yaml", data))


@pytest.mark.parametrize(("field", "change"), [
    ("dataset.path", {"dataset.path": "missing.jsonl"}),
    ("prompt.path", {"prompt": {"id": "mine", "path": "missing.yaml"}}),
    ("teacher.path", {"teacher.path": "missing.jsonl"}),
])
def test_a_missing_file_is_a_job_spec_error_naming_the_field(tmp_path, field, change):
    spec = _files(tmp_path, **change)
    with pytest.raises(JobSpecError) as info:
        check_files(spec)
    assert info.value.field == field
    section, name = field.split(".")
    missing = getattr(getattr(spec, section), name)
    assert missing.startswith(str(tmp_path / "missing."))
    assert str(info.value) == f"{field}: file not found: {missing}"


@pytest.mark.parametrize("field", ["dataset.path", "prompt.path", "teacher.path"])
def test_a_folder_is_a_job_spec_error_naming_the_field(tmp_path, field):
    (tmp_path / "folder").mkdir()
    change = {"prompt": {"id": "mine", "path": "folder"}} if field == "prompt.path" else {field: "folder"}
    with pytest.raises(JobSpecError) as info:
        check_files(_files(tmp_path, **change))
    assert info.value.field == field and str(info.value) == f"{field}: {tmp_path / 'folder'} is a folder, not a file"


def test_a_pipe_is_a_job_spec_error_and_never_opened(tmp_path):
    import os

    spec = _files(tmp_path, **{"teacher.path": "fifo"})
    os.mkfifo(tmp_path / "fifo")  # opening it for reading would wait for a writer forever
    with pytest.raises(JobSpecError) as info:
        check_files(spec)
    assert info.value.field == "teacher.path" and str(info.value).endswith("fifo is not a regular file")


def test_an_unreadable_file_is_a_job_spec_error_naming_the_field(tmp_path):
    import os

    if os.geteuid() == 0:
        pytest.skip("root reads every file")
    spec = _files(tmp_path)
    (tmp_path / "data.jsonl").chmod(0)
    with pytest.raises(JobSpecError, match=r"^dataset\.path: cannot read .*data\.jsonl: Permission denied"):
        check_files(spec)


def test_what_a_caller_brings_itself_is_not_checked(tmp_path):
    spec = _files(tmp_path, **{"dataset.path": "gone.jsonl", "teacher.path": "gone.jsonl",
                               "prompt": {"id": "mine", "path": "gone.yaml"}})
    check_files(spec, dataset=False, prompt=False, teacher=False)
    check_files(_files(tmp_path, prompt="few_shot_cot"))  # a built-in prompt has no path
