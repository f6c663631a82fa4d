"""The REST service's settings, read once from the environment (and `stepwise serve` flags) and validated.

    STEPWISE_API_TOKEN          the bearer token every endpoint but /healthz wants; unset: loopback only
    STEPWISE_HOST, _PORT        where to listen (127.0.0.1:8000)
    STEPWISE_CORPUS             the corpus root: a folder or an object-store URI (./corpus)
    STEPWISE_STATE_DIR          local folder for the job spec, pid and log files (<corpus>/jobs)
    STEPWISE_DATA_DIRS          folders whose files REST jobs may read, separated by ':' (os.pathsep)
    STEPWISE_UPLOAD_DIR         where POST /v1/datasets puts files (<corpus>/uploads); always a data root
    STEPWISE_MAX_UPLOAD_BYTES   the largest upload (1 GiB)
    STEPWISE_TEACHERS           the teacher profiles file (YAML); unset: no profiles, no free URLs

A setting that does not validate stops `stepwise serve` with a message naming it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from stepwise.pipeline.admission import Admission, DataRoots, TeacherProfiles
from stepwise.pipeline.errors import JobSpecError
from stepwise.pipeline.spec import format_validation_error
from stepwise.storage.location import CorpusLocation

LOOPBACK = "127.0.0.1"


class ServiceSettings(BaseSettings):
    """Everything `stepwise serve` needs to know, from `STEPWISE_*` variables; flags given to the command win."""

    model_config = SettingsConfigDict(env_prefix="STEPWISE_", extra="forbid", frozen=True)

    api_token: SecretStr | None = Field(None, description="bearer token; None or empty: no auth, loopback only")
    host: str = LOOPBACK
    port: int = Field(8000, ge=0, le=65535)
    corpus: str = "corpus"
    state_dir: Path | None = None
    data_dirs: Annotated[tuple[Path, ...], NoDecode] = ()
    upload_dir: Path | None = None
    max_upload_bytes: int = Field(1 << 30, ge=1)
    teachers: Path | None = None

    @field_validator("data_dirs", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):  # as PATH is written: folders separated by os.pathsep
            return tuple(part for part in value.split(os.pathsep) if part.strip())
        return value

    @field_validator("data_dirs")
    @classmethod
    def _folders(cls, value: tuple[Path, ...]) -> tuple[Path, ...]:
        for folder in value:
            if not folder.is_dir():
                raise ValueError(f"{folder} is not a folder")
        return tuple(folder.absolute() for folder in value)

    @classmethod
    def load(cls, **overrides: object) -> ServiceSettings:
        """From the environment, with flags given to `stepwise serve` (None: not given) on top."""
        try:
            return cls(**{k: v for k, v in overrides.items() if v is not None})
        except ValidationError as exc:
            raise JobSpecError(f"service settings are invalid:\n{format_validation_error(exc)}") from None

    @property
    def token(self) -> str | None:
        return (self.api_token.get_secret_value() if self.api_token else None) or None

    @property
    def state_folder(self) -> Path:
        """Where the spec, pid and log files go: the state dir, or `jobs/` of a local corpus."""
        if self.state_dir is not None:
            return self.state_dir.absolute()
        corpus = CorpusLocation(self.corpus)
        if corpus.local is None:
            raise JobSpecError(f"the corpus {self.corpus} is on an object store: give the service a local state "
                               f"folder (--state-dir or STEPWISE_STATE_DIR) for its spec, pid and log files",
                               field="state_dir")
        return (corpus.local / "jobs").absolute()

    @property
    def uploads(self) -> Path:
        """The uploads folder: the one given, else `uploads/` of a local corpus, else of the state folder."""
        if self.upload_dir is not None:
            return self.upload_dir.absolute()
        local = CorpusLocation(self.corpus).local
        return ((local if local is not None else self.state_folder) / "uploads").absolute()

    def admission(self) -> Admission:
        """The rules REST jobs are held to: the uploads folder and the data dirs, and the teacher profiles."""
        self.uploads.mkdir(parents=True, exist_ok=True)
        profiles = TeacherProfiles.load(self.teachers) if self.teachers else TeacherProfiles()
        return Admission(DataRoots([self.uploads, *self.data_dirs]), profiles)
