"""Dataset files uploaded over REST (`POST /v1/datasets`): one flat folder, one file per name, never replaced.

A file is streamed to a hidden temp name in the folder, counted against the size cap as it arrives, and linked
under its final name only when whole (a link fails if the name is taken, so two uploads of one name cannot both
win and a job never sees a half-written or replaced file). Names are plain: letters, digits, '.', '_', '-',
with a data-file suffix, so a name can never leave the folder.
"""

from __future__ import annotations

import hashlib
import os
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import anyio

from stepwise.pipeline.errors import UploadError, UploadExistsError, UploadTooLargeError

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
SUFFIXES = (".jsonl", ".ndjson", ".json", ".csv", ".tsv", ".parquet", ".pq", ".yaml", ".yml")
_TMP = ".upload-"


@dataclass(frozen=True)
class UploadInfo:
    name: str
    path: str
    bytes: int
    uploaded_at: datetime
    sha256: str | None = None


def check_name(name: str) -> str:
    if NAME.fullmatch(name) is None or not name.lower().endswith(SUFFIXES):
        raise UploadError(f"name: {name!r} must be 1-128 letters, digits, '.', '_' or '-', starting with a letter "
                          f"or digit, and end in one of {', '.join(SUFFIXES)}")
    return name


class UploadStore:
    """The uploads folder: `save` a stream under a new name, `list` what is there."""

    def __init__(self, folder: str | Path, max_bytes: int):
        self.folder = Path(folder)
        self.max_bytes = max_bytes
        self.folder.mkdir(parents=True, exist_ok=True)

    async def save(self, name: str, chunks: AsyncIterator[bytes], declared: int | None = None) -> UploadInfo:
        """Write the stream under `name`; UploadTooLargeError past the cap (nothing is kept), UploadExistsError
        when the name is taken."""
        check_name(name)
        if declared is not None and declared > self.max_bytes:
            raise UploadTooLargeError(self._too_large())
        final = self.folder / name
        if final.exists():
            raise UploadExistsError(f"name: an upload named {name!r} exists; uploads are never replaced (a job's "
                                    f"records point at the file): choose another name")
        tmp = self.folder / f"{_TMP}{uuid.uuid4().hex}"
        digest, size = hashlib.sha256(), 0
        try:
            async with await anyio.open_file(tmp, "xb") as out:
                async for chunk in chunks:
                    size += len(chunk)
                    if size > self.max_bytes:
                        raise UploadTooLargeError(self._too_large())
                    digest.update(chunk)
                    await out.write(chunk)
                await anyio.to_thread.run_sync(os.fsync, out.wrapped.fileno())
            try:
                os.link(tmp, final)  # fails when the name was taken meanwhile: never replaces
            except FileExistsError:
                raise UploadExistsError(f"name: an upload named {name!r} exists") from None
        finally:
            tmp.unlink(missing_ok=True)
        return UploadInfo(name, str(final), size, _mtime(final), digest.hexdigest())

    def list(self) -> list[UploadInfo]:
        """Every upload, by name."""
        found = []
        for path in sorted(self.folder.iterdir()):
            if path.name.startswith(".") or not path.is_file():
                continue
            found.append(UploadInfo(path.name, str(path), path.stat().st_size, _mtime(path)))
        return found

    def _too_large(self) -> str:
        return f"the upload is larger than the {self.max_bytes:,} bytes this server takes (STEPWISE_MAX_UPLOAD_BYTES)"


def _mtime(path: Path) -> datetime:
    return datetime.fromtimestamp(path.stat().st_mtime, UTC)
