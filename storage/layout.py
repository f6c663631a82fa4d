"""Every path of a corpus, in one place. A corpus root is a folder (default `./corpus`) or an object-store URI
(`storage/location.py`); paths below are parts relative to it, as `CorpusLocation` methods take them.

    records/<job_id>/shard-000000.parquet   one part file per finished shard (whole or absent: written atomically)
    records/<job_id>/shard-000000.retry     the shard holds teacher_unavailable records: the next run redoes it
    jobs/<job_id>.parquet                   the job's registry row: status, spec, counters
    jobs/<job_id>.cancel                    a cancel request (empty)
    jobs/<job_id>.progress.json             the running job's heartbeat (live counts, rate, last errors)
    cache/requests.sqlite                   the request cache and the Batch API ledger (a local corpus; else below)
    cache/ids/<job_id>.sqlite               which dataset rows carry which example ids (duplicates, across runs)
    uploads/                                datasets uploaded over REST (a local corpus; else the state folder's)

The REST service keeps three files per job in its state folder (local; `jobs/` of a local corpus):
`<job_id>.spec.json`, `<job_id>.pid` and `<job_id>.log`. A shard is done when its part file exists and it has no
retry marker. Names that start with `.` or `_` are never data (temp files of atomic writes).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from stepwise.storage.location import is_uri

RECORDS, JOBS, CACHE, UPLOADS = "records", "jobs", "cache", "uploads"
PART_SUFFIX, RETRY_SUFFIX = ".parquet", ".retry"
SERVICE_FILES = ("spec.json", "pid", "log")  # the REST service's files of a job, in its state folder


def part(job_id: str, shard: int) -> tuple[str, str, str]:
    return RECORDS, job_id, f"shard-{shard:06d}{PART_SUFFIX}"


def retry_marker(job_id: str, shard: int) -> tuple[str, str, str]:
    """Written before a part file that holds teacher_unavailable records, removed after a clean one."""
    return RECORDS, job_id, f"shard-{shard:06d}{RETRY_SUFFIX}"


def shard_of(path: str) -> int:
    """The shard index of a part file or retry marker path."""
    return int(path.replace(os.sep, "/").rsplit("/", 1)[-1].split(".")[0].removeprefix("shard-"))


def registry_row(job_id: str) -> tuple[str, str]:
    return JOBS, f"{job_id}.parquet"


def cancel_marker(job_id: str) -> tuple[str, str]:
    return JOBS, f"{job_id}.cancel"


def progress_file(job_id: str) -> tuple[str, str]:
    return JOBS, f"{job_id}.progress.json"


def service_file(state_dir: Path, job_id: str, kind: str) -> Path:
    """`<state dir>/<job_id>.<kind>`, kind one of SERVICE_FILES."""
    assert kind in SERVICE_FILES, kind
    return state_dir / f"{job_id}.{kind}"


def request_cache(root: str | Path) -> Path:
    """Where the request cache (SQLite) of the corpus at `root` lives. SQLite needs a real filesystem, so for a
    corpus on an object store it is `$STEPWISE_CACHE_DIR/requests.sqlite` when that is set, else
    `~/.cache/stepwise/<first 16 hex digits of sha256(corpus URI)>/requests.sqlite`."""
    if not is_uri(root):
        return Path(root) / CACHE / "requests.sqlite"
    if os.environ.get("STEPWISE_CACHE_DIR"):
        return Path(os.environ["STEPWISE_CACHE_DIR"]).expanduser() / "requests.sqlite"
    location, _, options = str(root).partition("?")
    canonical = location.rstrip("/") + ("?" + "&".join(sorted(options.split("&"))) if options else "")
    digest = hashlib.sha256(canonical.encode()).hexdigest()[:16]
    return Path.home() / ".cache" / "stepwise" / digest / "requests.sqlite"


def id_index(root: str | Path, job_id: str) -> Path:
    """The job's id index (SQLite, local like the request cache): beside the request cache, under `ids/`."""
    return request_cache(root).parent / "ids" / f"{job_id}.sqlite"
