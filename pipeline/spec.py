"""`JobSpec`: the one job schema used by YAML job files, the CLI and (later) the REST API.

Validation happens when a spec is built and every error names its field (`dataset.path: Field required`).
Secrets are never part of a spec: a teacher refers to an API key by environment-variable *name*.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Union, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from stepwise.pipeline.errors import JobSpecError
from stepwise.pipeline.tasks import TASKS
from stepwise.pipeline.yamlfile import read_yaml
from stepwise.pipeline.types import JOB_ID_RULE, is_job_id

TaskKind = TASKS.field("auto")  # a registered task kind (pipeline/tasks), or `auto`: inferred from the data
# executor kinds, each with the class that runs it (imported when a job uses it: `ray` is an extra)
EXECUTORS = {"local": "stepwise.pipeline.run.local:LocalExecutor",
             "ray": "stepwise.pipeline.run.ray_executor:RayExecutor"}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatasetSpec(_Strict):
    """Where the examples come from and which fields mean what."""

    path: str = Field(description="JSONL, JSON (array), CSV or Parquet file")
    format: Literal["auto", "jsonl", "json", "csv", "parquet"] = "auto"
    id_field: str | None = Field(None, description="stable id column; else a hash of the row's content")
    question_field: str = Field("question", description="the question / input text")
    answer_field: str | None = Field(None, description="gold answer; leave unset for unlabeled data")
    choices_field: str | None = Field(None, description="list of answer choices (multiple_choice)")
    premise_field: str | None = Field(None, description="premise column (nli); input is premise + hypothesis")
    hypothesis_field: str | None = Field(None, description="hypothesis column (nli)")
    limit: int | None = Field(None, gt=0, description="read at most this many rows")
    max_row_bytes: int = Field(1_000_000, gt=0, description="rows larger than this are rejected as bad rows")

    @model_validator(mode="after")
    def _pair(self) -> DatasetSpec:
        if (self.premise_field is None) != (self.hypothesis_field is None):
            raise ValueError("premise_field and hypothesis_field go together")
        return self


class TaskSpec(_Strict):
    """A task kind, optionally with a custom label set and answer pattern."""

    kind: TaskKind
    labels: list[str] | None = Field(None, description="label set (required for kind: custom)")
    ignore_whitespace: bool = Field(False, description="exact: white space inside an answer does not count "
                                                       "('n a o a' is 'naoa')")
    aliases: dict[str, str] = Field(default_factory=dict, description="answer text -> label")
    answer_pattern: str | None = Field(None, description="regex; group 1 (else the match) is the answer")

    @field_validator("answer_pattern")
    @classmethod
    def _compiles(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                re.compile(v)
            except re.error as exc:
                raise ValueError(f"not a valid regular expression: {exc}") from None
        return v

    @model_validator(mode="after")
    def _labels(self) -> TaskSpec:
        if self.kind == "custom" and not self.labels:
            raise ValueError("kind 'custom' needs a non-empty 'labels' list")
        if self.labels is not None and self.kind != "custom":
            raise ValueError(f"'labels' is only for kind 'custom' (kind {self.kind!r} has its own)")
        for alias, label in self.aliases.items():
            if self.labels is not None and label not in self.labels:
                raise ValueError(f"alias {alias!r} maps to {label!r}, which is not in labels")
        return self


class PromptSpec(_Strict):
    """A built-in prompt id, or a template file of your own."""

    id: str = Field(description="few_shot_cot, zero_shot_cot, structured_json, rationalize, or your own name")
    path: str | None = Field(None, description="a template file (YAML) to use instead of the built-in one")


# body fields the engine writes itself: `extra_body` may not set them (it would change a request behind the
# cache key's back, or break the protocol)
RESERVED_BODY_FIELDS = frozenset({"model", "messages", "n", "temperature", "top_p", "max_tokens", "seed", "stop",
                                  "stream", "reasoning_effort", "max_completion_tokens", "chat_template_kwargs",
                                  "response_format", "structured_outputs", "guided_json", "logprobs"})


class SamplingSpec(_Strict):
    """Sampling parameters, with their OpenAI names. `n` is the number of samples per example."""

    n: int = Field(1, ge=1, le=128)
    temperature: float = Field(0.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    max_tokens: int = Field(512, ge=1, le=262144)
    seed: int | None = None
    stop: list[str] = Field(default_factory=list, max_length=4)
    stop_after_accepted: int | None = Field(None, ge=1, description=(
        "ask for samples in rounds and stop an example once this many are accepted (correct when there is gold, "
        "and past every filter); at most n are ever asked for"))
    reasoning_effort: Literal["minimal", "low", "medium", "high"] | None = Field(
        None, description="hosted reasoning models (OpenAI o-series, gpt-oss on vLLM)")
    max_completion_tokens: int | None = Field(None, ge=1, le=262144, description=(
        "sent instead of max_tokens (hosted reasoning models refuse max_tokens); it bounds trace and answer"))
    chat_template_kwargs: dict[str, Any] = Field(default_factory=dict, description=(
        "passed to the server's chat template, e.g. {enable_thinking: true} for Qwen3 on vLLM or SGLang"))
    extra_body: dict[str, Any] = Field(default_factory=dict, description=(
        "more fields for the request body, as they are (part of the cache key); the fields stepwise sets itself "
        "are refused"))

    @model_validator(mode="after")
    def _reasoning(self) -> SamplingSpec:
        if self.stop_after_accepted is not None and self.stop_after_accepted > self.n:
            raise ValueError(f"stop_after_accepted ({self.stop_after_accepted}) is more than n ({self.n})")
        taken = sorted(RESERVED_BODY_FIELDS & set(self.extra_body))
        if taken:
            raise ValueError(f"extra_body may not set {', '.join(taken)}: use the sampling field of that name")
        for name in ("chat_template_kwargs", "extra_body"):
            try:
                json.dumps(getattr(self, name), allow_nan=False)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"{name} must be plain JSON: {exc}") from None
        return self

    @property
    def budget(self) -> int:
        """The most tokens one sample may generate."""
        return self.max_completion_tokens or self.max_tokens


class FilterSpec(_Strict):
    """Which parsed records are accepted. Rejected ones are kept, with their reason."""

    require_correct: bool = Field(True, description="reject labels that disagree with gold (when gold exists)")
    self_consistency: bool = Field(False, description="reject samples that disagree with the majority label")
    min_agreement: float = Field(0.0, ge=0.0, le=1.0, description="reject all samples below this agreement")
    min_rationale_chars: int = Field(1, ge=0)
    max_rationale_chars: int = Field(8000, ge=1)
    dedupe: bool = Field(True, description="reject exact duplicate rationales among an example's samples")
    # reasoning traces (each a reject reason with a precise detail)
    min_reasoning_chars: int = Field(0, ge=0, description="reject traces shorter than this")
    max_reasoning_chars: int | None = Field(None, ge=1, description="reject traces longer than this")
    max_reasoning_tokens: int | None = Field(None, ge=1, description="reject traces of more tokens (usage)")
    max_repetition: float | None = Field(None, gt=0.0, le=1.0, description=(
        "reject traces whose share of repeated word n-grams passes this (a loop)"))
    max_foreign_script: float | None = Field(None, gt=0.0, le=1.0, description=(
        "reject traces whose share of letters outside the prompt's script passes this (language mixing)"))
    reject_contradiction: bool = Field(False, description=(
        "reject a final answer that contradicts the trace's own last conclusion (always recorded as trace_label)"))

    @model_validator(mode="after")
    def _bounds(self) -> FilterSpec:
        if self.min_rationale_chars > self.max_rationale_chars:
            raise ValueError("min_rationale_chars is larger than max_rationale_chars")
        return self


class _Teacher(_Strict):
    """What every teacher block has: how its thinking trace is found in what it answers."""

    reasoning: Literal["auto", "inline", "prefilled", "none"] = Field("auto", description=(
        "auto: the server's own field (message.reasoning / reasoning_content) when it sends one, else a "
        "<think>...</think> block in the content, else no trace; inline: the trace is tagged in the content (an "
        "opening tag without its closing one is an unfinished trace); prefilled: the chat template opened the "
        "trace (R1-Distill, QwQ), so the text starts inside it and only the closing tag appears; none: never split"))
    think_tags: tuple[str, str] = Field(("<think>", "</think>"), description="the tags around an inline trace")

    @field_validator("think_tags")
    @classmethod
    def _tags(cls, v: tuple[str, str]) -> tuple[str, str]:
        if not v[0].strip() or not v[1].strip() or v[0] == v[1]:
            raise ValueError("think_tags are two different, non-blank tags, e.g. ['<think>', '</think>']")
        return v


class ReplayTeacherSpec(_Teacher):
    """Serves recorded completions (JSONL or Parquet: example_id, sample_idx, text, finish_reason, usage)."""

    factory: ClassVar[str] = "stepwise.pipeline.teachers.replay:ReplayBackend"

    backend: Literal["replay"]
    path: str
    model: str = Field("replay", description="teacher model name recorded with each record")


class OpenAITeacherSpec(_Teacher):
    """Any OpenAI-compatible chat completions server: OpenAI, `vllm serve`, SGLang, llama.cpp, Ollama.

    The API key is read from the environment variable *named* by `api_key_env`; it is never stored.
    """

    factory: ClassVar[str] = "stepwise.pipeline.teachers.openai_compat:OpenAIBackend"

    backend: Literal["openai"]
    model: str = Field(min_length=1)
    base_url: str = Field("https://api.openai.com/v1", description="the server's /v1 root")
    api_key_env: str | None = Field("OPENAI_API_KEY", description="name of the env var holding the key; "
                                                                   "null for servers without auth")
    transport: Literal["httptools", "aiohttp", "openai_sdk"] = Field(
        "httptools", description="httptools: keep-alive HTTP/1.1 pool, the least CPU per request; aiohttp: "
                                 "aiohttp's client (redirects, compressed responses); openai_sdk: the openai "
                                 "package's client")
    max_concurrency: int = Field(64, ge=1, le=4096, description="requests in flight at most (adaptive below)")
    rpm: int | None = Field(None, ge=1, description="client-side requests-per-minute budget")
    tpm: int | None = Field(None, ge=1, description="client-side tokens-per-minute budget")
    timeout_s: float | None = Field(None, gt=0, description=(
        "per-request timeout; a stalled request is retried. Default: 120 s plus the request's output limit "
        "(max_completion_tokens, else max_tokens) at 20 tokens/s, so about 146 s for 512 tokens and 29 min for "
        "32,768"))
    max_attempts: int = Field(6, ge=1, le=50, description="attempts per request for transient errors")
    supports_n: bool = Field(True, description="ask for all samples of an example in one request (n)")
    structured_output: Literal["response_format", "structured_outputs", "guided_json"] = Field(
        "response_format", description="how JSON-mode prompts pass their schema: OpenAI response_format (also "
                                       "understood by vLLM), vLLM >= 0.12 structured_outputs, or the older "
                                       "vLLM guided_json")
    request_id_headers: bool = Field(False, description="send X-Stepwise-Example-Id, -Sample-Idx and -Request-Keys "
                                                        "headers: bookkeeping for the stepwise simulator, never "
                                                        "needed by a real provider")
    cache_namespace: str | None = Field(None, min_length=1, max_length=200, description=(
        "completions are cached per endpoint (base_url); endpoints that serve the same weights share cached "
        "completions when they name the same namespace"))
    profile: str | None = Field(None, description="a teacher profile of the REST service (its base URL, key and "
                                                  "limits); set by the service")

    @field_validator("base_url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not re.match(r"^https?://[^\s/]+", v):
            raise ValueError("base_url must be an http(s) URL such as http://127.0.0.1:8000/v1")
        return v.rstrip("/")

    @field_validator("api_key_env")
    @classmethod
    def _env_name(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", v):
            raise ValueError("api_key_env is the NAME of an environment variable (e.g. OPENAI_API_KEY), "
                             "not the key itself")
        return v


class VLLMTeacherSpec(_Teacher):
    """A local vLLM engine (`vllm.LLM`), fed whole shards. Needs the `vllm` extra and a CUDA GPU."""

    factory: ClassVar[str] = "stepwise.pipeline.teachers.vllm_backend:VLLMBackend"

    backend: Literal["vllm"]
    model: str = Field(min_length=1, description="a Hugging Face model id or a local path")
    tensor_parallel_size: int = Field(1, ge=1, le=64)
    num_gpus: float | None = Field(None, gt=0, description="GPUs each Ray worker reserves; default "
                                                            "tensor_parallel_size")
    dtype: str = "auto"
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1)
    max_model_len: int | None = Field(None, ge=1)
    trust_remote_code: bool = False
    engine_seed: int = 0
    supports_n: bool = True
    engine_kwargs: dict[str, Any] = Field(default_factory=dict, description="more vllm.LLM arguments")
    profile: str | None = Field(None, description="a teacher profile of the REST service; set by the service")


class OpenAIBatchTeacherSpec(_Teacher):
    """The OpenAI Batch API: requests go up as JSONL files and come back within the completion window, at
    about half the price. Batch ids are kept next to the request cache, so a restarted job polls its open
    batches instead of submitting them again. The key is read from the variable *named* by `api_key_env`.
    """

    factory: ClassVar[str] = "stepwise.pipeline.teachers.openai_batch:OpenAIBatchBackend"

    backend: Literal["openai_batch"]
    model: str = Field(min_length=1)
    base_url: str = Field("https://api.openai.com/v1", description="the server's /v1 root")
    api_key_env: str | None = Field("OPENAI_API_KEY", description="name of the env var holding the key; "
                                                                   "null for servers without auth")
    completion_window: Literal["24h"] = Field("24h", description="the only window the Batch API offers")
    max_requests_per_batch: int = Field(50_000, ge=1, le=50_000, description="lines per batch (API limit)")
    max_bytes_per_batch: int = Field(200_000_000, ge=1024, le=200_000_000,
                                     description="bytes of one batch's input file (API limit 200 MB)")
    poll_interval_s: float = Field(30.0, gt=0, description="seconds between looks at the open batches")
    max_attempts: int = Field(3, ge=1, le=20, description="batches a request may go in: failed, expired and "
                                                          "missing requests are submitted again up to this")
    timeout_s: float = Field(600.0, gt=0, description="timeout of one call to the file and batch endpoints")
    supports_n: bool = Field(True, description="all samples of an example in one line (n)")
    cache_namespace: str | None = Field(None, min_length=1, max_length=200, description=(
        "completions are cached per endpoint (base_url); endpoints that serve the same weights share cached "
        "completions when they name the same namespace"))
    profile: str | None = Field(None, description="a teacher profile of the REST service; set by the service")

    # the same rules as the live teacher's
    _url = field_validator("base_url")(OpenAITeacherSpec._url.__func__)
    _env_name = field_validator("api_key_env")(OpenAITeacherSpec._env_name.__func__)


# Every teacher backend, once: its spec class names it (`backend`) and the class that runs it (`factory`).
TEACHER_SPECS = (ReplayTeacherSpec, OpenAITeacherSpec, VLLMTeacherSpec, OpenAIBatchTeacherSpec)
TEACHER_BACKENDS = tuple(get_args(s.model_fields["backend"].annotation)[0] for s in TEACHER_SPECS)
TeacherSpec = Annotated[Union[TEACHER_SPECS], Field(discriminator="backend")]  # noqa: UP007
# teacher fields that change how we talk to the teacher, not what it answers: free to change on resume
OPERATIONAL_TEACHER_FIELDS = {"base_url", "api_key_env", "transport", "max_concurrency", "rpm", "tpm",
                              "timeout_s", "max_attempts", "num_gpus", "gpu_memory_utilization",
                              "completion_window", "max_requests_per_batch", "max_bytes_per_batch",
                              "poll_interval_s", "request_id_headers", "cache_namespace", "profile"}


class CostSpec(_Strict):
    """Prices per million tokens give a cost per record and per job; `budget_usd` caps a job's spend."""

    input_per_mtok: float = Field(ge=0, description="USD per million prompt tokens")
    output_per_mtok: float = Field(ge=0, description="USD per million completion tokens")
    budget_usd: float | None = Field(None, gt=0, description="stop cleanly (status budget_exhausted) here")

    def cost(self, tokens_in: int | None, tokens_out: int | None) -> float | None:
        if tokens_in is None and tokens_out is None:
            return None
        return ((tokens_in or 0) * self.input_per_mtok + (tokens_out or 0) * self.output_per_mtok) / 1e6


class ExecutorSpec(_Strict):
    """Where shards run: in this process (`local`), or on Ray (`ray`: a local instance by default, or the
    cluster at `address` / $RAY_ADDRESS). How a job runs never changes what it produces."""

    kind: Literal[tuple(EXECUTORS)] = "local"  # type: ignore[valid-type]
    workers: int = Field(2, ge=1, le=4096, description="Ray worker actors (each runs whole shards)")
    address: str | None = Field(None, description="Ray cluster address; default $RAY_ADDRESS, else a local "
                                                   "instance started for the job")
    num_cpus: float = Field(1.0, gt=0, description="CPUs each worker actor reserves")


class JobSpec(_Strict):
    """A rationale-generation job."""

    job_id: str | None = Field(None, description="defaults to <job file stem>-<hash of the spec>")
    dataset: DatasetSpec
    task: TaskSpec
    prompt: PromptSpec
    teacher: TeacherSpec
    sampling: SamplingSpec = SamplingSpec()
    filters: FilterSpec = FilterSpec()
    cost: CostSpec | None = None
    executor: ExecutorSpec = ExecutorSpec()
    shard_size: int = Field(1000, ge=1, le=1_000_000, description="examples per shard (the unit of resume)")
    rationale: Literal["auto", "reasoning", "content", "both"] = Field("auto", description=(
        "the student's rationale: the teacher's thinking trace (reasoning), the reasoning in its answer before "
        "the answer itself (content), both, or auto: the trace when there is one"))
    max_error_rate: float = Field(0.1, ge=0.0, le=1.0, description=(
        "share of teacher requests that may fail for an infrastructure reason (connection, 5xx, timeout after "
        "the retries) before the job stops early with status failed; any such failure fails the job, and a "
        "rerun retries exactly those requests"))

    @field_validator("job_id")
    @classmethod
    def _job_id(cls, v: str | None) -> str | None:
        if v is not None and not is_job_id(v):
            raise ValueError(f"job_id must be {JOB_ID_RULE}")
        return v

    @field_validator("task", mode="before")
    @classmethod
    def _task_shorthand(cls, v: object) -> object:
        return {"kind": v} if isinstance(v, str) else v

    @field_validator("prompt", mode="before")
    @classmethod
    def _prompt_shorthand(cls, v: object) -> object:
        return {"id": v} if isinstance(v, str) else v

    def fingerprint(self) -> str:
        """Hash of what determines the records; the job id, prices, budget, the executor and how we reach
        the teacher (URL, key name, concurrency, rate budgets, timeouts) may change between runs of one job."""
        data = self.model_dump(exclude={"job_id", "cost", "executor", "max_error_rate"}, mode="json")
        for name in OPERATIONAL_TEACHER_FIELDS:
            data["teacher"].pop(name, None)
        blob = json.dumps(data, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()




def _problems(exc: ValidationError) -> list[tuple[str, str]]:
    """(dotted field as written in the job file, message) for each error of a JobSpec validation."""
    return field_problems(exc.errors())


def field_problems(errors: Sequence[Mapping[str, Any]]) -> list[tuple[str, str]]:
    """(dotted field as written in the job file, message) for each pydantic error dict of a JobSpec
    (the REST service passes its request-body errors here with the leading `body` removed).

    pydantic puts the discriminator's tag into the location of a tagged union (`teacher.replay.path`);
    a job file has no such key, so the tag is dropped and tag errors are reported under `teacher.backend`.
    """
    out = []
    for err in errors:
        loc = [str(p) for p in err["loc"]]
        msg = err["msg"].removeprefix("Value error, ")
        if loc[:1] == ["teacher"]:
            if err["type"] == "union_tag_invalid":
                loc, msg = ["teacher", "backend"], (f"unknown backend {err['ctx']['tag']!r}; "
                                                    f"expected one of {', '.join(map(repr, TEACHER_BACKENDS))}")
            elif err["type"] == "union_tag_not_found":
                loc, msg = ["teacher", "backend"], (f"Field required (the discriminator 'backend': one of "
                                                    f"{', '.join(map(repr, TEACHER_BACKENDS))})")
            elif len(loc) > 1 and loc[1] in TEACHER_BACKENDS:
                del loc[1]
        out.append((".".join(loc) or "(top level)", msg))
    return out


def format_validation_error(exc: ValidationError) -> str:
    """One line per problem, each naming the field by its dotted path."""
    return "\n".join(f"  {field}: {msg}" for field, msg in _problems(exc))


def _resolve(path: str, base: Path) -> str:
    p = Path(path).expanduser()
    return str(p if p.is_absolute() else (base / p).resolve())


def parse_job(data: object, *, source: str = "job", base_dir: Path | None = None,
              default_job_id: str | None = None) -> JobSpec:
    """Build a JobSpec from plain data; relative paths are taken relative to `base_dir`."""
    if not isinstance(data, dict):
        raise JobSpecError(f"{source} is invalid:\n  (top level): expected a mapping, got {type(data).__name__}")
    try:
        spec = JobSpec.model_validate(data)
    except ValidationError as exc:
        problems = _problems(exc)
        raise JobSpecError(f"{source} is invalid:\n{format_validation_error(exc)}",
                           field=problems[0][0] if problems else None) from None
    if base_dir is not None:
        dataset = spec.dataset.model_copy(update={"path": _resolve(spec.dataset.path, base_dir)})
        teacher = spec.teacher
        if getattr(teacher, "path", None):
            teacher = teacher.model_copy(update={"path": _resolve(teacher.path, base_dir)})
        prompt = spec.prompt
        if prompt.path:
            prompt = prompt.model_copy(update={"path": _resolve(prompt.path, base_dir)})
        spec = spec.model_copy(update={"dataset": dataset, "teacher": teacher, "prompt": prompt})
    if spec.job_id is None:
        stem = default_job_id or "job"
        spec = spec.model_copy(update={"job_id": f"{stem}-{spec.fingerprint()[:8]}"})
    return spec


def apply_overrides(data: object, overrides: list[str], source: str) -> object:
    """`teacher.base_url=http://...` style overrides; each value is read as YAML (so `3` is a number)."""
    if not overrides:
        return data
    if not isinstance(data, dict):
        return data
    for item in overrides:
        dotted, sep, raw = item.partition("=")
        if not sep or not dotted.strip():
            raise JobSpecError(f"--set {item!r}: expected FIELD=VALUE, e.g. teacher.base_url=http://127.0.0.1:8000/v1")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise JobSpecError(f"--set {item!r}: the value is not valid YAML: {exc}") from None
        node = data
        parts = dotted.strip().split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if isinstance(child, str) and part in ("task", "prompt"):  # shorthand forms
                child = {"kind": child} if part == "task" else {"id": child}
            if not isinstance(child, dict):
                child = {}
            node[part] = child
            node = child
        node[parts[-1]] = value
    return data


def load_job(path: str | Path, overrides: list[str] | None = None) -> JobSpec:
    """Read and validate a YAML (or JSON) job file. Raises JobSpecError naming the field, or the line
    (strict YAML: no aliases, no key given twice; see pipeline/yamlfile.py)."""
    path = Path(path)
    data, _ = read_yaml(path, "job file", JobSpecError)
    stem = re.sub(r"[^A-Za-z0-9._-]", "-", path.stem) or "job"
    data = apply_overrides(data, overrides or [], str(path))
    return parse_job(data, source=f"job file {path}", base_dir=path.parent.resolve(), default_job_id=stem)


def _check_file(field: str, path: str) -> None:
    p = Path(path)
    if not p.exists():
        raise JobSpecError(f"{field}: file not found: {p}", field=field)
    if p.is_dir():
        raise JobSpecError(f"{field}: {p} is a folder, not a file", field=field)
    if not p.is_file():  # a pipe or a device: opening one may wait forever, reading it may never end
        raise JobSpecError(f"{field}: {p} is not a regular file", field=field)
    try:
        with p.open("rb"):
            pass
    except OSError as exc:
        raise JobSpecError(f"{field}: cannot read {p}: {exc.strerror or exc}", field=field) from None


def check_files(spec: JobSpec, *, dataset: bool = True, prompt: bool = True, teacher: bool = True) -> None:
    """Raise JobSpecError, naming the field, when a file the job names is missing, a folder or unreadable:
    the dataset, the prompt template (`prompt.path`) and the replay teacher's recordings. A mistake in the job
    file, found before anything is written (the CLI exits 2). The flags leave out what a caller brings itself."""
    if dataset:
        _check_file("dataset.path", spec.dataset.path)
    if prompt and spec.prompt.path:
        _check_file("prompt.path", spec.prompt.path)
    if teacher and spec.teacher.backend == "replay":
        _check_file("teacher.path", spec.teacher.path)
