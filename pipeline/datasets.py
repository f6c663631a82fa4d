"""Read JSONL, JSON (array), CSV and Parquet datasets into Examples.

A row that cannot become an Example (missing field, wrong type, invalid UTF-8, larger than
`max_row_bytes`, nested deeper than `MAX_NESTING` levels, duplicate id) becomes a `RowReject` with a precise
reason: the job goes on and the row is stored as a rejected record. Only a file that cannot be read at all
raises `DatasetError`. Rows are walked without recursion, or only after their depth was checked, so no row
can end a job with a RecursionError; a message that shows a value shows a short form of it.

A JSON array is read element by element (ijson), so memory is bounded by a row, not by the file. A UTF-8
byte-order mark at the start of any text file is ignored.

`check_fields` and `check_gold` catch mapping mistakes before any request (a field that no row has, gold
answers none of which fits the task) and raise `JobSpecError` naming the field.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import itertools
import json
import re
import sys
from dataclasses import replace
from collections.abc import Callable, Generator, Iterable, Iterator
from json.encoder import encode_basestring  # type: ignore[attr-defined]  # json.dumps' own, in C
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ijson
import orjson

from stepwise.pipeline.errors import DatasetError, JobSpecError, StepwiseError, short
from stepwise.pipeline.spec import DatasetSpec
from stepwise.pipeline.types import Example, RowReject
from stepwise.storage.id_index import IdIndex

if TYPE_CHECKING:
    from stepwise.pipeline.tasks import Task

Row = dict[str, Any]
RawItem = tuple[int, Row | None, str | None, int]  # (row index, row, problem, size in bytes)
Skip = Callable[[int], bool] | None  # rows a reader need not decode (those of finished shards)
Item = Example | RowReject
SKIPPED = "skipped"  # the problem of a row that was not decoded: it belongs to a finished shard
BATCH_ROWS = 1000  # rows whose ids are resolved together

MAX_NESTING = 100   # levels of objects and lists in one row: real rows use a handful
SAMPLE_ROWS = 1000  # rows that check_fields and check_gold look at (the reader will stream: never all of them)
TOO_DEEP = f"nested too deeply (more than {MAX_NESTING} levels)"
_BOM = codecs.BOM_UTF8
# the JSON parsers' errors; ValueError also covers invalid UTF-8 and numbers Python will not convert
_PARSE_ERRORS = (ijson.JSONError, ValueError)


def detect_format(path: Path, declared: str = "auto") -> str:
    if declared != "auto":
        return declared
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    if suffix == ".json":  # JSON array, or JSON lines despite the name (as in the DSBS release)
        with path.open("rb") as fh:
            head = fh.read(4096).removeprefix(_BOM).lstrip()
        if head[:1] == b"{":
            return "jsonl" if _looks_like_lines(path) else "json"
        return "json" if head[:1] == b"[" else "jsonl"
    if suffix in (".csv", ".tsv"):
        return "csv"
    if suffix in (".parquet", ".pq"):
        return "parquet"
    raise DatasetError(f"cannot tell the format of {path}: give dataset.format (jsonl, json, csv, parquet)")


def _looks_like_lines(path: Path) -> bool:
    """True when the first line is a complete JSON object on its own (JSON lines named .json),
    unless that object is a `{"data": [...]}` wrapper written on one line. Reads parser events without
    building anything, so a deep or enormous first line costs time in proportion to its size, no more."""
    with path.open("rb") as fh:
        if fh.read(len(_BOM)) != _BOM:
            fh.seek(0)
        events = ijson.get_backend("python").basic_parse(_EscapedUtf8(_FirstLine(fh)))
        try:
            if next(events, None) != ("start_map", None):
                return False
            depth, key = 1, None
            for event, value in events:
                if depth == 1 and key == "data" and event == "start_array":
                    return False
                key = value if depth == 1 and event == "map_key" else None
                depth += (event in _OPEN) - (event in _CLOSE)
        except _PARSE_ERRORS:
            return False
    return True


class _FirstLine:
    """A binary stream that ends after the first line of `fh`, read in pieces (a one-line file may be huge)."""

    def __init__(self, fh: Any):
        self.fh, self.done = fh, False

    def read(self, size: int = -1) -> bytes:
        if self.done or size == 0:
            return b""
        piece = self.fh.readline(size if size > 0 else 1 << 16)
        self.done = not piece or piece.endswith(b"\n")
        return piece


def _nbytes(row: Any) -> int:
    """Size of a row in UTF-8 bytes, as JSON. Only for rows that passed `_value_problem`."""
    return len(json.dumps(row, ensure_ascii=False, default=str).encode("utf-8", errors="surrogateescape"))


def _has_surrogates(text: str) -> bool:
    """True when a string holds lone surrogates: bytes that were not UTF-8, or a lone `\\udXXX` escape."""
    if text.isascii():
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _value_problem(row: Any) -> str | None:
    """Why a decoded row cannot be used as it is (nested too deeply, invalid UTF-8), or None. Walks the row
    with an explicit stack: a row nested a million levels deep costs time in proportion, never the stack."""
    stack = [(row, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, str):
            if _has_surrogates(value):
                return "invalid UTF-8 in a string value"
        elif isinstance(value, dict | list):
            if depth > MAX_NESTING:
                return TOO_DEEP
            if isinstance(value, dict):
                if any(isinstance(k, str) and _has_surrogates(k) for k in value):
                    return "invalid UTF-8 in a string value"
                value = list(value.values())
            stack.extend((v, depth + 1) for v in value)
    return None


def _loads(text: str) -> Any:
    """One JSON value: orjson's reading (a quarter of the standard module's CPU), or, where orjson refuses, the
    standard module's, so what is accepted and each error's message stay those of `json` (NaN, a lone surrogate
    escape and an integer past 64 bits are JSON to it; nesting past its limit is a RecursionError)."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


def _read_jsonl(path: Path, max_bytes: int, skip: Skip = None) -> Iterator[RawItem]:
    with path.open("rb") as fh:
        index = -1
        for lineno, line in enumerate(fh):
            if lineno == 0:
                line = line.removeprefix(_BOM)
            if not line.strip():
                continue
            index += 1
            size = len(line)
            if skip is not None and skip(index):
                yield index, None, SKIPPED, size
                continue
            if size > max_bytes:
                yield index, None, f"row is {size} bytes, larger than max_row_bytes={max_bytes}", size
                continue
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield index, None, f"invalid UTF-8 at byte {exc.start}", size
                continue
            try:
                row = _loads(text)
            except RecursionError:
                yield index, None, TOO_DEEP, size
                continue
            except ValueError as exc:
                yield index, None, f"invalid JSON: {exc}", size
                continue
            # the line is valid UTF-8, so a lone surrogate can only come from a \u escape, and nesting deeper than
            # MAX_NESTING needs that many brackets: a line with neither (nearly all) needs no walk
            if b"\\u" in line or line.count(b"[") + line.count(b"{") > MAX_NESTING:
                problem = _value_problem(row)
                yield index, None if problem else row, problem, size
            else:
                yield index, row, None, size


# ── JSON arrays, element by element ──────────────────────────────────────────────────────────────────────────────
_OPEN = ("start_map", "start_array")
_CLOSE = ("end_map", "end_array")
_TOO_LARGE = "too large"
_RAW_BYTE = re.compile("[\udc80-\udcff]")  # what surrogateescape makes of a byte that is not UTF-8
# what the C parser (yajl) gets wrong: a surrogate escape that is not half of a pair (it stops, or writes '?' or
# a wrong character without a word), integers beyond 64 bits and exponents beyond a double ("overflow" errors)
_YAJL_TROUBLE = re.compile(rb"\\u[dD][89abAB][0-9a-fA-F]{2}(?!\\u[dD][c-fC-F][0-9a-fA-F]{2})"
                           rb"|(?<!\\u[dD][89abAB][0-9a-fA-F]{2})\\u[dD][c-fC-F][0-9a-fA-F]{2}"
                           rb"|\d{19}|[\d.][eE][+-]?\d{3}")


class _EscapedUtf8:
    """A byte stream over `raw` in which each byte that is not UTF-8 reads as the JSON escape `\\udcXX` (the
    code point Python's surrogateescape gives it), so the parser reads on and only the row holding the byte is
    rejected as invalid UTF-8. A byte right after an odd run of backslashes would itself be escaped: it reads
    as `q`, which JSON does not allow there, so that row stays a syntax error as before."""

    def __init__(self, raw: Any):
        self.raw = raw
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="surrogateescape")
        self.odd = False  # the text so far ends in an odd run of backslashes

    def read(self, size: int = -1) -> bytes:
        if size == 0:  # ijson asks for nothing to learn that the stream gives bytes
            return b""
        while True:
            chunk = self.raw.read(size if size > 0 else 1 << 16)
            text = self.decoder.decode(chunk, final=not chunk)
            if text or not chunk:
                return self._escape(text).encode("utf-8")

    def _escape(self, text: str) -> str:
        out, start = [], 0
        for m in _RAW_BYTE.finditer(text):
            i = j = m.start()
            while j > start and text[j - 1] == "\\":  # the backslashes right before the byte (linear overall)
                j -= 1
            run = i - j + (self.odd if j == 0 else 0)
            out += [text[start:i], "q" if run % 2 else f"\\u{ord(text[i]):04x}"]
            start = i + 1
        out.append(text[start:])
        trailing = len(text) - len(text.rstrip("\\"))
        self.odd = (self.odd + trailing) % 2 == 1 if trailing == len(text) else trailing % 2 == 1
        return "".join(out)


class _RowBuilder:
    """Builds one array element from parser events with an explicit stack, counting its size as
    `json.dumps(row, ensure_ascii=False)` would. Once the row has a problem (invalid UTF-8, larger than
    `max_bytes`) it stops building but keeps counting; once it is nested too deeply it only counts levels.
    So one element never costs more memory than a row may have."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self.row: Any = None
        self.levels: list[list[Any]] = []  # per open level: [container or None, items so far, key, is a map]
        self.depth = 0
        self.size = 0
        self.problem: str | None = None

    def feed(self, event: str, value: Any) -> bool:
        """Take one parser event; True once the element is complete."""
        if event in _CLOSE:
            self.depth -= 1
            if self.problem != TOO_DEEP:
                self.levels.pop()
        elif self.problem == TOO_DEEP:
            self.depth += event in _OPEN
        elif event == "map_key":
            level = self.levels[-1]
            self.size += 2 * bool(level[1]) + self._text_size(value) + 2
            level[1] += 1
            level[2] = value
        else:
            self._value(event, value)
        return self.depth == 0

    def result(self) -> tuple[Any, str | None, int]:
        if self.problem == _TOO_LARGE:
            return None, f"row is {self.size} bytes, larger than max_row_bytes={self.max_bytes}", self.size
        return (None if self.problem else self.row), self.problem, self.size

    def _value(self, event: str, value: Any) -> None:
        item: Any = value
        if event in _OPEN:
            self.depth += 1
            if self.depth > MAX_NESTING:
                self.problem, self.levels, self.row = TOO_DEEP, [], None
                return
            item = ({} if event == "start_map" else []) if self.problem is None else None
            self.size += 2
        else:
            self.size += self._text_size(value) if isinstance(value, str) else _scalar_size(value)
        if self.levels:
            level = self.levels[-1]
            if not level[3]:
                self.size += 2 * bool(level[1])
                level[1] += 1
            if level[0] is not None and self.problem is None:
                if level[3]:
                    level[0][level[2]] = item
                else:
                    level[0].append(item)
        elif self.problem is None:
            self.row = item
        if event in _OPEN:
            self.levels.append([item, 0, None, event == "start_map"])
        if self.problem is None and self.size > self.max_bytes:
            self._stop(_TOO_LARGE)

    def _text_size(self, text: str) -> int:
        escaped = encode_basestring(text)
        try:
            return len(escaped.encode("utf-8"))
        except UnicodeEncodeError:
            if self.problem is None:
                self._stop("invalid UTF-8 in a string value")
            return len(escaped.encode("utf-8", errors="surrogatepass"))

    def _stop(self, problem: str) -> None:
        self.problem, self.row = problem, None
        for level in self.levels:
            level[0] = None


def _scalar_size(value: Any) -> int:
    if value is None or value is True:
        return 4
    if value is False:
        return 5
    return len(float.__repr__(value) if isinstance(value, float) else int.__repr__(value))


def _pull(events: Iterator[tuple[str, Any]]) -> tuple[str, Any]:
    """The next parser event; a document that stops early is a parse error (never a StopIteration, which a
    generator would turn into a RuntimeError)."""
    try:
        return next(events)
    except StopIteration:
        raise ijson.IncompleteJSONError("premature EOF") from None


def _element(event: str, value: Any, events: Iterator[tuple[str, Any]], max_bytes: int) -> tuple[Any, str | None, int]:
    """(row, problem, size) of the array element that starts with this event."""
    if event not in _OPEN:  # a bare value: row_to_example says it is not an object
        bad = isinstance(value, str) and _has_surrogates(value)
        return (None, "invalid UTF-8 in a string value", 0) if bad else (value, None, 0)
    builder = _RowBuilder(max_bytes)
    while not builder.feed(event, value):
        event, value = _pull(events)
    return builder.result()


def _find_data_array(events: Iterator[tuple[str, Any]]) -> bool:
    """Inside a top-level object: skip to the value of its `data` key when that is an array."""
    depth, key = 1, None
    for event, value in events:
        if depth == 1:
            if event == "end_map":
                return False
            if event == "map_key":
                key = value
                continue
            if key == "data" and event == "start_array":
                return True
        depth += (event in _OPEN) - (event in _CLOSE)
    return False


def _array_rows(events: Iterator[tuple[str, Any]], path: Path, max_bytes: int) -> Iterator[RawItem]:
    event, value = _pull(events)
    if event == "start_map" and not _find_data_array(events):  # {"metadata": ..., "data": [...]}
        raise DatasetError(f"{path}: expected a JSON array of objects, got dict")
    if event not in _OPEN:
        raise DatasetError(f"{path}: expected a JSON array of objects, got {type(value).__name__}")
    for index in itertools.count():
        event, value = _pull(events)
        if event == "end_array":
            break
        yield (index, *_element(event, value, events, max_bytes))
    for _ in events:  # the rest of a wrapper, and the parser's check that the document ends there
        pass


def _json_items(path: Path, max_bytes: int, careful: bool) -> Iterator[RawItem]:
    with path.open("rb") as fh:
        if fh.read(len(_BOM)) != _BOM:
            fh.seek(0)
        if careful:
            events = ijson.get_backend("python").basic_parse(_EscapedUtf8(fh), use_float=True)
        else:
            events = ijson.basic_parse(fh, use_float=True)
        yield from _array_rows(events, path, max_bytes)


def _needs_careful_parser(path: Path) -> bool:
    """True when the file holds bytes that are not UTF-8 (the C parser stops there), or what `_YAJL_TROUBLE`
    matches. One pass at C speed (decoding, a regular expression); a false alarm only costs speed."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    tail = b""
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError:
                return True
            if _YAJL_TROUBLE.search(tail + chunk):
                return True
            tail = chunk[-11:]
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return True
    return False


def _parse_problem(exc: Exception) -> str:
    """The parser's words for what is wrong, without the excerpt of the file that yajl appends."""
    raw = exc.args[0] if exc.args and isinstance(exc.args[0], str | bytes) else type(exc).__name__
    text = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else raw
    line = text.split("\n", 1)[0]
    return re.split(r"""['"]""", line, maxsplit=1)[0].strip()[:120] or type(exc).__name__


def _read_json(path: Path, max_bytes: int, skip: Skip = None) -> Iterator[RawItem]:
    """Elements of a JSON array (or of the array under `data`), one at a time: the C parser when the file is
    clean UTF-8, else the pure-Python one over a stream where bytes that are not UTF-8 read as escapes."""
    done = 0
    try:
        for item in _json_items(path, max_bytes, careful=_needs_careful_parser(path)):
            yield item
            done += 1
    except _PARSE_ERRORS as exc:
        raise DatasetError(f"{path} is not valid JSON: {_parse_problem(exc)} (after {done} array elements)") from None


def _read_csv(path: Path, max_bytes: int, skip: Skip = None) -> Iterator[RawItem]:
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    with path.open("r", encoding="utf-8-sig", errors="surrogateescape", newline="") as fh:
        reader = csv.DictReader(fh, delimiter=delimiter)
        index = -1
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                index += 1
                yield index, None, f"malformed CSV: {exc}", 0
                continue
            index += 1
            if None in row:
                yield index, None, f"row has {len(row) - 1 + len(row[None])} fields, the header has {len(row) - 1}", 0
                continue
            size = sum(len(v.encode("utf-8", errors="surrogateescape")) for v in row.values() if isinstance(v, str))
            if size > max_bytes:
                yield index, None, f"row is {size} bytes, larger than max_row_bytes={max_bytes}", size
            elif any(isinstance(v, str) and _has_surrogates(v) for v in itertools.chain(row, row.values())):
                yield index, None, "invalid UTF-8 in a field", size
            else:
                yield index, row, None, size


def _read_parquet(path: Path, max_bytes: int, skip: Skip = None) -> Iterator[RawItem]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises several types for a bad file
        raise DatasetError(f"cannot read Parquet file {path}: {exc}") from None
    index = -1
    for batch in pf.iter_batches(batch_size=4096):
        if skip is not None and skip(index + 1) and skip(index + batch.num_rows):  # a finished shard's rows
            for _ in range(batch.num_rows):
                index += 1
                yield index, None, SKIPPED, 0
            continue
        for row in batch.to_pylist():
            index += 1
            problem = _value_problem(row)
            if problem:
                yield index, None, problem, 0
                continue
            size = _nbytes(row)
            if size > max_bytes:
                yield index, None, f"row is {size} bytes, larger than max_row_bytes={max_bytes}", size
            else:
                yield index, row, None, size


_READERS = {"jsonl": _read_jsonl, "json": _read_json, "csv": _read_csv, "parquet": _read_parquet}


def content_id(row: Row) -> str:
    """A stable id from the row's content, for datasets without an id column."""
    blob = json.dumps(row, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode("utf-8", errors="surrogatepass")).hexdigest()[:16]


def _text(row: Row, field: str) -> str:
    if field not in row:
        raise ValueError(f"missing field {field!r}")
    value = row[field]
    if not isinstance(value, str):
        raise ValueError(f"field {field!r} should be a string, got {type(value).__name__}")
    if not value.strip():
        raise ValueError(f"field {field!r} is empty")
    return value


def _gold(row: Row, field: str) -> str:
    if field not in row:
        raise ValueError(f"missing field {field!r}")
    value = row[field]
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str) and value.strip():
        return value
    raise ValueError(f"field {field!r} should be a string or a number, got {type(value).__name__}: {short(value)}")


def _choices(row: Row, field: str) -> tuple[str, ...]:
    if field not in row:
        raise ValueError(f"missing field {field!r}")
    value = row[field]
    if isinstance(value, str):  # CSV cells: a JSON list, or choices separated by '|'
        try:
            value = json.loads(value)
        except RecursionError:
            value = None
        except ValueError:
            value = value.split("|")
        if value is None or _value_problem(value) == TOO_DEEP:
            raise ValueError(f"field {field!r} is {TOO_DEEP}")
    if not isinstance(value, list) or len(value) < 2 or not all(isinstance(c, str) and c.strip() for c in value):
        raise ValueError(f"field {field!r} should be a list of at least two non-empty strings")
    return tuple(value)


def row_to_example(row: Row, spec: DatasetSpec, index: int) -> Example:
    """Map one row through the spec's field names; raise ValueError saying what is wrong."""
    if not isinstance(row, dict):
        raise ValueError(f"row should be an object, got {type(row).__name__}")
    meta: dict[str, Any] = {"row": index}
    if spec.premise_field and spec.hypothesis_field:
        premise, hypothesis = _text(row, spec.premise_field), _text(row, spec.hypothesis_field)
        text = f"Premise: {premise}\nHypothesis: {hypothesis}"
        meta.update(premise=premise, hypothesis=hypothesis)
    else:
        text = _text(row, spec.question_field)
    gold = _gold(row, spec.answer_field) if spec.answer_field else None
    choices = _choices(row, spec.choices_field) if spec.choices_field else None
    if spec.id_field:
        if spec.id_field not in row or not isinstance(row[spec.id_field], str | int) or row[spec.id_field] == "":
            raise ValueError(f"field {spec.id_field!r} should be a non-empty string or integer id")
        example_id = str(row[spec.id_field])
    else:
        example_id = content_id(row)
    return Example(id=example_id, input=text, gold=gold, choices=choices, meta=meta)


def _raw_rows(spec: DatasetSpec, skip: Skip = None) -> Iterator[RawItem]:
    """The reader's rows, up to `limit`."""
    path = Path(spec.path)
    if not path.is_file():
        raise DatasetError(f"dataset file not found: {path}")
    rows = _READERS[detect_format(path, spec.format)](path, spec.max_row_bytes, skip)
    return itertools.islice(rows, spec.limit) if spec.limit is not None else rows


def _item(index: int, row: Row | None, problem: str | None, spec: DatasetSpec) -> Item:
    """One row as an Example, or as a RowReject saying why it cannot be one (its id not yet checked)."""
    if problem is None:
        try:
            return row_to_example(row, spec, index)
        except ValueError as exc:
            problem = str(exc)
        except RecursionError:  # rows are depth-checked on reading; this is the last line of defence
            problem = TOO_DEEP
    rid = None
    if isinstance(row, dict) and spec.id_field and isinstance(row.get(spec.id_field), str | int):
        rid = str(row[spec.id_field])
    return RowReject(id=rid or f"row-{index}", reason=f"row {index}: {problem}")


def _checked_ids(batch: list[tuple[int, Item]], spec: DatasetSpec, ids: IdIndex) -> Iterator[tuple[int, Item]]:
    """A batch of rows with duplicate ids settled: with an id column, a repeated id is a bad row naming the first;
    without one (ids are content hashes), identical rows get distinct stable ids `<hash>~2`, `~3`, ..."""
    examples = [(index, item) for index, item in batch if isinstance(item, Example)]
    firsts = iter(ids.resolve([(item.id, index) for index, item in examples]))
    settled: dict[int, Item] = {}
    for index, item in examples:
        first, nth = next(firsts)
        if first == index:
            continue
        if spec.id_field:
            settled[index] = RowReject(id=f"row-{index}", reason=f"row {index}: duplicate id {short(item.id)} "
                                                                 f"(first at row {first})")
        else:
            settled[index] = replace(item, id=f"{item.id}~{nth}")
    for index, item in batch:
        yield index, settled.get(index, item)


def _items(spec: DatasetSpec, ids: IdIndex, skip: Skip = None) -> Iterator[tuple[int, Item | None]]:
    """(row index, item) for every row in file order; None for a skipped row (not decoded). Ids are checked
    against the index a batch at a time, so memory holds a batch of rows, never the dataset."""
    batch: list[tuple[int, Item]] = []
    size = 8  # the first batches are small (a reader that wants a few rows gets them at once), then BATCH_ROWS
    try:
        for index, row, problem, _size in _raw_rows(spec, skip):
            if problem == SKIPPED:
                yield from _checked_ids(batch, spec, ids)
                batch = []
                yield index, None
                continue
            batch.append((index, _item(index, row, problem, spec)))
            if len(batch) >= size:
                yield from _checked_ids(batch, spec, ids)
                batch, size = [], min(size * 4, BATCH_ROWS)
    except DatasetError:  # the file breaks off: the rows before the break still count
        yield from _checked_ids(batch, spec, ids)
        raise
    yield from _checked_ids(batch, spec, ids)


def read_examples(spec: DatasetSpec, head: int | None = None) -> Generator[Item, None, None]:
    """Yield an Example or a RowReject for every row (or the first `head`), in file order (ids checked in memory:
    for one reading)."""
    ids = IdIndex()
    try:
        for _, item in itertools.islice(_items(spec, ids), head):
            yield item
    finally:
        ids.close()


def read_shards(spec: DatasetSpec, shard_size: int, done: set[int], ids: IdIndex) -> Iterator[tuple[int, list[Item]]]:
    """(shard index, its items) for every shard not in `done`, streamed: shard k is rows k*shard_size up to the
    next. The rows of done shards are not decoded when the id index already knows them (a resumed job), and only
    their ids are read otherwise."""
    skip = None if ids.fresh else (lambda index: index // shard_size in done)
    shard, items = 0, []
    for index, item in _items(spec, ids, skip):
        if index // shard_size != shard:
            if items and shard not in done:
                yield shard, items
            shard, items = index // shard_size, []
        if item is not None:
            items.append(item)
    if items and shard not in done:
        yield shard, items


def count_rows(spec: DatasetSpec) -> int | None:
    """How many rows the dataset has (up to `limit`), when that is cheap to know: JSON lines are counted without
    decoding them, Parquet says so in its footer; None for CSV and JSON arrays (a quoted newline or a nested array
    can only be told by parsing)."""
    path = Path(spec.path)
    fmt = detect_format(path, spec.format)
    if fmt == "jsonl":
        with path.open("rb") as fh:
            count = sum(1 for line in fh if line.strip() and line.strip() != _BOM)
    elif fmt == "parquet":
        import pyarrow.parquet as pq

        count = pq.ParquetFile(path).metadata.num_rows
    else:
        return None
    return min(count, spec.limit) if spec.limit is not None else count


# ── mapping checks, before any request ───────────────────────────────────────────────────────────────────────────
def _mapped_fields(spec: DatasetSpec) -> list[str]:
    """The spec's field settings that rows are read through (question_field only without premise/hypothesis)."""
    names = ["id_field"]
    if spec.premise_field and spec.hypothesis_field:
        names += ["premise_field", "hypothesis_field"]
    else:
        names.append("question_field")
    names += ["answer_field", "choices_field"]
    return [name for name in names if getattr(spec, name)]


def _key_list(keys: Iterable[Any], limit: int = 20) -> str:
    names = [str(k) if len(str(k)) <= 40 else str(k)[:37] + "..." for k in itertools.islice(keys, limit + 1)]
    return ", ".join(names[:limit]) + (", ..." if len(names) > limit else "")


def check_fields(spec: DatasetSpec) -> None:
    """Raise JobSpecError when a field the spec names (question_field, id_field, answer_field, ...) is in
    no row among the first SAMPLE_ROWS, showing the keys those rows do have: every row would be a bad_row.
    A field that some rows lack is not this error: those rows become bad_rows. Files with no readable
    object rows pass: their rows become bad_rows that say why."""
    path = Path(spec.path)
    reader = _READERS[detect_format(path, spec.format)]
    sample = min(SAMPLE_ROWS, spec.limit or SAMPLE_ROWS)
    keys: dict[Any, None] = {}
    wanted = {getattr(spec, name) for name in _mapped_fields(spec)}
    rows = reader(path, spec.max_row_bytes)
    read = 0
    try:
        for _index, row, _problem, _size in itertools.islice(rows, sample):
            read += 1
            if isinstance(row, dict):
                keys.update(dict.fromkeys(row))
                if wanted <= keys.keys():
                    return  # every field seen: the rest need not be read
    finally:
        rows.close()
    if not keys:
        return
    seen = f"the first {read:,} rows have" if read == sample else ("its one row has" if read == 1 else
                                                                   f"its {read:,} rows have")
    for name in _mapped_fields(spec):
        field = getattr(spec, name)
        if field not in keys:
            raise JobSpecError(f"dataset.{name}: no row of {path.name} has a field {short(field)} "
                               f"({seen}: {_key_list(keys)})", field=f"dataset.{name}")


def check_gold(task: Task, examples: Iterable[Example]) -> None:
    """Raise JobSpecError when examples have gold answers and none of the first SAMPLE_ROWS fits the task's
    label space (yes_no with gold 'maybe', multiple_choice with gold texts that are not choices): every row
    would be a bad_row, so the answer field or the task kind is wrong. Some misfits are fine: bad_rows."""
    labeled: list[Example] = []  # read until one fits
    reason = ""
    for example in itertools.islice((e for e in examples if e.gold is not None), SAMPLE_ROWS):
        labeled.append(example)
        try:
            task.normalize_gold(example.gold, task.prepare(example))
            return
        except (ValueError, StepwiseError) as exc:
            reason = reason or str(exc)
    if not labeled:
        return
    golds = ", ".join(short(g) for g in itertools.islice(dict.fromkeys(e.gold for e in labeled), 3))
    rows = f"the first {len(labeled):,} labeled rows" if len(labeled) == SAMPLE_ROWS else (
        f"all {len(labeled):,} labeled rows" if len(labeled) > 1 else "the one labeled row")
    raise JobSpecError(f"dataset.answer_field: no gold answer fits task kind {task.kind!r} in {rows} "
                       f"(e.g. {golds}; {reason[:200]})", field="dataset.answer_field")
