"""Strict YAML for the files people write by hand: job files, prompt templates, a server's teacher profiles.

`yaml.safe_load` accepts three things this loader refuses, each with the line and column (1-based):

- an alias (`*name`): nested aliases expand exponentially (a 567-byte job file with seven levels of them took
  6 s and 950 MB), and nothing we read needs them;
- a key given twice in one mapping: PyYAML keeps the last one silently, so a second `dataset:` replaced the first;
- nesting deeper than `MAX_DEPTH` levels: PyYAML composes recursively, so 1,000 `[` end in a RecursionError.

A file is read up to `MAX_BYTES` (the pure-Python parser is slow, and these files are small). A UTF-8
byte-order mark is dropped. Error messages never quote the file: PyYAML's own message shows the offending
lines, and a file named by a job may hold what its author should not see, so only the line, the column and
PyYAML's description of the problem (with anything it quotes from the file cut out) are kept.

Callers turn `YamlError` into their own error (`JobSpecError`, `PromptError`, ...).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from yaml.events import AliasEvent
from yaml.nodes import MappingNode

from stepwise.pipeline.errors import short

MAX_DEPTH = 64
MAX_BYTES = 1 << 20
_BOM = "\ufeff"
_MERGE_TAG = "tag:yaml.org,2002:merge"
# what PyYAML quotes in a message: a character or an escape such as '\x00', one of its token names
# ('<block end>'), or text from the file (a tag, say), which is cut out
_QUOTED = re.compile(r"'([^']*)'|\"([^\"]*)\"")
_TOKEN_NAME = re.compile(r"<[a-z ]+>")


class YamlError(ValueError):
    """A YAML file is malformed or uses what the strict loader refuses. `line` and `column` are 1-based
    (None when PyYAML gave no position); the message names the source, the position and the problem."""

    def __init__(self, source: str, problem: str, line: int | None = None, column: int | None = None):
        where = f", line {line}, column {column}" if line is not None else ""
        super().__init__(f"{source}{where}: {problem}")
        self.source, self.problem, self.line, self.column = source, problem, line, column


class _Refused(yaml.MarkedYAMLError):
    """What the strict loader refuses; its message is ours, so it is shown as it is."""

    def __init__(self, problem: str, mark: yaml.Mark):
        super().__init__(problem=problem, problem_mark=mark)


class StrictLoader(yaml.SafeLoader):
    """`yaml.SafeLoader` without aliases, duplicate keys or unbounded nesting."""

    def __init__(self, stream: str):
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, AliasEvent):
            raise _Refused("YAML aliases (*name) are not allowed here: write the value out", event.start_mark)
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _Refused(f"nested too deeply (more than {MAX_DEPTH} levels)", event.start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        if isinstance(node, MappingNode):
            _refuse_duplicate_keys(self, node)
        return super().construct_mapping(node, deep=deep)


def _refuse_duplicate_keys(loader: StrictLoader, node: MappingNode) -> None:
    """Raise at the second occurrence of a key, naming it and the line of the first."""
    first: dict[Any, Any] = {}
    for key_node, _value in node.value:
        if key_node.tag == _MERGE_TAG:
            continue
        key = loader.construct_object(key_node, deep=True)
        try:
            earlier = first.setdefault(key, key_node)
        except TypeError:  # an unhashable key: PyYAML's own check reports it
            continue
        if earlier is not key_node:
            raise _Refused(f"key {short(key)} is given twice in this mapping "
                           f"(first at line {earlier.start_mark.line + 1})", key_node.start_mark)


def _clean(problem: str | None) -> str:
    """PyYAML's description of a problem, without what it quotes from the file, on one short line."""
    text = " ".join((problem or "not valid YAML").split())
    return _QUOTED.sub(_keep_short, text)[:200]


def _keep_short(m: re.Match[str]) -> str:
    inner = m.group(1) if m.group(1) is not None else m.group(2)
    return m.group(0) if len(inner) <= 4 or _TOKEN_NAME.fullmatch(inner) else "'…'"


def _position(text: str, index: int) -> tuple[int, int]:
    line = text.count("\n", 0, index) + 1
    return line, index - (text.rfind("\n", 0, index) + 1) + 1


def load_yaml(text: str | bytes, source: str) -> Any:
    """Parse one YAML document strictly (see the module docstring). `source` starts every message, e.g.
    `job file /srv/jobs/a.yaml`. Bytes are read as UTF-8; a leading byte-order mark is dropped."""
    if len(text) > MAX_BYTES:
        raise YamlError(source, f"the file is larger than {MAX_BYTES:,} bytes; YAML files here are small")
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            before = text[:exc.start].decode("utf-8", errors="replace")
            line, column = _position(before, len(before))
            raise YamlError(source, "not valid UTF-8", line, column) from None
    text = text.removeprefix(_BOM)
    loader = None
    try:
        loader = StrictLoader(text)
        return loader.get_single_data()
    except yaml.MarkedYAMLError as exc:
        return _raise_marked(source, exc)
    except yaml.reader.ReaderError as exc:
        line, column = _position(text, exc.position)
        raise YamlError(source, f"not valid YAML: unacceptable character #x{exc.character:04x}: {exc.reason}",
                        line, column) from None
    except yaml.YAMLError:
        raise YamlError(source, "not valid YAML") from None
    except RecursionError:  # the depth limit above should make this unreachable
        raise YamlError(source, "nested too deeply") from None
    finally:
        if loader is not None:
            loader.dispose()


def _raise_marked(source: str, exc: yaml.MarkedYAMLError) -> Any:
    mark = exc.problem_mark or exc.context_mark
    if isinstance(exc, _Refused):
        problem = str(exc.problem)
    else:
        problem = "not valid YAML: " + _clean(exc.problem)
        if exc.context:
            where = f" started at line {exc.context_mark.line + 1}" if exc.context_mark else ""
            problem += f" ({_clean(exc.context)}{where})"
    line, column = (mark.line + 1, mark.column + 1) if mark else (None, None)
    raise YamlError(source, problem, line, column) from None


def load_yaml_file(path: str | Path, source: str) -> tuple[Any, bytes]:
    """Read and parse a YAML file; returns the data and the bytes read (for hashing). OSError passes
    through, so callers can say the file cannot be read in their own words."""
    with Path(path).open("rb") as fh:
        raw = fh.read(MAX_BYTES + 1)
    return load_yaml(raw, source), raw


def read_yaml(path: str | Path, what: str, error: type[Exception]) -> tuple[Any, bytes]:
    """`load_yaml_file` for a reader that speaks its own error: a file that cannot be read or parsed raises
    `error` with a message naming `what` (e.g. "job file") and the file, never quoting it."""
    try:
        return load_yaml_file(path, f"{what} {path}")
    except OSError as exc:
        raise error(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    except YamlError as exc:
        raise error(str(exc)) from None
