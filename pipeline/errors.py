"""The one exception tree of stepwise.

    StepwiseError                 base of everything we raise on purpose
    ├── JobSpecError              a job file or job request is invalid (names the field); CLI exit code 2
    ├── DatasetError              a dataset file cannot be opened or read at all (a bad *row* is a reject, not this)
    ├── PromptError               a prompt template is missing or malformed
    ├── TaskError                 a task definition is unusable (e.g. a custom answer pattern that does not compile)
    ├── TeacherError              the teacher failed for the whole job, not for one record
    │   ├── TeacherAuthError      401 / 403: the key is wrong or lacks access; the job stops at once
    │   ├── BudgetExhaustedError  the job's cost cap was reached; the job stops cleanly, resumable
    │   ├── TeacherFailingError   more requests failed (after their retries) than the job's max_error_rate
    │   │                         allows; the job stops `failed`, naming the URL; a rerun retries them
    │   ├── RequestRejectedError  a 4xx other than 408 / 409 / 429: not retried, becomes a teacher_error reject
    │   └── TransientTeacherError retried (by type, with tenacity); a reject only after the last attempt
    │       ├── RateLimitedError      429, carries the server's retry-after
    │       ├── TeacherServerError    5xx, 409
    │       ├── TeacherTimeoutError   408, or no answer within the client timeout (a stalled server)
    │       ├── TeacherConnectionError  the connection was refused or dropped
    │       └── MalformedResponseError  a 200 whose body is not a chat completion
    ├── StorageError              the corpus cannot be read or written
    │   ├── JobConflictError      a job id already holds records made from a different spec
    │   └── JobNotFoundError      no job with that id in the corpus
    ├── JobStateError             the job cannot do that now (cancel a finished job, resume a running one)
    │   └── JobCancelledError     a running job was cancelled on request; finished shards are kept
    ├── UploadError               a dataset upload has a bad name (422)
    │   ├── UploadExistsError     an upload of that name exists; uploads are never replaced (409)
    │   └── UploadTooLargeError   the upload is larger than the server takes (413)
    ├── AuthError                 a REST request without the right bearer token
    ├── CsrfError                 a state change by a signed-in browser without the CSRF header, or from another
    │                             origin (403)
    ├── TrainerError              the student trainer cannot run (no training pairs, no gold test examples, a model
    │   │                         that is not sequence-to-sequence or does not load, CUDA asked for but absent)
    │   ├── TrainConfigError      a TrainConfig field is invalid (names the field and its CLI flag); CLI exit code 2
    │   └── MissingExtraError     torch / transformers / matplotlib are not installed: pip install 'stepwise-distill[train]'
    └── QueryError                a SQL query was refused or failed
        └── QueryRefusedError     the query tried to leave the read-only corpus sandbox

`pipeline.yamlfile.YamlError` (a ValueError, not a StepwiseError) says what is wrong with a hand-written YAML file;
each reader turns it into its own error above (JobSpecError for job files, PromptError for templates).

Per-record problems (bad rows, bad teacher output) are never exceptions that escape a shard: they become
rejected records with a `reject_reason`. Retry decisions (later issues) are made by exception type only.
The REST service maps this tree to HTTP statuses in one function, `api/errors.py:error_response`.
"""

from __future__ import annotations

import reprlib
from typing import Any

_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxstring, _SHORT.maxother, _SHORT.maxlist, _SHORT.maxdict = 2, 40, 40, 4, 4


def short(value: Any) -> str:
    """A repr of `value` short enough for an error message, whatever its size or depth (a value from a file is
    quoted only this far)."""
    return _SHORT.repr(value)


class StepwiseError(Exception):
    """Base class for every error stepwise raises on purpose."""


class JobSpecError(StepwiseError):
    """A job specification is invalid; the message names the offending field."""

    def __init__(self, message: str, *, field: str | None = None):
        super().__init__(message)
        self.field = field


class DatasetError(StepwiseError):
    """A dataset file cannot be opened or read at all."""


class PromptError(StepwiseError):
    """A prompt template is missing or malformed."""


class TaskError(StepwiseError):
    """A task definition cannot be used."""


class TeacherError(StepwiseError):
    """The teacher backend failed for the whole job, not for one record."""


class TeacherAuthError(TeacherError):
    """The teacher refused our credentials (401 / 403). Never retried; the message never holds the key."""


class BudgetExhaustedError(TeacherError):
    """The job's cost cap was reached; finished work is kept and the job can resume with a higher cap."""


class TeacherFailingError(TeacherError):
    """More requests failed than the job's `max_error_rate` allows (transport errors, 5xx and timeouts after
    their retries, or refusals): the job stops with status `failed`, naming the teacher's URL; everything
    finished is kept and a rerun sends exactly the requests that failed for an infrastructure reason."""


class RequestRejectedError(TeacherError):
    """The teacher refused this one request (a 4xx other than 408, 409, 429). Not retried."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class TransientTeacherError(TeacherError):
    """A failure worth retrying. Subclasses say which kind; retry decisions look only at the type."""

    def __init__(self, message: str, status: int | None = None, retry_after: float | None = None):
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


class RateLimitedError(TransientTeacherError):
    """429: slow down; `retry_after` is the server's hint in seconds, when it gave one."""


class TeacherServerError(TransientTeacherError):
    """5xx or 409 from the teacher."""


class TeacherTimeoutError(TransientTeacherError):
    """408, or no answer within the client timeout."""


class TeacherConnectionError(TransientTeacherError):
    """The connection was refused, reset or dropped before a response."""


class MalformedResponseError(TransientTeacherError):
    """A 200 whose body is not a valid chat completion."""


class StorageError(StepwiseError):
    """The corpus cannot be read or written."""


class JobConflictError(StorageError):
    """The job id already holds records produced from a different job spec."""


class JobNotFoundError(StorageError):
    """No job with that id in the corpus."""


class JobStateError(StepwiseError):
    """The job is not in a state that allows this (e.g. resuming a job that is still running)."""


class JobCancelledError(JobStateError):
    """A running job was cancelled on request (`stepwise cancel`, POST .../cancel); finished shards are kept."""


class UploadError(StepwiseError):
    """A dataset upload cannot be taken (its name is not a plain file name with a data suffix)."""

    field = "name"


class UploadExistsError(UploadError):
    """An upload of that name exists; uploads are never replaced, since a job's records point at the file."""


class UploadTooLargeError(UploadError):
    """The upload is larger than the server's cap; nothing of it is kept."""


class AuthError(StepwiseError):
    """A REST request lacks the right bearer token. The message never holds a token."""


class CsrfError(StepwiseError):
    """A cookie-authenticated request that changes state lacks the session's CSRF value in `X-Stepwise-CSRF`, or
    the browser says it came from another origin: refused, since another site could have made the browser send
    it with the cookie."""


class TrainerError(StepwiseError):
    """The student trainer cannot run: bad data, a model that does not load, a device that is not there."""


class TrainConfigError(TrainerError):
    """A trainer configuration field is invalid; the message names the field and its CLI flag."""

    def __init__(self, message: str, *, field: str | None = None):
        super().__init__(message)
        self.field = field


class MissingExtraError(TrainerError):
    """An optional dependency is not installed; the message names the extra that brings it."""


class QueryError(StepwiseError):
    """A SQL query failed."""


class QueryRefusedError(QueryError):
    """A SQL query tried to do something other than read the corpus views."""
