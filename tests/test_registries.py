"""One declaration per list: a task kind and an export format are added through their registries alone, one
module each, and the job schema, the CLI's choices and the REST API's enums offer them. The new module is imported
in a fresh process, so the registries of this one stay as they are."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.conftest import ROOT

KIND_MODULE = '''
"""A task kind of a user's own: the answer is a word, compared without regard to case."""
from stepwise.pipeline.tasks import Task, normalize_text


class WordTask(Task):
    kind = "one_word"

    def normalize_gold(self, gold, example):
        return normalize_text(gold)

    def extract(self, answer, example):
        words = normalize_text(answer).split()
        return words[0] if words else None
'''

FORMAT_MODULE = '''
"""An export format of a user's own: question and answer only, for a student without rationales."""
from stepwise.pipeline.exports import ExportFormat


def rows(record, label):
    return [{"question": record["input"], "answer": label}]


ExportFormat("qa_pairs", rows).register()
'''

PROBE = '''
import json, sys
sys.path.insert(0, sys.argv[1])
import my_kind, my_format  # the two modules, nothing else
from stepwise.api.app import create_app
from stepwise.api.settings import ServiceSettings
from stepwise.pipeline.cli import build_parser
from stepwise.pipeline.spec import JobSpec

def choices(parser, *path):
    for name in path:
        sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
        parser = sub.choices[name]
    return parser

spec = JobSpec.model_validate({"dataset": {"path": "d.jsonl"}, "task": "one_word", "prompt": "zero_shot_cot",
                               "teacher": {"backend": "replay", "path": "c.jsonl"}})
openapi = create_app(ServiceSettings(corpus=sys.argv[2])).openapi()
export_params = openapi["paths"]["/v1/jobs/{job_id}/export"]["get"]["parameters"]
print(json.dumps({
    "validated": spec.task.kind,
    "schema_kinds": JobSpec.model_json_schema()["$defs"]["TaskSpec"]["properties"]["kind"]["enum"],
    "cli_task": list(next(a for a in choices(build_parser(), "import", "dsbs")._actions if a.dest == "task").choices),
    "cli_format": list(next(a for a in choices(build_parser(), "export")._actions if a.dest == "format").choices),
    "rest_kinds": openapi["components"]["schemas"]["TaskSpec"]["properties"]["kind"]["enum"],
    "rest_formats": next(p for p in export_params if p["name"] == "format")["schema"]["enum"],
}))
'''


def test_a_task_kind_and_an_export_format_added_in_a_module_each_are_offered_everywhere(tmp_path):
    (tmp_path / "my_kind.py").write_text(textwrap.dedent(KIND_MODULE))
    (tmp_path / "my_format.py").write_text(textwrap.dedent(FORMAT_MODULE))
    proc = subprocess.run([sys.executable, "-c", PROBE, str(tmp_path), str(tmp_path / "corpus")],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    seen = json.loads(proc.stdout)
    assert seen["validated"] == "one_word"
    for where in ("schema_kinds", "cli_task", "rest_kinds"):
        assert "one_word" in seen[where] and "arithmetic" in seen[where], where
    for where in ("cli_format", "rest_formats"):
        assert "qa_pairs" in seen[where] and "finetune_cot" in seen[where], where


def test_without_the_modules_neither_is_offered():
    from stepwise.pipeline.exports import FORMATS
    from stepwise.pipeline.spec import JobSpec
    from stepwise.pipeline.tasks import TASKS

    assert "one_word" not in TASKS.names() and "qa_pairs" not in FORMATS.names()
    kinds = JobSpec.model_json_schema()["$defs"]["TaskSpec"]["properties"]["kind"]["enum"]
    assert "one_word" not in kinds and set(TASKS.names()) | {"auto"} == set(kinds)


def test_the_built_in_kinds_and_formats_come_from_their_modules():
    from stepwise.pipeline.exports import FORMATS
    from stepwise.pipeline.tasks import TASKS

    assert set(TASKS.names()) == {"multiple_choice", "nli", "arithmetic", "yes_no", "exact", "custom", "math"}
    assert set(FORMATS.names()) == {"dsbs", "finetune_cot", "chat", "chat_think", "parquet", "hf"}
    for name in FORMATS.names():  # one module per format, named after it
        assert (Path(ROOT) / "pipeline" / "exports" / f"{name}.py").is_file()
