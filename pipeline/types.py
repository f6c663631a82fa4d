"""Core types that flow one way through the pipeline.

    Example ──► TeacherRequest ──► Completion ──► Parsed ──► RationaleRecord

A step only sees the type on its left and produces the type on its right.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any


# A job id names files and folders of the corpus: letters, digits, '.', '_' and '-', starting with a letter or
# digit. The one pattern, matched whole (never `re.match` with `$`, which also matches before a final newline).
JOB_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
JOB_ID_PATTERN = rf"^{JOB_ID_RE.pattern}$"  # for schemas: in JSON Schema and pydantic's engine `$` ends the text
JOB_ID_RULE = "1-128 characters of letters, digits, '.', '_' or '-', starting with a letter or digit"


def is_job_id(value: object) -> bool:
    """Whether `value` is a valid job id, matched in full."""
    return isinstance(value, str) and JOB_ID_RE.fullmatch(value) is not None


class JobStatus(StrEnum):
    """A job's status: the registry's `jobs.status`, the end of `stepwise run`, the REST service's job view."""

    STARTING = "starting"                  # REST: submitted; its process has not written the registry row yet
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"                      # an error, or teacher requests that failed (a rerun retries them)
    CANCELLED = "cancelled"                # stopped on request; finished shards are kept
    BUDGET_EXHAUSTED = "budget_exhausted"  # the cost cap stopped it; run again with a higher cap
    INTERRUPTED = "interrupted"            # REST: the row says running, but its process is gone


class RejectReason(StrEnum):
    """Why a record was not accepted. Stored in `records.reject_reason`; the detail goes to `reject_detail`."""

    BAD_ROW = "bad_row"                      # the dataset row itself is malformed
    MISSING_COMPLETION = "missing_completion"  # the teacher produced nothing for this request
    TEACHER_ERROR = "teacher_error"          # the teacher refused this one request (e.g. a 400): final
    TEACHER_UNAVAILABLE = "teacher_unavailable"  # an infrastructure failure after the retries (connection, 5xx,
                                                 # timeout, no text): not final, a rerun retries the request
    TRUNCATED = "truncated"                  # finish_reason == "length"
    INVALID_JSON = "invalid_json"            # structured output that is not valid JSON for the schema
    NO_ANSWER = "no_answer"                  # no answer could be extracted from the text
    LABEL_OUT_OF_SPACE = "label_out_of_space"  # an answer was found but it is not in the task's label space
    EMPTY_RATIONALE = "empty_rationale"      # an answer without any reasoning
    TOO_SHORT = "too_short"                  # rationale shorter than filters.min_rationale_chars
    TOO_LONG = "too_long"                    # rationale longer than filters.max_rationale_chars
    TRACE_TOO_SHORT = "trace_too_short"      # thinking trace shorter than filters.min_reasoning_chars
    TRACE_TOO_LONG = "trace_too_long"        # trace over filters.max_reasoning_chars or max_reasoning_tokens
    REPETITION = "repetition"                # the trace loops: repeated 6-gram share over filters.max_repetition
    LANGUAGE_MIXING = "language_mixing"      # letters outside the prompt's script over filters.max_foreign_script
    CONTRADICTS_TRACE = "contradicts_trace"  # final answer differs from the trace's own conclusion (opt-in)
    INCORRECT = "incorrect"                  # label disagrees with the gold answer
    MINORITY = "minority"                    # label disagrees with the self-consistency majority
    DUPLICATE = "duplicate"                  # same rationale as an earlier sample of the same example


@dataclass(frozen=True, slots=True)
class Example:
    """One dataset row, the only thing a dataset reader yields.

    `input` is the student-facing text (question with its choices, or premise and hypothesis);
    `gold` is the raw gold answer as a string (None when the data is unlabeled);
    `meta` carries fields prompts may need (premise, hypothesis, the raw question).
    """

    id: str
    input: str
    gold: str | None = None
    choices: tuple[str, ...] | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    gold_rationale: str | None = None  # a reference solution of the dataset's own (GSM8K's before `####`)


@dataclass(frozen=True, slots=True)
class RowReject:
    """A dataset row that could not become an Example; it still becomes a (rejected) record."""

    id: str
    reason: str
    raw: str = ""


@dataclass(frozen=True, slots=True)
class Sampling:
    """Sampling parameters that determine a completion (OpenAI names). `n` lives on the job: one request per sample."""

    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int = 512
    seed: int | None = None
    stop: tuple[str, ...] = ()
    # reasoning models: set only when the job sets them, so a request without them keeps its cache key
    reasoning_effort: str | None = None
    max_completion_tokens: int | None = None
    chat_template_kwargs: str | None = None  # canonical JSON of a mapping (e.g. {"enable_thinking": true})
    extra_body: str | None = None            # canonical JSON of more body fields, passed through

    @property
    def token_budget(self) -> int:
        """The most tokens one sample may generate (what rate limits and cost caps reserve)."""
        return self.max_completion_tokens or self.max_tokens


@dataclass(frozen=True, slots=True)
class TeacherRequest:
    """One call to the teacher for one sample of one example."""

    example_id: str
    sample_idx: int
    messages: tuple[dict[str, str], ...]
    sampling: Sampling
    prompt_id: str
    prompt_hash: str | None
    backend: str
    model: str
    followup: str | None = None         # two-stage zero-shot CoT: the answer prompt sent after the reasoning
    response_schema: str | None = None  # structured output: the JSON schema (canonical JSON text)
    endpoint: str | None = None         # the server that answers (its base URL, or a shared cache namespace)

    def cache_key(self) -> str:
        """Hash of exactly what determines the answer: backend, endpoint, model, messages, sampling, sample
        index (and the answer prompt and response schema when there are any). Job names, filters and export
        settings are not part of it, so changing them never pays for a completion twice. The endpoint is: two
        servers that call their models by one name may serve different weights."""
        payload = {
            "backend": self.backend,
            "model": self.model,
            "messages": list(self.messages),
            "sampling": {
                "temperature": self.sampling.temperature,
                "top_p": self.sampling.top_p,
                "max_tokens": self.sampling.max_tokens,
                "seed": self.sampling.seed,
                "stop": list(self.sampling.stop),
            },
            "sample_idx": self.sample_idx,
        }
        for name in ("reasoning_effort", "max_completion_tokens", "chat_template_kwargs", "extra_body"):
            if getattr(self.sampling, name) is not None:
                payload["sampling"][name] = getattr(self.sampling, name)
        if self.endpoint is not None:
            payload["endpoint"] = self.endpoint
        if self.followup is not None:
            payload["followup"] = self.followup
        if self.response_schema is not None:
            payload["response_schema"] = self.response_schema
        blob = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Completion:
    """Raw, unparsed teacher output for one request. `error` is set when the teacher refused this request."""

    request_key: str
    example_id: str
    sample_idx: int
    text: str | None
    finish_reason: str | None = "stop"
    tokens_in: int | None = None
    tokens_out: int | None = None
    latency_s: float | None = None
    model: str | None = None
    error: str | None = None
    cost_usd: float | None = None
    retryable: bool = False  # the error was an infrastructure failure (a `teacher_unavailable` reject, not final)
    reasoning: str | None = None         # the thinking trace, when the server sent it apart from the content
    reasoning_tokens: int | None = None  # usage.completion_tokens_details.reasoning_tokens, when given


@dataclass(frozen=True, slots=True)
class Parsed:
    """What parsing one completion yields: a rationale and a label in the task's label space, or a reject.

    For a reasoning model `reasoning` is its thinking trace and `content` what it wrote after it (the answer
    part); `rationale` is the one the job chose (`rationale: auto | reasoning | content | both`).
    `trace_label` is the answer the trace itself concluded with, when one can be read off its end."""

    rationale: str | None
    label: str | None
    reject: RejectReason | None = None
    detail: str | None = None
    reasoning: str | None = None
    content: str | None = None
    trace_label: str | None = None


@dataclass(frozen=True, slots=True)
class RationaleRecord:
    """One row of the corpus, accepted or rejected with a reason. Field order is the Arrow schema's order."""

    job_id: str
    example_id: str
    sample_idx: int
    task: str
    input: str
    gold_label: str | None
    label: str | None
    rationale: str | None
    correct: bool | None
    accepted: bool
    reject_reason: str | None
    reject_detail: str | None
    consensus_label: str | None
    agreement: float | None
    prompt_id: str
    prompt_hash: str | None
    teacher_backend: str
    teacher_model: str
    request_key: str | None
    finish_reason: str | None
    tokens_in: int | None
    tokens_out: int | None
    cost_usd: float | None
    latency_s: float | None
    completion: str | None                # the teacher's content: for a reasoning model, what follows the trace
    created_at: datetime
    reasoning: str | None = None          # the teacher's thinking trace, when it had one
    reasoning_tokens: int | None = None
    trace_label: str | None = None        # the answer the trace itself concluded with (a contradiction shows)
    gold_rationale: str | None = None     # the dataset's own reference solution, when it has one
