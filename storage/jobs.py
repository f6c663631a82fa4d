"""The job registry: one small Parquet file per job (`storage/layout.py`: `jobs/<job_id>.parquet`), rewritten
atomically on each change, and the job's cancel marker. The root may be a folder or an object-store URI.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from stepwise.pipeline.errors import StorageError
from stepwise.pipeline.types import JOB_ID_RULE, is_job_id
from stepwise.storage import layout
from stepwise.storage.location import CorpusLocation


@dataclass(frozen=True)
class JobState:
    """One row of the `jobs` view."""

    job_id: str
    status: str  # running | completed | failed | cancelled | budget_exhausted
    fingerprint: str
    spec_json: str
    task: str | None = None
    prompt_id: str | None = None
    prompt_hash: str | None = None
    teacher_backend: str | None = None
    teacher_model: str | None = None
    n_shards: int = 0
    shards_done: int = 0
    n_examples: int = 0
    n_records: int = 0
    n_accepted: int = 0
    n_rejected: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0
    error: str | None = None
    created_at: datetime = datetime.fromtimestamp(0, UTC)
    updated_at: datetime = datetime.fromtimestamp(0, UTC)



def check_job_id(job_id: str) -> str:
    if not is_job_id(job_id):
        raise StorageError(f"job id {job_id!r} must be {JOB_ID_RULE}")
    return job_id


class JobRegistry:
    """Reads and writes job rows under `<root>/jobs/`."""

    def __init__(self, root: str | Path | CorpusLocation):
        self.corpus = CorpusLocation.of(root)
        self._rows: dict[str, tuple[tuple, JobState]] = {}  # job id -> (file identity, row): local corpora

    def path(self, job_id: str) -> str:
        return self.corpus.path(*layout.registry_row(check_job_id(job_id)))

    def request_cancel(self, job_id: str) -> None:
        """Ask a running job to stop (its executor polls for this marker every half second)."""
        self.corpus.touch(*layout.cancel_marker(check_job_id(job_id)))

    def cancel_requested(self, job_id: str) -> bool:
        return self.corpus.exists(*layout.cancel_marker(check_job_id(job_id)))

    def clear_cancel(self, job_id: str) -> None:
        self.corpus.remove(*layout.cancel_marker(check_job_id(job_id)))

    def get(self, job_id: str) -> JobState | None:
        row = layout.registry_row(check_job_id(job_id))
        if self.corpus.local is not None:
            # a row is only ever replaced by renaming a new file over it, so (inode, size, mtime) names its
            # content: the REST service reads rows far more often than they change
            try:
                st = self.corpus.local.joinpath(*row).stat()
            except FileNotFoundError:
                return None
            key = (st.st_ino, st.st_size, st.st_mtime_ns)
            cached = self._rows.get(job_id)
            if cached is not None and cached[0] == key:
                return cached[1]
            try:
                state = self._read(job_id, row)
            except FileNotFoundError:  # removed since the stat
                return None
            self._rows[job_id] = (key, state)
            return state
        if not self.corpus.exists(*row):
            return None
        return self._read(job_id, row)

    def ids(self) -> list[str]:
        """The ids of every job with a registry row."""
        return [Path(p).name.removesuffix(layout.PART_SUFFIX) for p in self.corpus.list_files(layout.JOBS)]

    def _read(self, job_id: str, row: tuple[str, str]) -> JobState:
        from stepwise.storage.schema import JOBS_SCHEMA  # pyarrow, imported when a registry row is read

        try:
            values = self.corpus.read_rows(*row, schema=JOBS_SCHEMA)[0]
        except FileNotFoundError:
            raise
        except Exception as exc:  # a corrupt registry row is a storage problem, said plainly
            raise StorageError(f"cannot read job registry row {self.path(job_id)}: {exc}") from None
        return JobState(**values)

    def save(self, state: JobState) -> JobState:
        import pyarrow as pa

        from stepwise.storage.schema import JOBS_SCHEMA

        state = replace(state, updated_at=datetime.now(UTC))
        table = pa.Table.from_pylist([asdict(state)], schema=JOBS_SCHEMA)
        self.corpus.write_table(table, *layout.registry_row(check_job_id(state.job_id)))
        return state
