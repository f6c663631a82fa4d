"""The request cache: every completion we paid for, keyed by what determines it, written as it arrives.

Content-addressed by `TeacherRequest.cache_key()` (backend, endpoint, model, messages, sampling, sample index,
and the response schema when there is one) and nothing else, so renaming a job or changing its filters or export
settings never pays for a completion twice. Stored in SQLite (WAL) under `<corpus>/cache/requests.sqlite`:
each completion is committed (in one transaction with the others that arrived meanwhile) before it counts as done,
and its request holds its concurrency slot until then, so a `kill -9` loses at most the requests that were still
in flight.

SQLite needs a real filesystem, so for a corpus on an object store (`s3://...`) the cache lives in a local
folder (`storage.layout.request_cache`). On a multi-node cluster point
`STEPWISE_CACHE_DIR` at a shared filesystem that every node mounts, or each node keeps its own cache and a shard
retried on another node pays again for the requests it had completed.

A cache file written before reasoning traces were kept gains their columns (`reasoning`, `reasoning_tokens`) when
it is opened; its completions are served as they were, without a trace.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

from stepwise.pipeline.errors import StorageError
from stepwise.pipeline.types import Completion
from stepwise.storage.layout import request_cache

_SCHEMA = """
CREATE TABLE IF NOT EXISTS completions (
    key TEXT PRIMARY KEY,
    text TEXT NOT NULL,
    finish_reason TEXT,
    tokens_in INTEGER,
    tokens_out INTEGER,
    latency_s REAL,
    model TEXT,
    created_at REAL NOT NULL,
    reasoning TEXT,
    reasoning_tokens INTEGER
)
"""
# columns added after the first release, with their types: an older cache file gets them when it is opened
_ADDED_COLUMNS = (("reasoning", "TEXT"), ("reasoning_tokens", "INTEGER"))
_COLUMNS = "key, text, finish_reason, tokens_in, tokens_out, latency_s, model, created_at, reasoning, reasoning_tokens"


def open_sqlite(target: str | Path, schema: str, what: str) -> sqlite3.Connection:
    """A connection shared by threads (callers hold a lock), autocommit, WAL. synchronous=NORMAL in WAL mode
    survives a killed process (the case we promise); FULL would add an fsync per write to survive power loss."""
    try:
        db = sqlite3.connect(target, timeout=30, check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(schema)
    except sqlite3.Error as exc:
        raise StorageError(f"cannot open the {what} {target}: {exc}") from None
    return db


def _missing_columns(db: sqlite3.Connection) -> list[tuple[str, str]]:
    have = {row[1] for row in db.execute("PRAGMA table_info(completions)")}
    return [(name, kind) for name, kind in _ADDED_COLUMNS if name not in have]


def _add_missing_columns(db: sqlite3.Connection, path: Path) -> None:
    """Bring a cache file of an older schema up to date. Looked at again under the write lock, so two processes
    opening one old file at once add each column once."""
    try:
        if not _missing_columns(db):
            return
        db.execute("BEGIN IMMEDIATE")
        try:
            for name, kind in _missing_columns(db):
                db.execute(f"ALTER TABLE completions ADD COLUMN {name} {kind}")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
    except sqlite3.Error as exc:
        raise StorageError(f"cannot upgrade the request cache {path}: {exc}") from None


class RequestCache:
    """A durable map from request key to completion. Safe to share between threads of one process and
    between processes on one machine (SQLite locking)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = open_sqlite(self.path, _SCHEMA, "request cache")
        _add_missing_columns(self._db, self.path)
        self._lock = threading.Lock()

    @classmethod
    def for_corpus(cls, root: str | Path) -> RequestCache:
        """The corpus's cache: inside a local corpus, in a local folder for one on an object store."""
        return cls(request_cache(root))

    def get_many(self, keys: list[str]) -> dict[str, Completion]:
        """Cached completions for the keys that have one (example ids are filled in by the caller)."""
        out: dict[str, Completion] = {}
        with self._lock:
            for i in range(0, len(keys), 500):
                chunk = keys[i:i + 500]
                marks = ",".join("?" * len(chunk))
                for row in self._db.execute(
                        f"SELECT key, text, finish_reason, tokens_in, tokens_out, latency_s, model, reasoning, "
                        f"reasoning_tokens FROM completions WHERE key IN ({marks})", chunk):
                    out[row[0]] = Completion(row[0], "", 0, row[1], row[2], row[3], row[4], row[5], row[6],
                                             reasoning=row[7], reasoning_tokens=row[8])
        return out

    def put(self, completion: Completion) -> None:
        """Store one completion durably (committed before returning). Errors are never cached."""
        self.put_many([completion])

    def put_many(self, completions: list[Completion]) -> None:
        """Store completions durably in one transaction (committed before returning). Errors are never cached."""
        now = time.time()
        rows = [(c.request_key, c.text, c.finish_reason, c.tokens_in, c.tokens_out, c.latency_s, c.model, now,
                 c.reasoning, c.reasoning_tokens) for c in completions if c.text is not None and not c.error]
        if not rows:
            return
        with self._lock:
            self._db.execute("BEGIN")
            try:
                self._db.executemany(
                    f"INSERT OR REPLACE INTO completions ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def count(self) -> int:
        with self._lock:
            return self._db.execute("SELECT count(*) FROM completions").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()
