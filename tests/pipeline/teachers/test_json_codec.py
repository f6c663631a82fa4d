"""The engine's JSON codec: orjson where it can, the standard module for what orjson refuses and JSON allows,
so a faster parser never changes what is accepted."""

from __future__ import annotations

import json

import pytest

from stepwise.pipeline.teachers.transport import dump_json, load_json, parse_chat_text

BODY = {"choices": [{"message": {"content": "Answer: 7 \u00e9\u4e2d"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2}}


@pytest.mark.parametrize("data", [json.dumps(BODY), json.dumps(BODY).encode(), json.dumps(BODY, ensure_ascii=False)])
def test_load_json_reads_text_and_bytes(data):
    assert load_json(data) == BODY


def test_load_json_falls_back_for_what_orjson_refuses():
    # a lone surrogate escape is JSON; orjson refuses it
    assert load_json('{"a": "\\ud800x"}') == {"a": "\ud800x"}
    assert load_json(b'{"a": "\\udc80", "b": 1}') == {"a": "\udc80", "b": 1}
    assert load_json(b'{"n": 123456789012345678901234567890}') == {"n": pytest.approx(1.2345678901234568e29)}


@pytest.mark.parametrize("bad", ["", "{", "{'a': 1}", b"\xff\xfe", "[1, 2,]"])
def test_load_json_raises_value_error_for_what_is_not_json(bad):
    with pytest.raises(ValueError):
        load_json(bad)


def test_dump_json_round_trips_and_falls_back_for_big_integers():
    assert json.loads(dump_json(BODY)) == BODY
    big = {"extra": 2 ** 70}
    assert dump_json(big) == b'{"extra": 1180591620717411303424}'
    assert json.loads(dump_json(big)) == big


def test_parse_chat_text_takes_the_raw_bytes_of_a_response():
    assert parse_chat_text(json.dumps(BODY).encode(), {}) == parse_chat_text(json.dumps(BODY), {})
