"""stepwise: rationale corpora for distilling large language models into small ones.

A job sends examples to a teacher (an OpenAI-compatible server, vLLM, the Batch API, or recorded completions),
parses and validates its chains of thought into label / rationale records, and keeps every record, accepted or
rejected with its reason, in a Parquet corpus queried with DuckDB. The Python API is what the `stepwise` command
runs:

    import stepwise

    summary = stepwise.run("job.yaml", corpus="corpus")         # a job file, a dict or a JobSpec; resumes
    print(summary.status, summary.n_accepted)
    table = stepwise.query("SELECT reject_reason, count(*) AS n FROM records GROUP BY 1", corpus="corpus").table
    stepwise.export("my-job", "finetune_cot", "train.jsonl", corpus="corpus")
    metrics = stepwise.train(out="student", corpus="corpus", job="my-job", mode="cot")   # the `train` extra
    with stepwise.simulator("--dataset", "problems.jsonl") as base_url:   # a stand-in teacher on loopback
        ...

`run` blocks until the job ends and works inside a running event loop (a notebook cell): the teacher's engine has
an event loop of its own, on its own thread; `await stepwise.arun(...)` runs the job without blocking the loop.
Errors are `stepwise.StepwiseError` subclasses; a job file's mistakes are `stepwise.JobSpecError`, naming the field.
New task kinds and export formats are registered where they are defined (`Task` subclasses with a `kind`,
`ExportFormat(...).register()`), and the job schema, the CLI and the REST API offer them.
"""

from __future__ import annotations

import os as _os
from pathlib import Path
from typing import TYPE_CHECKING, Any

# The repository keeps the user's top-level folders (pipeline/, prompts/, storage/, api/) beside this package;
# installed, they live inside it. Either way they import as stepwise.pipeline, stepwise.storage, ...: from a
# source checkout this package also looks for its subpackages one folder up.
_here = _os.path.dirname(_os.path.abspath(__file__))
if not _os.path.isdir(_os.path.join(_here, "pipeline")):
    __path__.append(_os.path.dirname(_here))  # type: ignore[name-defined]

from stepwise.pipeline.errors import JobSpecError, StepwiseError  # noqa: E402  (after __path__ is complete)

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

    from stepwise.pipeline.exports import ExportSummary
    from stepwise.pipeline.run.summary import JobSummary
    from stepwise.pipeline.spec import JobSpec
    from stepwise.storage.catalog import QueryResult

__all__ = ["JobSpecError", "StepwiseError", "arun", "export", "load_job", "query", "run", "simulator", "train"]
__version__ = "0.1.0"

def load_job(job: str | Path | dict | JobSpec, overrides: list[str] | None = None) -> JobSpec:
    """A validated JobSpec from a job file (YAML or JSON), a dict in the job-file schema, or a JobSpec.
    `overrides` are `field=value` strings, as `stepwise run --set` takes them."""
    from stepwise.pipeline.spec import JobSpec, apply_overrides, load_job as load_file, parse_job

    if isinstance(job, JobSpec):
        return job if not overrides else parse_job(apply_overrides(job.model_dump(mode="json"), overrides, "job"))
    if isinstance(job, dict):
        return parse_job(apply_overrides(dict(job), overrides or [], "job"), base_dir=Path.cwd())
    return load_file(job, overrides=overrides)


def run(job: str | Path | dict | JobSpec, corpus: str | Path = "corpus", *, overwrite: bool = False,
        progress: bool = False) -> JobSummary:
    """Run (or resume) a job to the end and return its summary: `status` (completed, failed, budget_exhausted,
    cancelled), `message`, counters and reject reasons. `progress` shows the command line's progress bar."""
    from stepwise.pipeline.run.job import run_job

    spec = load_job(job)
    if not progress:
        return run_job(spec, corpus, overwrite=overwrite)
    from stepwise.pipeline.cli.console import Bar

    with Bar(spec.job_id or "job", quiet=False) as bar:
        return run_job(spec, corpus, overwrite=overwrite, progress=bar)


async def arun(job: str | Path | dict | JobSpec, corpus: str | Path = "corpus", **kwargs: Any) -> JobSummary:
    """`run`, awaited on a worker thread: the calling event loop stays free while the job runs."""
    import asyncio

    return await asyncio.to_thread(run, job, corpus, **kwargs)


def query(sql: str, corpus: str | Path = "corpus", **caps: Any) -> QueryResult:
    """One read-only SELECT over the `records` and `jobs` views; `.table` is a pyarrow Table, `.truncated` says
    whether a cap cut it. Caps: `max_rows`, `max_bytes`, `timeout_s`."""
    from stepwise.storage.catalog import query as run_query

    return run_query(corpus, sql, **caps)


def export(job_id: str, format: str, out: str | Path, corpus: str | Path = "corpus", **options: Any) -> ExportSummary:
    """Write a job's accepted records for a student: `format` one of the registered formats (dsbs, finetune_cot,
    chat, parquet, ...). Options: `label_source` ("teacher" or "gold"), `split` ((0.8, 0.1, 0.1): `out` becomes a
    folder of train/valid/test files), `seed`."""
    from stepwise.pipeline.exports import export_job

    return export_job(corpus, job_id, format, out, **options)


def train(**config: Any) -> dict:
    """Train a T5 student and score it on gold (the `train` extra); the fields of `TrainConfig` (out, corpus and
    job or export, mode, model, steps, ...). Returns the metrics written to metrics.json."""
    from stepwise.pipeline.trainer import TrainConfig, main

    return main(TrainConfig(**config))


def simulator(*flags: str) -> AbstractContextManager[str]:
    """The teacher simulator (`stepwise sim` flags) in a subprocess on a free loopback port, as a context manager
    that yields its base URL (`teacher.base_url`); a test and demo tool, never a real teacher."""
    from stepwise.pipeline.sim import running_simulator

    return running_simulator(*flags)
