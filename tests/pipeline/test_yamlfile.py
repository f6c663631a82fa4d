"""The strict YAML loader: what it refuses (aliases, keys given twice, deep nesting), how fast, and that its
messages name the line without quoting the file."""

from __future__ import annotations

import time

import pytest

from stepwise.pipeline.yamlfile import MAX_BYTES, YamlError, load_yaml

SECRET = "SECRET-MARKER-9f2c"


def alias_bomb(levels: int = 7) -> str:
    """The billion-laughs file: each level lists the previous one ten times (10**levels strings in the end)."""
    lines = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    names = "abcdefghijklmnop"
    for i in range(1, levels + 1):
        lines.append(f"{names[i]}: &{names[i]} [" + ", ".join([f"*{names[i - 1]}"] * 10) + "]")
    return "\n".join(lines) + "\n"


def load(text: str | bytes):
    return load_yaml(text, "job file j.yaml")


def refused(text: str | bytes) -> YamlError:
    with pytest.raises(YamlError) as info:
        load(text)
    return info.value


def test_the_alias_bomb_is_refused_at_its_first_alias_in_no_time():
    text = alias_bomb()
    assert len(text) < 600
    started = time.perf_counter()
    error = refused(text)
    elapsed = time.perf_counter() - started
    assert elapsed < 0.1, f"{elapsed:.3f} s"
    assert (error.line, error.column) == (2, 8)
    assert str(error) == ("job file j.yaml, line 2, column 8: YAML aliases (*name) are not allowed here: "
                          "write the value out")


@pytest.mark.parametrize(("text", "line", "column"), [
    ("base: &b {x: 1}\nother: *b\n", 2, 8),
    ("base: &b {x: 1}\nother:\n  <<: *b\n  y: 2\n", 3, 7),  # merge keys use aliases too
    ("- &x one\n- *x\n", 2, 3),
], ids=["plain", "merge_key", "in_a_list"])
def test_every_alias_is_refused_naming_its_line(text, line, column):
    error = refused(text)
    assert (error.line, error.column) == (line, column) and "aliases" in error.problem


def test_an_anchor_without_alias_is_harmless():
    assert load("a: &x 1\nb: 2\n") == {"a": 1, "b": 2}


@pytest.mark.parametrize(("text", "key", "first", "second"), [
    ("dataset: {path: a.jsonl}\ntask: exact\ndataset: {path: b.jsonl}\n", "'dataset'", 1, 3),
    ("teacher:\n  backend: replay\n  path: a\n  path: b\n", "'path'", 3, 4),
    ("{a: 1, b: 2, a: 3}\n", "'a'", 1, 1),
    ("- {n: 1}\n- n: 2\n  n: 3\n", "'n'", 2, 3),
    ("yes: 1\ntrue: 2\n", "True", 1, 2),  # YAML 1.1 reads both as the boolean true
    ("1: a\n1.0: b\n", "1.0", 1, 2),
], ids=["top_level", "nested", "flow", "in_a_list", "booleans", "numbers"])
def test_a_key_given_twice_is_refused_naming_it_and_both_lines(text, key, first, second):
    error = refused(text)
    assert error.line == second
    assert error.problem == f"key {key} is given twice in this mapping (first at line {first})"


def test_the_same_key_in_different_mappings_is_fine():
    assert load("a: {x: 1}\nb: {x: 2}\n") == {"a": {"x": 1}, "b": {"x": 2}}


def test_an_inline_merge_without_aliases_still_works():
    assert load("a:\n  <<: {x: 1, y: 1}\n  y: 2\n") == {"a": {"x": 1, "y": 2}}


@pytest.mark.parametrize("text", ["[" * 100_000, "{a: " * 100_000, "- " * 100_000,
                                  "".join(" " * i + "k:\n" for i in range(1400))],
                         ids=["flow_lists", "flow_maps", "block_lists", "block_maps"])
def test_deep_nesting_is_refused_fast(text):
    started = time.perf_counter()
    error = refused(text)
    assert time.perf_counter() - started < 2
    assert error.problem == "nested too deeply (more than 64 levels)" and error.line is not None


@pytest.mark.parametrize(("text", "line", "column", "words"), [
    (f"api_key: {SECRET}\n  bad: [{SECRET}\n", 2, 6, "mapping values are not allowed here"),
    (f"key: !{SECRET} value\n", 1, 6, "could not determine a constructor for the tag '…'"),
    (f'key: "{SECRET}\n', 2, 1, "found unexpected end of stream"),
    (f"- {SECRET}\nkey: {SECRET}\n", 2, 1, "expected <block end>, but found '?'"),
    (f"a: [{SECRET}\n", 2, 1, "expected ',' or ']', but got '<stream end>'"),
    (f"a: {SECRET}\n\tb: 1\n", 2, 1, "found character '\\t' that cannot start any token"),
    (f"a: {SECRET}\n---\nb: 2\n", 2, 1, "but found another document"),
    (f"a: {SECRET} \x00\n", 1, 23, "unacceptable character #x0000"),
    (f"a: {SECRET}\nb: caf\xe9\n".encode("latin-1"), 2, 7, "not valid UTF-8"),
    (f"a: !!python/object:os.system {SECRET}\n", 1, 4, "could not determine a constructor for the tag '…'"),
], ids=["mapping_values", "unknown_tag", "unclosed_quote", "block_end", "flow", "tab", "two_documents",
        "control_character", "latin1", "python_tag"])
def test_syntax_errors_name_line_and_column_and_never_quote_the_file(text, line, column, words):
    error = refused(text)
    assert (error.line, error.column) == (line, column), str(error)
    assert words in str(error), str(error)
    assert SECRET not in str(error) and "\n" not in str(error)


@pytest.mark.parametrize("bom", ["\ufeff", b"\xef\xbb\xbf"], ids=["text", "bytes"])
def test_a_byte_order_mark_is_dropped(bom):
    body = "a: 1\nb: [x, y]\n"
    assert load(bom + (body.encode() if isinstance(bom, bytes) else body)) == {"a": 1, "b": ["x", "y"]}


def test_a_file_larger_than_the_cap_is_refused_before_parsing():
    started = time.perf_counter()
    error = refused("a: 1\n" * (MAX_BYTES // 5 + 1))
    assert time.perf_counter() - started < 0.5
    assert "larger than 1,048,576 bytes" in str(error) and error.line is None


def test_the_error_type_carries_what_callers_need():
    error = refused("a: 1\na: 2\n")
    assert isinstance(error, ValueError)
    assert (error.source, error.line, error.column) == ("job file j.yaml", 2, 1)
