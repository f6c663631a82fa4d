"""The student's data: records from an export or a corpus job, split by example, turned into training pairs.

A record is one accepted teacher sample (input, rationale, the teacher's label, the gold label). Splits are
assigned per *example* with the export module's seeded hash, so the samples of one question are never in both
the training and the test split. Each mode turns records into (source, target) pairs:

    standard   input -> label                              one pair per example
    multitask  predict: input -> label, explain: input -> rationale    one pair of each per record
    cot        input -> "<rationale> --> <label>"          one pair per record (several samples: diverse reasoning)

`label` is the gold or the teacher's label (`label_source`); the test split is always scored against gold.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.parquet as pq

from stepwise.pipeline.errors import DatasetError, TaskError, TrainerError
from stepwise.pipeline.exports import ARROW, EXPLAIN_PREFIX, PREDICT_PREFIX, SPLITS, accepted_records, assign_split
from stepwise.pipeline.spec import TaskSpec
from stepwise.pipeline.tasks import Task, build_task
from stepwise.pipeline.trainer.config import TrainConfig
from stepwise.pipeline.types import Example

REQUIRED = ("example_id", "input", "rationale", "gold_label", "teacher_label")
# columns of the other export formats, to say what is wrong when one of them is given
_OTHER_FORMATS = {"dsbs": {"task", "input", "target"}, "finetune_cot": {"prompt", "completion"},
                  "chat or chat_think": {"messages"}}


@dataclass(frozen=True, slots=True)
class Record:
    """One accepted sample of one example."""

    example_id: str
    sample_idx: int
    input: str
    rationale: str | None
    teacher_label: str | None
    gold_label: str | None


@dataclass(frozen=True, slots=True)
class Pair:
    source: str
    target: str


@dataclass
class TrainSet:
    """What one run trains on. `rationale` is set in multitask mode only and is aligned with `label` by index
    (the two tasks of the same record), so a batch carries both tasks of the same records."""

    label: list[Pair]
    rationale: list[Pair] | None
    examples: int
    skipped_no_label: int = 0
    skipped_no_rationale: int = 0


@dataclass(frozen=True, slots=True)
class EvalExample:
    """One test question, scored against its gold label. `example` is what the task's extract needs
    (choices recovered from the input)."""

    example_id: str
    input: str
    gold_label: str
    example: Example


@dataclass
class RunData:
    """Train records, test examples and the task that scores them."""

    train: list[Record]
    test: list[EvalExample]
    task: Task
    source: str
    test_skipped_no_gold: int = 0
    counts: dict[str, int] = field(default_factory=dict)


# ── reading ─────────────────────────────────────────────────────────────────────────────────────────────────────
def _check_columns(columns: set[str], path: Path) -> None:
    missing = [c for c in REQUIRED if c not in columns]
    if not missing:
        return
    for fmt, cols in _OTHER_FORMATS.items():
        if cols <= columns:
            raise DatasetError(f"{path} looks like a `{fmt}` export, which carries no gold labels to score the "
                               f"student with; export with --format parquet")
    raise DatasetError(f"{path}: missing column(s) {', '.join(missing)} (expected a `stepwise export --format "
                       f"parquet` file)")


def _record(row: dict) -> Record:
    return Record(str(row["example_id"]), int(row.get("sample_idx") or 0), row["input"], row["rationale"],
                  row["teacher_label"], row["gold_label"])


def read_export_file(path: Path) -> list[Record]:
    """Records of one export file: Parquet, or JSON lines with the same columns."""
    if path.suffix == ".parquet":
        try:
            table = pq.read_table(path)
        except OSError as exc:
            raise DatasetError(f"{path}: not a readable Parquet file ({exc})") from None
        _check_columns(set(table.column_names), path)
        rows = table.to_pylist()
    else:
        rows = []
        with path.open(encoding="utf-8") as fh:
            for n, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DatasetError(f"{path} line {n}: not JSON ({exc.msg})") from None
                if not isinstance(row, dict):
                    raise DatasetError(f"{path} line {n}: expected an object")
                _check_columns(set(row), path)
                rows.append(row)
    return [_record(r) for r in rows]


def _split_file(folder: Path, split: str) -> Path | None:
    found = [p for p in (folder / f"{split}.parquet", folder / f"{split}.jsonl") if p.is_file()]
    return found[0] if found else None


_HUB_SPLITS = {"train": "train", "validation": "valid", "test": "test"}  # an `hf` folder's split names -> ours


def _hub_files(folder: Path) -> dict[str, list[Path]]:
    """The part files of an `hf` export folder (data/<split>-00000-of-00001.parquet) by our split names."""
    found: dict[str, list[Path]] = {}
    for part in sorted((folder / "data").glob("*.parquet")):
        hub = part.name.split("-", 1)[0]
        if hub in _HUB_SPLITS:
            found.setdefault(_HUB_SPLITS[hub], []).append(part)
    return found


def read_export(path: Path, split: tuple[float, float, float], split_seed: int) -> dict[str, list[Record]]:
    """Records by split: a folder written by `stepwise export --split` keeps its split (valid is optional), and
    so does an `hf` folder; a single file, or an `hf` folder with one split, is split here by example, exactly
    as the export would have split it."""
    hub = _hub_files(path) if path.is_dir() else {}
    if hub:
        records = {s: [r for part in hub.get(s, []) for r in read_export_file(part)] for s in SPLITS}
        if set(hub) == {"train"}:  # exported without --split
            return split_records(records["train"], split, split_seed)
        if not records["train"] or "test" not in hub:
            raise DatasetError(f"{path}: an hf export folder needs its train and test splits")
        return records
    if path.is_dir():
        files = {s: _split_file(path, s) for s in SPLITS}
        if files["train"] is None or files["test"] is None:
            raise DatasetError(f"{path}: an export folder needs train and test files (.parquet or .jsonl)")
        return {s: read_export_file(p) if p else [] for s, p in files.items()}
    return split_records(read_export_file(path), split, split_seed)


def read_job(root: str, job_id: str, split: tuple[float, float, float], split_seed: int
             ) -> tuple[dict[str, list[Record]], TaskSpec]:
    """A job's accepted records by split, and its task (the kind the job resolved, with its label set).

    The test split holds *every* question of the job that falls in it, also those none of whose samples was
    accepted: with `require_correct` the accepted ones are the questions the teacher got right, and scoring the
    student only on those would flatter it."""
    from stepwise.storage.catalog import query
    from stepwise.storage.jobs import JobRegistry

    state = JobRegistry(root).get(job_id)  # also refuses an unsafe id before it goes into SQL below
    records = [Record(r["example_id"], r["sample_idx"], r["input"], r["rationale"], r["label"], r["gold_label"])
               for r in accepted_records(root, job_id)]
    spec = TaskSpec(kind="auto")
    if state is not None:
        spec = TaskSpec.model_validate(json.loads(state.spec_json)["task"])
        if state.task:
            spec = spec.model_copy(update={"kind": state.task})
    splits = split_records(records, split, split_seed)
    questions = query(root, f"SELECT example_id, any_value(input) AS input, any_value(gold_label) AS gold_label "
                            f"FROM records WHERE job_id = '{job_id}' AND input IS NOT NULL GROUP BY example_id "
                            f"ORDER BY example_id", max_rows=1 << 40, max_bytes=1 << 40).table.to_pylist()
    splits["test"] = [Record(q["example_id"], 0, q["input"], None, None, q["gold_label"]) for q in questions
                      if assign_split(q["example_id"], split, split_seed) == "test"]
    return splits, spec


def split_records(records: list[Record], split: tuple[float, float, float], seed: int) -> dict[str, list[Record]]:
    out: dict[str, list[Record]] = {s: [] for s in SPLITS}
    for r in records:
        out[assign_split(r.example_id, split, seed)].append(r)
    return out


# ── the task that scores the student ─────────────────────────────────────────────────────────────────────────────
def resolve_task(kind: str | None, job_task: TaskSpec | None, records: list[Record]) -> Task:
    """The task for scoring: --task, else the job's own, else inferred from the gold labels (an export)."""
    spec = job_task or TaskSpec(kind="auto")
    if kind is not None and kind != spec.kind:
        if kind == "custom" and not spec.labels:
            raise TaskError("--task custom needs the job's label set; this job has none")
        spec = TaskSpec(kind=kind, labels=spec.labels if kind == "custom" else None,
                        aliases=spec.aliases if kind == "custom" else {})
    sample = [Example(r.example_id, r.input, gold=r.gold_label) for r in records if r.gold_label is not None][:500]
    if spec.kind == "auto" and not sample:
        raise TrainerError("cannot infer the task kind: no record has a gold label; give --task")
    return build_task(spec, sample) if spec.kind == "auto" else build_task(spec)


# ── pairs ───────────────────────────────────────────────────────────────────────────────────────────────────────
def _fraction_key(seed: int, example_id: str) -> bytes:
    return hashlib.sha256(f"fraction:{seed}:{example_id}".encode()).digest()


def take_fraction(records: list[Record], fraction: float, seed: int) -> list[Record]:
    """The records of the first `fraction` of the examples in a seeded hash order: a smaller fraction is a subset
    of a larger one, so the points of a data-efficiency curve differ only in how much data they saw."""
    if fraction >= 1.0:
        return list(records)
    ids = sorted({r.example_id for r in records}, key=lambda e: _fraction_key(seed, e))
    keep = set(ids[:max(1, round(fraction * len(ids)))])
    return [r for r in records if r.example_id in keep]


def _label(record: Record, label_source: str) -> str | None:
    return record.gold_label if label_source == "gold" else record.teacher_label


def build_train_set(records: list[Record], mode: str, label_source: str) -> TrainSet:
    """(source, target) pairs for one mode; records without the label (or rationale) the mode needs are skipped
    and counted."""
    usable, no_label, no_rationale = [], 0, 0
    for r in records:
        if _label(r, label_source) is None:
            no_label += 1
        elif mode != "standard" and not r.rationale:
            no_rationale += 1
        else:
            usable.append(r)
    examples = len({r.example_id for r in usable})
    if mode == "standard":
        # label only: one pair per example; with several samples the teacher's most frequent label (the first
        # sample's on a tie), so an example is not weighted by how many samples it kept
        by_example: dict[str, list[Record]] = {}
        for r in usable:
            by_example.setdefault(r.example_id, []).append(r)
        label = []
        for rs in by_example.values():
            votes = Counter(_label(r, label_source) for r in rs)
            top = max(votes.values())
            winner = next(_label(r, label_source) for r in rs if votes[_label(r, label_source)] == top)
            label.append(Pair(rs[0].input, winner))
        return TrainSet(label, None, examples, no_label, no_rationale)
    if mode == "multitask":
        label = [Pair(PREDICT_PREFIX + r.input, _label(r, label_source)) for r in usable]
        rationale = [Pair(EXPLAIN_PREFIX + r.input, r.rationale) for r in usable]
        return TrainSet(label, rationale, examples, no_label, no_rationale)
    return TrainSet([Pair(r.input, cot_target(r.rationale, _label(r, label_source))) for r in usable], None,
                    examples, no_label, no_rationale)


def cot_target(rationale: str, label: str) -> str:
    """Fine-tune-CoT's target: the reasoning, the arrow, the answer."""
    return f"{rationale.strip()} {ARROW} {label}"


def source_text(mode: str, text: str) -> str:
    """What the student reads at test time: multitask predicts with the `predict:` prefix."""
    return PREDICT_PREFIX + text if mode == "multitask" else text


def eval_examples(records: list[Record], task: Task) -> tuple[list[EvalExample], int]:
    """One test example per question, with its gold label normalised by the task; those without gold are
    counted, not scored."""
    seen: set[str] = set()
    out, no_gold = [], 0
    for r in records:
        if r.example_id in seen:
            continue
        seen.add(r.example_id)
        if r.gold_label is None:
            no_gold += 1
            continue
        example = task.prepare(Example(r.example_id, r.input, gold=r.gold_label))
        try:
            gold = task.normalize_gold(r.gold_label, example)
        except ValueError:
            no_gold += 1
            continue
        out.append(EvalExample(r.example_id, r.input, gold, example))
    return out, no_gold


def load_data(config: TrainConfig) -> RunData:
    """Train records (the configured fraction) and gold-labelled test examples, with the scoring task."""
    if config.export is not None:
        source = f"export {config.export}"
        splits = read_export(Path(config.export), config.split, config.split_seed)
        job_task = None
    else:
        source = f"corpus {config.corpus} job {config.job}"
        splits, job_task = read_job(config.corpus, config.job, config.split, config.split_seed)
    everything = splits["train"] + splits["valid"] + splits["test"]
    if not everything:
        raise TrainerError(f"{source}: no accepted records")
    task = resolve_task(config.task, job_task, everything)
    test, no_gold = eval_examples(splits["test"], task)
    if not test:
        raise TrainerError(f"{source}: the test split has no example with a gold label to score the student "
                           f"({len(splits['test'])} records in it)")
    train = take_fraction(splits["train"], config.fraction, config.seed)
    if not train:
        raise TrainerError(f"{source}: the training split is empty")
    counts = {s: len(rs) for s, rs in splits.items()}
    return RunData(train, test, task, source, no_gold, counts)
