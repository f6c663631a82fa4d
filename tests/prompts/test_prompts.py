"""Prompt templates: every built-in loads for the kinds it serves, renders chat messages, and is hashed."""

from __future__ import annotations

import hashlib

import pytest

from stepwise.pipeline.errors import PromptError
from stepwise.pipeline.spec import PromptSpec, TaskSpec
from stepwise.pipeline.tasks import build_task
from stepwise.pipeline.types import Example
from stepwise.prompts import TEMPLATES, answer_schema, load_prompt

EXAMPLES = {
    "arithmetic": Example("a", "Ann has 3 apples and buys 4 more. How many does she have?", "7"),
    "multiple_choice": Example("m", "Where do fish live?", "water", ("water", "sky", "desert")),
    "nli": Example("n", "Premise: A dog runs.\nHypothesis: An animal moves.", "0",
                   meta={"premise": "A dog runs.", "hypothesis": "An animal moves."}),
    "yes_no": Example("y", "Is ice cold?", "yes"),
    "exact": Example("e", "Reverse the word 'abc'.", "cba"),
}


@pytest.mark.parametrize("kind", sorted(EXAMPLES))
@pytest.mark.parametrize("prompt_id", ["few_shot_cot", "zero_shot_cot", "structured_json", "rationalize"])
def test_builtin_prompts_render_for_every_kind(prompt_id, kind):
    task = build_task(TaskSpec(kind=kind))
    ex = task.prepare(EXAMPLES[kind])
    prompt = load_prompt(PromptSpec(id=prompt_id), kind)
    gold = task.normalize_gold(ex.gold, ex)
    messages = prompt.render(ex, task, gold)
    assert messages[-1]["role"] == "user"
    assert task.student_input(ex) in messages[-1]["content"]
    assert all(m["role"] in ("system", "user", "assistant") and m["content"] for m in messages)
    assert prompt.id == prompt_id
    if prompt_id == "few_shot_cot":
        assert len(prompt.exemplars) >= 3
        # exemplars alternate user / assistant and teach the answer trigger the parser reads
        shots = [m for m in messages if m["role"] == "assistant"]
        assert len(shots) == len(prompt.exemplars)
        assert all("So the answer is" in m["content"] for m in shots)
    if prompt_id == "rationalize":
        assert f"The correct answer is {gold}" in messages[-1]["content"]


def test_prompt_hash_is_the_hash_of_the_file_bytes():
    prompt = load_prompt(PromptSpec(id="few_shot_cot"), "nli")
    assert prompt.hash == hashlib.sha256((TEMPLATES / "few_shot_cot" / "nli.yaml").read_bytes()).hexdigest()[:16]
    other = load_prompt(PromptSpec(id="few_shot_cot"), "arithmetic")
    assert other.hash != prompt.hash


def test_custom_template_file_and_its_hash_changes_with_content(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("id: mine\nuser: 'Question: {input}'\n")
    first = load_prompt(PromptSpec(id="mine", path=str(path)), "exact")
    path.write_text("id: mine\nuser: 'Q: {input}'\n")
    second = load_prompt(PromptSpec(id="mine", path=str(path)), "exact")
    assert first.hash != second.hash
    task = build_task(TaskSpec(kind="exact"))
    assert second.render(EXAMPLES["exact"], task) == ({"role": "user", "content": "Q: Reverse the word 'abc'."},)


@pytest.mark.parametrize("content, message", [
    ("id: x\n", "'user' is required"),
    ("id: x\nuser: hi\noutput: xml\n", "output must be 'cot' or 'json'"),
    ("id: x\nuser: hi\nsurprise: 1\n", "unknown keys ['surprise']"),
    ("id: x\nuser: hi\nexemplars: [{input: a}]\n", "exemplars[0] needs input, rationale and answer"),
    ("[1, 2]\n", "should be a mapping"),
    ("id: x\nuser: '{nope}'\n", "{nope}"),
])
def test_bad_templates_are_refused_with_the_reason(tmp_path, content, message):
    path = tmp_path / "bad.yaml"
    path.write_text(content)
    task = build_task(TaskSpec(kind="exact"))
    with pytest.raises(PromptError) as info:
        load_prompt(PromptSpec(id="x", path=str(path)), "exact").render(EXAMPLES["exact"], task)
    assert message in str(info.value)


def test_unknown_prompt_and_missing_variant():
    with pytest.raises(PromptError, match="unknown prompt 'nope'"):
        load_prompt(PromptSpec(id="nope"), "exact")
    with pytest.raises(PromptError, match="no variant for task kind 'custom'"):
        load_prompt(PromptSpec(id="few_shot_cot"), "custom")


def test_rationalize_needs_gold():
    task = build_task(TaskSpec(kind="yes_no"))
    prompt = load_prompt(PromptSpec(id="rationalize"), "yes_no")
    with pytest.raises(PromptError, match="needs a gold answer"):
        prompt.render(Example("u", "Is the sky green?"), task, None)


def test_answer_schema_enumerates_choices_and_labels():
    mc = build_task(TaskSpec(kind="multiple_choice"))
    ex = Example("m", "Pick", "b", ("a", "b", "b"))
    schema = answer_schema(mc, ex)
    assert schema["properties"]["label"]["enum"] == ["a", "b"]
    assert schema["required"] == ["rationale", "label"] and schema["additionalProperties"] is False
    nli = build_task(TaskSpec(kind="nli"))
    assert answer_schema(nli, EXAMPLES["nli"])["properties"]["label"]["enum"] == ["entailment", "neutral",
                                                                                   "contradiction"]
    arith = build_task(TaskSpec(kind="arithmetic"))
    assert answer_schema(arith, EXAMPLES["arithmetic"])["properties"]["label"] == {"type": ["number", "string"]}


# ── strict YAML templates: aliases, keys given twice, a BOM, and errors that never quote the file ───────────────
SECRET = "SECRET-MARKER-4be1"


@pytest.mark.parametrize(("content", "message"), [
    (f"id: x\nuser: hi\n  system: {SECRET}\n", "line 3, column 9: not valid YAML: mapping values are not allowed here"),
    (f"id: x\nuser: [{SECRET}\n", "line 3, column 1: not valid YAML: expected ',' or ']'"),
    (f'id: x\nuser: "{SECRET}\n', "line 3, column 1: not valid YAML: found unexpected end of stream"),
    (f"id: x\nuser: !{SECRET} hi\n", "line 2, column 7: not valid YAML: could not determine a constructor"),
    (f"id: x\nsystem: &s {SECRET}\nuser: *s\n", "line 3, column 7: YAML aliases (*name) are not allowed here"),
    (f"id: x\nuser: {SECRET}\nuser: hi\n", "line 3, column 1: key 'user' is given twice in this mapping "
                                           "(first at line 2)"),
    (f"id: x\noutput: {SECRET}\nuser: hi\n", "output must be 'cot' or 'json'"),
], ids=["indentation", "flow", "quote", "tag", "alias", "duplicate_key", "bad_value"])
def test_template_errors_name_the_line_and_never_echo_the_file(tmp_path, content, message):
    path = tmp_path / "bad.yaml"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(PromptError) as info:
        load_prompt(PromptSpec(id="x", path=str(path)), "exact")
    assert message in str(info.value), str(info.value)
    assert str(info.value).startswith(f"prompt template {path}")
    assert SECRET not in str(info.value)


def test_a_template_with_a_byte_order_mark_loads_and_hashes_its_bytes(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_bytes(b"\xef\xbb\xbfid: mine\nuser: 'Q: {input}'\n")
    prompt = load_prompt(PromptSpec(id="mine", path=str(path)), "exact")
    assert prompt.id == "mine" and prompt.hash == hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def test_a_missing_template_is_a_prompt_error(tmp_path):
    with pytest.raises(PromptError, match="cannot read prompt template .*gone.yaml: No such file or directory"):
        load_prompt(PromptSpec(id="x", path=str(tmp_path / "gone.yaml")), "exact")
