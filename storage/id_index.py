"""Which rows of a dataset carry which example ids, on disk, so that duplicate ids are found in a dataset of any size
without holding its ids in memory, and the same way by every run of a job (a resumed run skips the rows of finished
shards, whose ids this index still knows).

One SQLite table of (id, row) pairs; `resolve` registers a batch of rows and answers, for each, the first row that
carried its id and how many rows up to it did. Registering a row twice changes nothing, so a shard that is done
again (after a crash, or to retry failed requests) resolves as it did the first time. The index remembers which
dataset file it describes (path, size, modification time) and starts empty when the file changed.
"""

from __future__ import annotations

import bisect
import sqlite3
from pathlib import Path

from stepwise.pipeline.errors import StorageError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS rows (id TEXT NOT NULL, row INTEGER NOT NULL, PRIMARY KEY (id, row)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS source (signature TEXT NOT NULL);
"""
_CHUNK = 500  # ids per IN (...) list


class IdIndex:
    """The ids of a dataset's rows; `path` None keeps it in memory (one reading of a file, nothing to resume)."""

    def __init__(self, path: Path | None = None, signature: str = ""):
        target = ":memory:" if path is None else str(path)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(target, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL" if path is not None else "PRAGMA journal_mode=MEMORY")
            self._db.execute("PRAGMA synchronous=OFF")  # rebuilt from the dataset if lost: durability buys nothing
            self._db.executescript(_SCHEMA)
            known = self._db.execute("SELECT signature FROM source").fetchone()
            self.fresh = known is None or known[0] != signature
            if self.fresh:
                self._db.executescript("BEGIN; DELETE FROM rows; DELETE FROM source; COMMIT;")
                self._db.execute("INSERT INTO source VALUES (?)", (signature,))
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open the id index {target}: {exc}") from None

    def resolve(self, pairs: list[tuple[str, int]]) -> list[tuple[int, int]]:
        """Register (id, row) pairs; for each, (the first row with that id, how many rows up to this one have it)."""
        if not pairs:
            return []
        db = self._db
        db.execute("BEGIN")
        db.executemany("INSERT OR IGNORE INTO rows VALUES (?, ?)", pairs)
        db.execute("COMMIT")
        ids = list({i for i, _ in pairs})
        rows: dict[str, list[int]] = {}
        for start in range(0, len(ids), _CHUNK):
            chunk = ids[start:start + _CHUNK]
            for found, row in db.execute(f"SELECT id, row FROM rows WHERE id IN ({','.join('?' * len(chunk))}) "
                                         f"ORDER BY id, row", chunk):
                rows.setdefault(found, []).append(row)
        return [(rows[i][0], bisect.bisect_right(rows[i], row)) for i, row in pairs]

    def close(self) -> None:
        self._db.close()
