"""`hf`: a Hugging Face dataset folder, read as it is by the Hub and by `datasets.load_dataset(DIR)`: one
`data/<split>-00000-of-00001.parquet` per split with rows (`valid` is named `validation`, the name `datasets`
and its users expect) and a `README.md` dataset card: YAML front matter the Hub reads (task categories, size
category, tags, `configs` naming each split's file; the license is left for the user) and a body with the job's
provenance, so a reader of the published data knows which teacher wrote it, how it was filtered and what each
column means. Nothing secret goes into the card: the spec holds environment-variable names only, and of a
teacher's base URL only scheme, host, port and path are kept.

`push_to_hub` uploads such a folder (the `hub` extra: huggingface_hub)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from types import ModuleType
from urllib.parse import urlsplit

import pyarrow as pa
import yaml

from stepwise.pipeline.errors import StepwiseError
from stepwise.pipeline.exports.base import EXPORT_SCHEMA, ExportFormat, FolderExport
from stepwise.storage.jobs import JobRegistry, JobState
from stepwise.storage.parquet import write_table_atomic

HUB_SPLITS = {"train": "train", "valid": "validation", "test": "test"}  # stepwise's split -> the dataset's
HF_SCHEMA = EXPORT_SCHEMA.append(pa.field("reasoning", pa.string())).append(pa.field("gold_rationale", pa.string()))
TAGS = ["distillation", "chain-of-thought", "rationales", "synthetic", "stepwise"]
# what a task kind is, in the Hub's task categories (every corpus also teaches a student to write text)
TASK_CATEGORIES = {"multiple_choice": ["multiple-choice", "question-answering"],
                   "arithmetic": ["question-answering"], "math": ["question-answering"],
                   "exact": ["question-answering"], "nli": ["text-classification"],
                   "yes_no": ["text-classification", "question-answering"], "custom": ["text-classification"]}
# the Hub's size buckets (huggingface.co/docs/hub/datasets-cards): the first whose bound is above the rows
SIZE_BUCKETS = [(10**3, "n<1K"), (10**4, "1K<n<10K"), (10**5, "10K<n<100K"), (10**6, "100K<n<1M"),
                (10**7, "1M<n<10M"), (10**8, "10M<n<100M"), (10**9, "100M<n<1B"), (10**10, "1B<n<10B"),
                (10**11, "10B<n<100B"), (10**12, "100B<n<1T")]
HUB_EXTRA = "pushing to the Hub needs the hub extra (huggingface_hub): pip install 'stepwise-distill[hub]'"


def rows(r: dict, label: str) -> list[dict]:
    """The `parquet` format's row plus the thinking trace and the dataset's own solution."""
    return [{"example_id": r["example_id"], "sample_idx": r["sample_idx"], "input": r["input"],
             "rationale": r["rationale"], "label": label, "gold_label": r["gold_label"], "teacher_label": r["label"],
             "reasoning": r.get("reasoning"), "gold_rationale": r.get("gold_rationale")}]


def data_file(split: str) -> str:
    """A split's file, relative to the folder (one shard, named as `datasets` and the Hub name them)."""
    return f"data/{HUB_SPLITS[split]}-00000-of-00001.parquet"


def stepwise_version() -> str:
    """The installed distribution's version (`stepwise.__version__`, which this layer may not import: the
    top-level package sits above every layer)."""
    try:
        return metadata.version("stepwise-distill")
    except metadata.PackageNotFoundError:
        return "unknown (not installed)"


def size_category(n: int) -> str:
    return next((name for bound, name in SIZE_BUCKETS if n < bound), "n>1T")


def endpoint(url: str | None) -> str | None:
    """A base URL fit to publish: scheme, host, port and path; no `user:password@`, query or fragment (where
    credentials hide)."""
    if not url:
        return None
    parts = urlsplit(url)
    if not parts.hostname:
        return None
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{parts.hostname}{port}{parts.path}"


@dataclass
class Provenance:
    """What the card says of the job: its registry row (None when the corpus has records but no row) and spec,
    and counters over all its records, read from the corpus (the durable truth)."""

    state: JobState | None
    spec: dict
    examples: int = 0
    records: int = 0
    accepted: int = 0
    correct: int = 0
    with_gold: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float | None = None
    reject_reasons: dict[str, int] = field(default_factory=dict)

    @property
    def accuracy(self) -> float | None:
        """The teacher's accuracy over the records with a gold label, as `stepwise run` reports it."""
        return self.correct / self.with_gold if self.with_gold else None


def provenance(root: str | Path, job_id: str) -> Provenance:
    """The job's registry row and spec, and its counters in one pass over its records in DuckDB (this layer
    sits below `pipeline.run`, whose `summarize` counts the same)."""
    state = JobRegistry(root).get(job_id)
    try:
        spec = json.loads(state.spec_json) if state else {}
    except json.JSONDecodeError:
        spec = {}
    from stepwise.storage.catalog import connect  # DuckDB: imported by the export that uses it

    con = connect(root)
    try:
        (examples, records, accepted, correct, with_gold, tokens_in, tokens_out, cost) = con.execute(
            "SELECT count(DISTINCT example_id), count(*), count(*) FILTER (WHERE accepted), "
            "count(*) FILTER (WHERE correct), count(gold_label), coalesce(sum(tokens_in), 0), "
            "coalesce(sum(tokens_out), 0), sum(cost_usd) FROM records WHERE job_id = ?", [job_id]).fetchone()
        reasons = con.execute("SELECT reject_reason, count(*) FROM records WHERE job_id = ? AND NOT accepted "
                              "GROUP BY 1 ORDER BY 2 DESC, 1", [job_id]).fetchall()
    finally:
        con.close()
    return Provenance(state, spec if isinstance(spec, dict) else {}, examples, records, accepted, correct,
                      with_gold, int(tokens_in), int(tokens_out), None if cost is None else float(cost),
                      {str(reason): n for reason, n in reasons})


def front_matter(job_id: str, kind: str | None, splits: dict[str, list[dict]]) -> str:
    """The card's YAML header; the license is a comment for the user to fill, never a guess."""
    meta = {
        "pretty_name": f"{job_id} (stepwise rationale corpus)",
        "task_categories": [*TASK_CATEGORIES.get(kind or "", []), "text-generation"],
        "size_categories": [size_category(sum(len(r) for r in splits.values()))],
        "tags": TAGS,
        "configs": [{"config_name": "default",
                     "data_files": [{"split": HUB_SPLITS[s], "path": data_file(s)} for s in splits]}],
    }
    return ("---\n"
            "# license: fill this in before you publish (e.g. cc-by-4.0, or other). The rows are your dataset's\n"
            "# inputs and your teacher's outputs; their terms decide it, and stepwise cannot know them.\n"
            f"{yaml.safe_dump(meta, sort_keys=False, allow_unicode=True)}---\n")


def _yaml_block(value: dict) -> str:
    """A spec block as YAML, without unset (null or empty) fields."""
    shown = {k: v for k, v in value.items() if v not in (None, [], {})}
    return "```yaml\n" + yaml.safe_dump(shown, sort_keys=False, allow_unicode=True) + "```" if shown else "(defaults)"


def _columns(label_source: str, gold_rationale: bool) -> list[tuple[str, str]]:
    label = ("the teacher's answer (distillation)" if label_source == "teacher"
             else "the dataset's gold answer (standard fine-tuning on the teacher's rationales)")
    columns = [
        ("example_id", "the example's id in the source dataset; its samples share it and never straddle splits"),
        ("sample_idx", "which of the teacher's samples of the example (0, 1, ...)"),
        ("input", "the question as the teacher saw it (answer choices included)"),
        ("rationale", "the reasoning the student learns from (the job's `rationale` choice)"),
        ("label", f"the answer to train on: {label}"),
        ("gold_label", "the dataset's answer; null when the dataset has none"),
        ("teacher_label", "the answer the teacher gave"),
        ("reasoning", "the teacher's thinking trace (reasoning models); null without one"),
    ]
    if gold_rationale:
        columns.append(("gold_rationale", "the dataset's own reference solution; null where it has none"))
    return columns


def _teacher_line(p: Provenance) -> str:
    teacher = p.spec.get("teacher") or {}
    model = (p.state.teacher_model if p.state else None) or teacher.get("model") or "not recorded"
    backend = (p.state.teacher_backend if p.state else None) or teacher.get("backend") or "not recorded"
    url = endpoint(teacher.get("base_url"))
    return f"`{model}` (backend `{backend}`" + (f", endpoint `{url}`)" if url else ")")


def card_body(export: FolderExport, p: Provenance, gold_rationale: bool) -> str:
    """The card's Markdown: what the data is, how to load it, what each column means, and where it came from."""
    state, spec = p.state, p.spec
    kind = (state.task if state else None) or (spec.get("task") or {}).get("kind")
    prompt = spec.get("prompt") or {}
    prompt_id = (state.prompt_id if state else None) or prompt.get("id") or "not recorded"
    prompt_hash = (state.prompt_hash if state else None) or "not recorded"
    split_rule = ("one, `train` (exported without `--split`)." if export.split is None else
                  f"train / validation / test fractions {', '.join(f'{x:g}' for x in export.split)}, seed "
                  f"{export.seed}, assigned per example by a seeded hash of its id, so the samples of one question "
                  f"are all in one split. A split that got no rows has no file.")
    accuracy = (f"{p.accuracy:.2%} ({p.correct:,} of {p.with_gold:,} records with a gold label)"
                if p.accuracy is not None else "no gold labels to score against")
    cost = f"${p.cost_usd:,.4f}" if p.cost_usd is not None else "not priced (the job has no `cost` block)"
    acceptance = (f"{p.accepted:,} of {p.records:,} records ({p.accepted / p.records:.1%})" if p.records
                  else "no records")
    lines = [
        f"# {export.job_id}",
        "",
        f"Chain-of-thought rationales written by the teacher model {_teacher_line(p)} for the "
        f"`{kind or 'unknown'}` task, parsed, checked and filtered by stepwise to distill the teacher into a "
        "smaller student. Each row is one accepted sample of the teacher; rejected samples are not in the data, "
        "and their reasons are counted below.",
        "",
        "## Load it",
        "",
        "```python",
        "from datasets import load_dataset",
        "",
        'ds = load_dataset("path/to/this/folder")  # or the Hub repo id, e.g. "user/name"',
        "```",
        "",
        "| split | rows | file |",
        "|---|---|---|",
        *(f"| {HUB_SPLITS[s]} | {len(r):,} | `{data_file(s)}` |" for s, r in export.splits.items()),
        "",
        f"Splits: {split_rule}",
        "",
        "## Columns",
        "",
        "| column | meaning |",
        "|---|---|",
        *(f"| `{name}` | {meaning} |" for name, meaning in _columns(export.label_source, gold_rationale)),
        "",
        "## Provenance",
        "",
        "| | |",
        "|---|---|",
        f"| job | `{export.job_id}`, status `{state.status if state else 'not recorded'}` |",
        f"| job fingerprint | `{state.fingerprint if state and state.fingerprint else 'not recorded'}` |",
        f"| teacher | {_teacher_line(p)} |",
        f"| prompt | `{prompt_id}`, hash `{prompt_hash}` |",
        f"| task | `{kind or 'not recorded'}` |",
        f"| rationale | `{spec.get('rationale', 'not recorded')}` |",
        f"| labels trained on | `{export.label_source}` |",
        f"| examples | {p.examples:,} |",
        f"| accepted | {acceptance} |",
        f"| teacher accuracy | {accuracy} |",
        f"| tokens in / out | {p.tokens_in:,} / {p.tokens_out:,} |",
        f"| cost | {cost} |",
        f"| stepwise version | `{stepwise_version()}` |",
        "",
        "### Sampling",
        "",
        _yaml_block(spec.get("sampling") or {}) if spec else "not recorded",
        "",
        "### Filters",
        "",
        _yaml_block(spec.get("filters") or {}) if spec else "not recorded",
        "",
        "### Rejected samples",
        "",
        *((["| reason | records |", "|---|---|", *(f"| `{r}` | {n:,} |" for r, n in p.reject_reasons.items())])
          if p.reject_reasons else ["None."]),
        "",
        "## License",
        "",
        "Not set: fill in the `license` field of the header before publishing. The inputs come from the source "
        "dataset and the rationales from the teacher; both may have terms of their own.",
        "",
    ]
    if state is None:
        lines[2:2] = ["The job's registry row is missing from the corpus: teacher, prompt and spec are not "
                      "recorded here.", ""]
    return "\n".join(lines)


def _write_text(text: str, path: Path) -> None:
    """Written to a temp file and renamed into place, like every export file."""
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def write_folder(export: FolderExport) -> None:
    """The split files (a split's file from an earlier export is removed when it has no rows now: the card
    would not name it, and the Hub would still show it) and the card."""
    all_rows = [r for split_rows in export.splits.values() for r in split_rows]
    gold_rationale = any(r["gold_rationale"] is not None for r in all_rows)
    schema = HF_SCHEMA if gold_rationale else HF_SCHEMA.remove(HF_SCHEMA.get_field_index("gold_rationale"))
    for split in HUB_SPLITS:
        path = export.out / data_file(split)
        if split in export.splits:
            write_table_atomic(pa.Table.from_pylist(export.splits[split], schema=schema), path)
        else:
            path.unlink(missing_ok=True)
    p = provenance(export.root, export.job_id)
    kind = (p.state.task if p.state else None) or (p.spec.get("task") or {}).get("kind")
    card = front_matter(export.job_id, kind, export.splits) + "\n" + card_body(export, p, gold_rationale)
    _write_text(card, export.out / "README.md")


def push_to_hub(folder: str | Path, repo_id: str, job_id: str) -> str:
    """Upload an `hf` export folder to the dataset repo `repo_id` (created private when it does not exist: the
    card's license is still to be filled), with the token huggingface_hub finds (HF_TOKEN, or `hf auth login`).
    Returns the commit's URL."""
    hub = import_hub()
    api = hub.HfApi()
    try:
        api.create_repo(repo_id, repo_type="dataset", private=True, exist_ok=True)
        info = api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="dataset",
                                 commit_message=f"stepwise export of job {job_id}",
                                 ignore_patterns=[".*", "**/.*"])  # a crashed write's temp files
    except Exception as exc:  # the Hub's HTTP and auth errors, said as ours (they carry no token)
        raise StepwiseError(f"pushing {folder} to the Hub dataset {repo_id!r} failed: {exc}") from None
    return str(getattr(info, "commit_url", info))


def import_hub() -> ModuleType:
    """huggingface_hub, or an error naming the extra that brings it."""
    try:
        import huggingface_hub
    except ImportError:
        raise StepwiseError(HUB_EXTRA) from None
    return huggingface_hub


FORMAT = ExportFormat("hf", rows, folder=write_folder).register()
