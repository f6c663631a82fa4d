"""What a job submitted over REST may name: files inside the server's data roots, teachers by the operator's profiles.

A token holder is trusted to run jobs, not to read the server's files or to point its keys somewhere else. Both
limits are enforced on what the job will actually use, not by screening its text:

- **Data roots.** Every path in the job (dataset, prompt template, replay file) is resolved, symlinks and `..`
  included, to the real file it names; it must lie inside one of the data roots (`STEPWISE_DATA_DIRS`, plus the
  uploads folder). A relative path is looked up under each root in turn, never under the server's working
  directory. A path outside the roots gets the same answer whether or not it exists, so the service never tells
  a caller what the rest of the machine holds. The job process checks again before it opens anything
  (`stepwise run --data-dir`), with the resolved paths the service wrote into the spec.
- **Teacher profiles.** The operator declares teachers in a YAML file (`STEPWISE_TEACHERS`): the base URL, the
  environment variable holding the key, the models a job may ask for and the limits it may not exceed. A job
  names a profile and a model; it cannot change the URL, the key, the cache namespace or the vLLM engine, so
  the server's keys only ever go to the URLs the operator wrote down. With `allow_free_urls: true` a job may
  name a URL of its own, and then no key is sent with it. A recorded (`replay`) teacher needs no profile.

Jobs started with the CLI (`stepwise run`) by the machine's own user are not admitted: they keep every freedom.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from stepwise.pipeline.errors import JobSpecError
from stepwise.pipeline.spec import JobSpec, TeacherSpec, format_validation_error

# the teacher fields a job may set when it names a profile; everything else comes from the profile
JOB_TEACHER_FIELDS = frozenset({"backend", "profile", "model", "max_concurrency", "rpm", "tpm", "timeout_s",
                                "max_attempts", "supports_n", "structured_output", "transport", "request_id_headers",
                                "poll_interval_s", "max_requests_per_batch", "max_bytes_per_batch",
                                "completion_window"})
# the profile's values of these are ceilings: a job may ask for less, never more
LIMIT_FIELDS = ("max_concurrency", "rpm", "tpm")
_TEACHER = TypeAdapter(TeacherSpec)


class DataRoots:
    """The folders whose files REST jobs may read. `resolve` turns a path of a job into the real path of a file
    inside one of them, or raises JobSpecError naming the field."""

    def __init__(self, roots: Sequence[str | Path]):
        self.roots = tuple(Path(os.path.realpath(r)) for r in roots)

    def inside(self, real: Path) -> bool:
        return any(real == root or root in real.parents for root in self.roots)

    def resolve(self, field: str, path: str) -> str:
        given = Path(path)  # never expanded: `~` is not the server user's home to a caller
        # an absolute path names one file; a relative one is looked up under each root in turn. Whatever escapes
        # the roots is refused before anything is asked of it, so the answer never depends on what lies outside.
        for candidate in [given] if given.is_absolute() else [root / given for root in self.roots]:
            real = Path(os.path.realpath(candidate))
            if not self.inside(real):
                raise JobSpecError(f"{field}: {path!r} is not inside the server's data roots; upload the file "
                                   f"(POST /v1/datasets) or ask the operator to add its folder to "
                                   f"STEPWISE_DATA_DIRS", field=field)
            if real.is_file():
                return str(real)
        raise JobSpecError(f"{field}: no such file in the server's data roots: {path!r}", field=field)


class TeacherProfile(BaseModel):
    """One teacher an operator offers: a teacher block (without `model`) plus the models jobs may ask for."""

    model_config = ConfigDict(extra="allow", frozen=True)
    backend: Literal["openai", "openai_batch", "vllm"]
    models: list[str] = Field(min_length=1, description="models a job may name; shell patterns such as 'gpt-4.1*'")

    @property
    def fields(self) -> dict[str, Any]:
        """The teacher fields the profile sets (its `models` list excluded)."""
        return {"backend": self.backend, **(self.model_extra or {})}

    def allows(self, model: str) -> bool:
        return any(fnmatch.fnmatchcase(model, pattern) for pattern in self.models)


class TeacherProfiles(BaseModel):
    """The server's teacher profiles file (`STEPWISE_TEACHERS`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    allow_free_urls: bool = Field(False, description="jobs may name a base_url of their own; no key is ever sent "
                                                     "with one")
    profiles: dict[str, TeacherProfile] = Field(default_factory=dict)

    def model_post_init(self, context: Any) -> None:
        for name, profile in self.profiles.items():  # each profile must make a valid teacher block
            try:
                _TEACHER.validate_python({**profile.fields, "model": profile.models[0]})
            except ValidationError as exc:
                raise ValueError(f"profile {name!r} is not a valid teacher:\n{format_validation_error(exc)}") \
                    from None

    @classmethod
    def load(cls, path: str | Path) -> TeacherProfiles:
        """Read a profiles file (strict YAML); every problem names the file and the field."""
        from stepwise.pipeline.yamlfile import read_yaml

        data, _ = read_yaml(path, "teacher profiles", JobSpecError)
        try:
            return cls.model_validate(data or {})
        except ValidationError as exc:
            raise JobSpecError(f"teacher profiles {path} are invalid:\n{format_validation_error(exc)}") from None


def apply_profile(teacher: Any, profiles: TeacherProfiles, *, strict: bool) -> Any:
    """The teacher block with its profile's fields under the job's own. `strict` (a REST job): the job may set
    only its model (one the profile offers), limits up to the profile's and how it talks to the teacher;
    otherwise (a job file run by the machine's own user) the job's fields simply win."""
    profile = profiles.profiles.get(teacher.profile)
    if profile is None:
        raise JobSpecError(f"teacher.profile: no profile {teacher.profile!r} (declared: "
                           f"{', '.join(sorted(profiles.profiles)) or 'none'})", field="teacher.profile")
    if profile.backend != teacher.backend:
        raise JobSpecError(f"teacher.backend: profile {teacher.profile!r} is a {profile.backend} teacher",
                           field="teacher.backend")
    given = teacher.model_fields_set
    if strict:
        _check_against(profile, teacher)
    return _TEACHER.validate_python({**profile.fields, **{name: getattr(teacher, name) for name in given}})


def _check_against(profile: TeacherProfile, teacher: Any) -> None:
    given = teacher.model_fields_set
    fixed = sorted(given - JOB_TEACHER_FIELDS)
    if fixed:
        raise JobSpecError(f"teacher.{fixed[0]}: set by the teacher profile {teacher.profile!r}; a job cannot "
                           f"change it", field=f"teacher.{fixed[0]}")
    if not profile.allows(teacher.model):
        raise JobSpecError(f"teacher.model: {teacher.model!r} is not offered by profile {teacher.profile!r} "
                           f"(it offers {', '.join(profile.models)})", field="teacher.model")
    for name in LIMIT_FIELDS:
        ceiling = profile.fields.get(name)
        if ceiling is not None and name in given and (getattr(teacher, name) is None
                                                       or getattr(teacher, name) > ceiling):
            raise JobSpecError(f"teacher.{name}: profile {teacher.profile!r} allows at most {ceiling}",
                               field=f"teacher.{name}")


def admit_teacher(teacher: Any, profiles: TeacherProfiles) -> Any:
    """The teacher block a REST job runs with: its profile's, with the job's model and lower limits; or, where
    the operator allows free URLs, the job's own URL without any key."""
    if teacher.backend == "replay":
        return teacher
    if teacher.profile is not None:
        return apply_profile(teacher, profiles, strict=True)
    if teacher.backend == "vllm" or not profiles.allow_free_urls:
        raise JobSpecError(f"teacher.profile: this server runs {teacher.backend} teachers by profile; name one "
                           f"({', '.join(sorted(profiles.profiles)) or 'none are declared'})",
                           field="teacher.profile")
    if "api_key_env" in teacher.model_fields_set and teacher.api_key_env is not None:
        raise JobSpecError("teacher.api_key_env: a teacher URL of the job's own never gets a key of the server; "
                           "set it to null, or name a profile", field="teacher.api_key_env")
    return teacher.model_copy(update={"api_key_env": None})


def resolve_profile(spec: JobSpec) -> JobSpec:
    """A job file's teacher profile, from the file `STEPWISE_TEACHERS` names (the REST service's own), so that a
    job names its teacher the same way in a file and over REST."""
    if getattr(spec.teacher, "profile", None) is None:
        return spec
    path = os.environ.get("STEPWISE_TEACHERS")
    if not path:
        raise JobSpecError("teacher.profile: profiles are declared in the file STEPWISE_TEACHERS names, and it is "
                           "not set", field="teacher.profile")
    teacher = apply_profile(spec.teacher, TeacherProfiles.load(path), strict=False)
    return spec.model_copy(update={"teacher": teacher})


def confine_paths(spec: JobSpec, roots: DataRoots) -> JobSpec:
    """The spec with every file it names resolved to a real path inside the data roots (JobSpecError if not)."""
    dataset = spec.dataset.model_copy(update={"path": roots.resolve("dataset.path", spec.dataset.path)})
    prompt, teacher = spec.prompt, spec.teacher
    if prompt.path:
        prompt = prompt.model_copy(update={"path": roots.resolve("prompt.path", prompt.path)})
    if getattr(teacher, "path", None):
        teacher = teacher.model_copy(update={"path": roots.resolve("teacher.path", teacher.path)})
    return spec.model_copy(update={"dataset": dataset, "prompt": prompt, "teacher": teacher})


class Admission:
    """The REST service's rules for a submitted job: data roots for its files, profiles for its teacher, the
    server's own Ray cluster for its executor."""

    def __init__(self, roots: DataRoots, profiles: TeacherProfiles):
        self.roots, self.profiles = roots, profiles

    def admit(self, spec: JobSpec) -> JobSpec:
        """The spec the job will run with, or JobSpecError naming the first field a REST job may not use."""
        if spec.executor.address is not None:
            raise JobSpecError("executor.address: a REST job runs on the server's own executor (its RAY_ADDRESS); "
                               "it cannot name a cluster", field="executor.address")
        teacher = admit_teacher(spec.teacher, self.profiles)
        return confine_paths(spec.model_copy(update={"teacher": teacher}), self.roots)
