"""The `stepwise` command line end to end, in a subprocess, as a user runs it."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from tests.conftest import stepwise, write_jsonl

CONTRACT_COLUMNS = ["job_id", "example_id", "sample_idx", "input", "gold_label", "label", "rationale", "correct",
                    "accepted", "reject_reason", "prompt_id", "prompt_hash", "teacher_model", "finish_reason",
                    "tokens_in", "tokens_out", "completion", "created_at"]

# Five small problems of our own; the teacher gets four right and one wrong.
PROBLEMS = [
    ("t1", "Nina reads 12 pages on Monday and 9 on Tuesday. How many pages did she read?", 21, 21),
    ("t2", "A box has 30 crayons and 4 break. How many crayons are not broken?", 26, 26),
    ("t3", "Each of 5 vans carries 6 people. How many people ride in the vans?", 30, 30),
    ("t4", "Omar saves 7 dollars a week for 4 weeks. How much has he saved?", 28, 27),  # wrong
    ("t5", "There are 45 birds and 15 fly away. How many birds remain?", 30, 30),
]


def make_job(folder: Path, *, job_id: str | None = "tiny", bad_row: bool = False, **overrides) -> Path:
    """A replay job over PROBLEMS (plus, if asked, one malformed row) in `folder`; returns the job file."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = [{"id": pid, "question": q, "answer": str(gold)} for pid, q, gold, _ in PROBLEMS]
    if bad_row:
        rows.insert(2, {"id": "t-bad", "question": 1234, "answer": "5"})
    write_jsonl(folder / "problems.jsonl", rows)
    write_jsonl(folder / "teacher.jsonl", [
        {"example_id": pid, "sample_idx": 0, "finish_reason": "stop",
         "text": f"Working it through step by step gives {said}. So the answer is {said}.",
         "usage": {"prompt_tokens": 100, "completion_tokens": 12}}
        for pid, _, _, said in PROBLEMS
    ])
    job = {
        "job_id": job_id, "task": "arithmetic", "prompt": "few_shot_cot",
        "dataset": {"path": "problems.jsonl", "id_field": "id", "answer_field": "answer"},
        "teacher": {"backend": "replay", "path": "teacher.jsonl", "model": "tiny-teacher"},
        "shard_size": 2,
    }
    if job_id is None:
        del job["job_id"]
    job.update(overrides)
    path = folder / "job.yaml"
    path.write_text(yaml.safe_dump(job, sort_keys=False), encoding="utf-8")
    return path


def sql(corpus: Path, text: str) -> list[dict]:
    proc = stepwise("query", "--corpus", str(corpus), "--format", "json", text, check=True)
    return json.loads(proc.stdout)


def said(proc) -> str:
    """stderr with rich's 80-column wrapping undone."""
    return " ".join(proc.stderr.split())


def shards(proc) -> tuple[int, int]:
    m = re.search(r"shards run / skipped\W+(\d+) / (\d+)", proc.stderr)
    assert m, proc.stderr
    return int(m.group(1)), int(m.group(2))


def test_run_then_rerun_skips_every_shard(tmp_path):
    job = make_job(tmp_path / "job")
    corpus = tmp_path / "corpus"
    first = stepwise("run", str(job), "--corpus", str(corpus))
    assert first.returncode == 0, first.stderr
    text = said(first)
    assert "job tiny: completed" in text
    assert re.search(r"examples\W+5\b", text) and re.search(r"records\W+5\b", text)
    assert re.search(r"accepted\W+4\b", text) and re.search(r"rejected\W+1\b", text)
    assert "80.00% (4 / 5 with gold)" in text
    assert "500 / 60" in text  # tokens in / out
    assert re.search(r"rejected: incorrect\W+1\b", text)
    assert shards(first) == (3, 0)
    assert sorted(p.name for p in (corpus / "records" / "tiny").iterdir()) == [
        "shard-000000.parquet", "shard-000001.parquet", "shard-000002.parquet"]

    again = stepwise("run", str(job), "--corpus", str(corpus), "--quiet")
    assert again.returncode == 0, again.stderr
    assert shards(again) == (0, 3)
    assert re.search(r"records\W+5\b", said(again))

    assert sql(corpus, "SELECT count(*) AS n, count(DISTINCT example_id) AS e FROM records") == [{"n": 5, "e": 5}]
    rows = sql(corpus, "SELECT example_id, label, correct, accepted, reject_reason, teacher_model, tokens_in "
                       "FROM records ORDER BY example_id")
    assert rows == [
        {"example_id": "t1", "label": "21", "correct": True, "accepted": True, "reject_reason": None,
         "teacher_model": "tiny-teacher", "tokens_in": 100},
        {"example_id": "t2", "label": "26", "correct": True, "accepted": True, "reject_reason": None,
         "teacher_model": "tiny-teacher", "tokens_in": 100},
        {"example_id": "t3", "label": "30", "correct": True, "accepted": True, "reject_reason": None,
         "teacher_model": "tiny-teacher", "tokens_in": 100},
        {"example_id": "t4", "label": "27", "correct": False, "accepted": False, "reject_reason": "incorrect",
         "teacher_model": "tiny-teacher", "tokens_in": 100},
        {"example_id": "t5", "label": "30", "correct": True, "accepted": True, "reject_reason": None,
         "teacher_model": "tiny-teacher", "tokens_in": 100},
    ]
    jobs = sql(corpus, "SELECT job_id, status, n_shards, shards_done, n_records, n_accepted FROM jobs")
    assert jobs == [{"job_id": "tiny", "status": "completed", "n_shards": 3, "shards_done": 3, "n_records": 5,
                     "n_accepted": 4}]


def test_default_job_id_comes_from_the_file_name(tmp_path):
    job = make_job(tmp_path / "job", job_id=None)
    corpus = tmp_path / "corpus"
    proc = stepwise("run", str(job), "--corpus", str(corpus), "--quiet")
    assert proc.returncode == 0, proc.stderr
    (folder,) = (corpus / "records").iterdir()
    assert re.fullmatch(r"job-[0-9a-f]{8}", folder.name)
    assert f"job {folder.name}: completed" in said(proc)


@pytest.mark.parametrize(("fmt", "parse"), [
    ("json", json.loads),
    ("jsonl", lambda s: [json.loads(line) for line in s.splitlines()]),
])
def test_query_formats(tmp_path, fmt, parse):
    proc = stepwise("query", "--corpus", str(tmp_path / "empty"), "--format", fmt,
                    "SELECT i, i * i AS sq FROM range(3) t(i)")
    assert proc.returncode == 0, proc.stderr
    assert parse(proc.stdout) == [{"i": 0, "sq": 0}, {"i": 1, "sq": 1}, {"i": 2, "sq": 4}]


def test_query_table_format_and_row_cap(tmp_path):
    proc = stepwise("query", "--corpus", str(tmp_path), "--max-rows", "2", "SELECT i FROM range(10) t(i)")
    assert proc.returncode == 0, proc.stderr
    assert re.findall(r"\b\d\b", proc.stdout) == ["0", "1"]


@pytest.mark.parametrize(("statement", "message"), [
    ("COPY (SELECT * FROM records) TO '/tmp/stepwise-leak.csv'", "only SELECT queries are allowed, got COPY"),
    ("SELECT * FROM read_csv('/etc/passwd')", "Permission Error"),
    ("SELECT 1; SELECT 2", "exactly one statement is allowed, got 2"),
])
def test_query_refuses_with_exit_code_1(tmp_path, statement, message):
    proc = stepwise("query", "--corpus", str(tmp_path), "--format", "json", statement)
    assert proc.returncode == 1
    assert said(proc).startswith("error: ") and message in said(proc), proc.stderr
    assert proc.stdout == "" and "Traceback" not in proc.stderr
    assert not Path("/tmp/stepwise-leak.csv").exists()


def test_query_timeout_is_exit_code_1(tmp_path):
    proc = stepwise("query", "--corpus", str(tmp_path), "--timeout", "0.3",
                    "SELECT count(*) FROM range(1000000000) a, range(1000000000) b WHERE a.range = b.range + 7")
    assert proc.returncode == 1
    assert "query took longer than 0.3 s and was stopped" in said(proc)


def test_a_bad_row_is_stored_as_a_reject_and_the_job_completes(tmp_path):
    job = make_job(tmp_path / "job", job_id="with-bad-row", bad_row=True)
    corpus = tmp_path / "corpus"
    proc = stepwise("run", str(job), "--corpus", str(corpus), "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"records\W+6\b", said(proc)) and re.search(r"rejected: bad_row\W+1\b", said(proc))
    bad = sql(corpus, "SELECT example_id, sample_idx, accepted, reject_reason, reject_detail, input, label "
                      "FROM records WHERE reject_reason = 'bad_row'")
    assert bad == [{"example_id": "t-bad", "sample_idx": 0, "accepted": False, "reject_reason": "bad_row",
                    "reject_detail": "row 2: field 'question' should be a string, got int", "input": None,
                    "label": None}]
    assert sql(corpus, "SELECT count(*) AS n FROM records WHERE accepted") == [{"n": 4}]


def test_changed_spec_with_the_same_job_id_conflicts_unless_overwrite(tmp_path):
    folder = tmp_path / "job"
    corpus = tmp_path / "corpus"
    assert stepwise("run", str(make_job(folder, job_id="same")), "--corpus", str(corpus), "--quiet",
                    check=True).returncode == 0
    changed = make_job(folder, job_id="same", filters={"require_correct": False})
    proc = stepwise("run", str(changed), "--corpus", str(corpus), "--quiet")
    assert proc.returncode == 1
    assert "job 'same' already exists" in said(proc) and "--overwrite" in said(proc), proc.stderr
    assert sql(corpus, "SELECT count(*) AS n, count(*) FILTER (WHERE accepted) AS a FROM records") == [{"n": 5, "a": 4}]

    proc = stepwise("run", str(changed), "--corpus", str(corpus), "--quiet", "--overwrite")
    assert proc.returncode == 0, proc.stderr
    assert shards(proc) == (3, 0)
    # the wrong answer is now accepted: the records were replaced, not added to
    assert sql(corpus, "SELECT count(*) AS n, count(*) FILTER (WHERE accepted) AS a FROM records") == [{"n": 5, "a": 5}]


def test_a_missing_dataset_is_exit_code_2_and_writes_nothing(tmp_path):
    job = make_job(tmp_path / "job")
    (tmp_path / "job" / "problems.jsonl").unlink()
    corpus = tmp_path / "corpus"
    proc = stepwise("run", str(job), "--corpus", str(corpus), "--quiet")
    assert proc.returncode == 2
    assert "dataset.path: file not found" in said(proc)
    assert not corpus.exists()


def test_export_writes_its_file(tmp_path):
    corpus = tmp_path / "corpus"
    stepwise("run", str(make_job(tmp_path / "job")), "--corpus", str(corpus), "--quiet", check=True)
    out = tmp_path / "out" / "tiny.jsonl"
    proc = stepwise("export", "--corpus", str(corpus), "--job", "tiny", "--format", "finetune_cot", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "exported 4 accepted records of job tiny as finetune_cot" in said(proc)
    lines = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["example_id"] for r in lines] == ["t1", "t2", "t3", "t5"]
    assert lines[0]["completion"] == " Working it through step by step gives 21. --> 21 END"

    proc = stepwise("export", "--corpus", str(corpus), "--job", "tiny", "--format", "chat", "--out",
                    str(tmp_path / "split"), "--split", "0.8,0.1")
    assert proc.returncode == 1 and "--split '0.8,0.1'" in said(proc)
    assert not (tmp_path / "split").exists()


# ── the real Distilling step-by-step release ─────────────────────────────────────────────────────────────────────
@pytest.fixture(scope="module")
def svamp_corpus(dsbs_dir, tmp_path_factory) -> Path:
    corpus = tmp_path_factory.mktemp("dsbs") / "corpus"
    proc = stepwise("import", "dsbs", "--src", str(dsbs_dir / "svamp"), "--split", "train", "--task", "arithmetic",
                    "--corpus", str(corpus), "--job-id", "svamp-train", "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert "job svamp-train: completed" in said(proc)
    return corpus


def test_import_dsbs_svamp_accuracy(svamp_corpus):
    (row,) = sql(svamp_corpus, "SELECT count(*) AS n, count(DISTINCT example_id) AS e, "
                               "avg(coalesce(correct, false)::int) AS acc, "
                               "count(*) FILTER (WHERE gold_label IS NULL) AS no_gold FROM records")
    assert (row["n"], row["e"], row["no_gold"]) == (800, 800, 0)
    assert row["acc"] >= 0.735, row


def test_import_dsbs_contract_columns(svamp_corpus):
    (row,) = sql(svamp_corpus, "SELECT * FROM records WHERE correct ORDER BY example_id LIMIT 1")
    missing = [c for c in CONTRACT_COLUMNS if c not in row]
    assert not missing, missing
    assert row["job_id"] == "svamp-train" and row["sample_idx"] == 0 and row["accepted"] is True
    assert row["teacher_model"] == "palm-540b" and row["prompt_id"] == "external:dsbs"
    assert row["label"] == row["gold_label"] and row["rationale"] and row["completion"]
    assert re.fullmatch(r"[0-9a-f]{16}", row["example_id"])
    (jobs,) = sql(svamp_corpus, "SELECT job_id, status, n_records FROM jobs")
    assert jobs == {"job_id": "svamp-train", "status": "completed", "n_records": 800}


def test_import_dsbs_export(svamp_corpus, tmp_path):
    (count,) = sql(svamp_corpus, "SELECT count(*) AS n FROM records WHERE accepted")
    out = tmp_path / "svamp-dsbs.jsonl"
    proc = stepwise("export", "--corpus", str(svamp_corpus), "--job", "svamp-train", "--format", "dsbs",
                    "--out", str(out), "--label-source", "gold")
    assert proc.returncode == 0, proc.stderr
    lines = out.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 2 * count["n"]
    first, second = json.loads(lines[0]), json.loads(lines[1])
    assert first["input"].startswith("predict: ") and second["input"].startswith("explain: ")
    assert first["input"][len("predict: "):] == second["input"][len("explain: "):]


def test_the_fast_exit_flushes_a_large_piped_output_and_keeps_the_exit_code(tmp_path):
    """`stepwise` ends with os._exit after a command: whatever it printed must still all arrive."""
    proc = stepwise("query", "--corpus", str(tmp_path), "--format", "jsonl", "--max-rows", "200000",
                    "SELECT i, repeat('x', 20) AS pad FROM range(200000) t(i)")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 200000 and json.loads(lines[-1]) == {"i": 199999, "pad": "x" * 20}
    refused = stepwise("query", "--corpus", str(tmp_path), "SELECT 1; SELECT 2")
    assert refused.returncode == 1 and "exactly one statement" in said(refused)


def test_each_command_module_names_the_commands_it_adds():
    """`stepwise run` builds only its own module's parser: each module's NAMES must be exactly what it adds, or a
    command would be missing (or its flags unparsed) when named first."""
    from stepwise.pipeline.cli import COMMANDS, build_parser

    def commands(parser):
        return set(next(a for a in parser._actions if a.dest == "command").choices)

    assert commands(build_parser()) == {name for module in COMMANDS for name in module.NAMES}
    for module in COMMANDS:
        for name in module.NAMES:
            assert commands(build_parser(name)) == set(module.NAMES)


def test_run_parses_its_flags_without_loading_the_export_or_trainer_modules():
    """The flags of `run` cost nothing that other commands list: no export format, no trainer, no pyarrow."""
    import subprocess
    import sys

    code = ("import sys; from stepwise.pipeline.cli import build_parser; "
            "build_parser('run').parse_args(['run', 'job.yaml', '--quiet']); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'pyarrow' or "
            "m.startswith(('stepwise.pipeline.exports', 'stepwise.pipeline.trainer'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_a_run_reaches_its_first_request_without_pyarrow_aiohttp_or_pandas():
    """What `stepwise run` imports before its first request (the CLI, the run layer, the default teacher engine
    and its transport) holds none of pyarrow (imported with the first part file), aiohttp (the default transport
    is httptools'), pandas, rich (the display comes once the first shard is out), tenacity (the first retry
    loads it) or the parsing and validation of answers (the first answers do); and in a run process pandas is
    refused, yet pyarrow still converts lists."""
    import subprocess
    import sys

    code = ("import sys; import stepwise.pipeline.cli, stepwise.pipeline.run.job, stepwise.pipeline.run.local, "
            "stepwise.pipeline.teachers.openai_compat; "
            "from stepwise.pipeline.teachers.transport import import_transport; import_transport('httptools'); "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'pyarrow', 'aiohttp', 'pandas', 'numpy', "
            "'rich', 'tenacity'} | {m for m in sys.modules if m.startswith(('stepwise.pipeline.parsing', "
            "'stepwise.pipeline.validate'))})); "
            "from stepwise.pipeline.cli.jobs import refuse_pandas; refuse_pandas(); import pyarrow as pa; "
            "print(pa.array(['a', None]).to_pylist(), 'pandas' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.splitlines() == ["[]", "['a', None] False"]


def _completion(i: int):
    from stepwise.pipeline.types import Completion

    return Completion(f"k{i}", f"ex{i}", 0, "So the answer is 4.", tokens_in=10, tokens_out=5)


def test_the_bar_comes_at_the_start_and_counts_the_completions_reported_before_it():
    """The live bar is made when the job reports its start; completions reported earlier (the teacher's thread
    does not wait for it) are counted in it then."""
    from stepwise.pipeline.cli.console import Display

    display = Display("job", quiet=False)
    try:
        for i in range(3):
            display.completion(_completion(i), False)
        assert display.bar is None
        display.start(10, 1, True)
        display.completion(_completion(3), True)
        bar = display.bar
        assert bar is not None and bar.tokens == 4 * 15
        assert bar.progress.tasks[0].completed == 4 and bar.progress.tasks[0].total == 10
    finally:
        display.close()


def test_a_quiet_display_keeps_no_completion():
    """With --quiet there is no bar: completions are not held for one (a 10M-request job would keep them all)."""
    from stepwise.pipeline.cli.console import Display

    display = Display("job", quiet=True)
    for i in range(1000):
        display.completion(_completion(i), False)
    display.start(1000, 1, True)
    display.close()
    assert display.bar is None and display._early == []
