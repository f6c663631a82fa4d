"""The one exception tree of stepwise.

    StepwiseError                 base of everything we raise on purpose
    ├── JobSpecError              a job file or job request is invalid (names the field); CLI exit code 2
    ├── DatasetError              a dataset file cannot be opened or read at all (a bad *row* is a reject, not this)
    ├── PromptError               a prompt template is missing or malformed
    ├── TaskError                 a task definition is unusable (e.g. a custom answer pattern that does not compile)
    ├── TeacherError              the teacher backend failed in a way that is not a per-record reject
    ├── StorageError              the corpus cannot be read or written
    │   └── JobConflictError      a job id already holds records made from a different spec
    └── QueryError                a SQL query was refused or failed
        └── QueryRefusedError     the query tried to leave the read-only corpus sandbox

Per-record problems (bad rows, bad teacher output) are never exceptions that escape a shard: they become
rejected records with a `reject_reason`. Retry decisions (later issues) are made by exception type only.
"""

from __future__ import annotations


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


class StorageError(StepwiseError):
    """The corpus cannot be read or written."""


class JobConflictError(StorageError):
    """The job id already holds records produced from a different job spec."""


class QueryError(StepwiseError):
    """A SQL query failed."""


class QueryRefusedError(QueryError):
    """A SQL query tried to do something other than read the corpus views."""
