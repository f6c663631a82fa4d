"""The vllm backend at its boundary, without a GPU.

vLLM cannot be installed on these machines, so the engine itself is replaced by a stand-in module at the
outer boundary (the `vllm` import): it records what our backend asks of `LLM.chat` and answers like a
RequestOutput. Everything on our side of that boundary (grouping, sampling parameters, guided decoding,
two-stage CoT, the request cache, a whole job) runs for real. bench/vllm_smoke.py runs the real engine on a GPU.
"""

from __future__ import annotations

import json
import sys
import types
from dataclasses import dataclass, field

import pytest

from stepwise.storage.cache import RequestCache
from stepwise.pipeline.errors import TeacherError
from stepwise.pipeline.run.job import run_job
from stepwise.pipeline.spec import VLLMTeacherSpec, load_job
from stepwise.pipeline.teachers import build_backend
from stepwise.pipeline.types import Sampling, TeacherRequest
from stepwise.storage.catalog import query
from tests.conftest import write_jsonl


@dataclass
class _Out:
    text: str
    finish_reason: str
    token_ids: list[int]


@dataclass
class _RequestOutput:
    prompt_token_ids: list[int]
    outputs: list[_Out]


@dataclass
class FakeEngine:
    """Stands in for vllm.LLM: answers each conversation, and remembers every call."""

    init: dict
    calls: list = field(default_factory=list)
    template_kwargs: list = field(default_factory=list)  # chat_template_kwargs of each call (None: not given)

    def chat(self, conversations, sampling_params, use_tqdm=False, chat_template_kwargs=None):
        self.calls.append((conversations, sampling_params))
        self.template_kwargs.append(chat_template_kwargs)
        results = []
        for conv, params in zip(conversations, sampling_params, strict=True):
            last = conv[-1]["content"]
            if (chat_template_kwargs or {}).get("enable_thinking"):  # a reasoning model: the trace inline
                outs = [_Out(f"<think>\nThree and four, sample {i}: seven.\n</think>\n\nThe answer is \\boxed{{7}}.",
                             "stop", [1] * 20) for i in range(params.kwargs["n"])]
            elif last.startswith("Therefore"):
                outs = [_Out(" 7.", "stop", [1, 2])]
            elif params.kwargs.get("structured_outputs") is not None:
                outs = [_Out(json.dumps({"rationale": "Three and four make seven.", "label": "7"}), "stop", [1] * 9)]
            else:
                outs = [_Out(f"Sample {i}: three and four make seven. So the answer is 7.", "stop", [1] * 12)
                        for i in range(params.kwargs["n"])]
            results.append(_RequestOutput(list(range(len(last) // 4)), outs))
        return results


@pytest.fixture
def fake_vllm(monkeypatch):
    engines: list[FakeEngine] = []
    mod = types.ModuleType("vllm")
    sp_mod = types.ModuleType("vllm.sampling_params")

    class SamplingParams:
        def __init__(self, **kwargs):
            self.kwargs = kwargs

    class StructuredOutputsParams:
        def __init__(self, json=None):
            self.json = json

    def LLM(**kwargs):  # noqa: N802 - the name vLLM uses
        engines.append(FakeEngine(kwargs))
        return engines[-1]

    mod.LLM, mod.SamplingParams = LLM, SamplingParams
    sp_mod.StructuredOutputsParams = StructuredOutputsParams
    mod.sampling_params = sp_mod
    monkeypatch.setitem(sys.modules, "vllm", mod)
    monkeypatch.setitem(sys.modules, "vllm.sampling_params", sp_mod)
    return engines


def spec(**kw) -> VLLMTeacherSpec:
    return VLLMTeacherSpec(backend="vllm", model="/models/tiny-teacher", **kw)


def requests(n_examples: int, samples: int, **kw) -> list[TeacherRequest]:
    out = []
    for i in range(n_examples):
        messages = ({"role": "user", "content": f"Q: What is 3 + 4 (case {i})?\nA:"},)
        for k in range(samples):
            out.append(TeacherRequest(f"e{i}", k, messages, Sampling(temperature=0.8, max_tokens=100, seed=5,
                                                                        stop=("\n\nQ:",)),
                                      "p", None, "vllm", "/models/tiny-teacher", **kw))
    return out


def test_without_vllm_installed_the_error_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "vllm", None)  # `import vllm` raises ImportError
    backend = build_backend(spec(), corpus=tmp_path)
    with pytest.raises(TeacherError, match=r"pip install 'stepwise-distill\[vllm\]'"):
        backend.complete(requests(1, 1))


def test_a_whole_shard_goes_to_the_engine_in_one_call_with_n_per_example(fake_vllm, tmp_path):
    backend = build_backend(spec(tensor_parallel_size=2, max_model_len=4096), corpus=tmp_path)
    out = backend.complete(requests(5, 3))
    (engine,) = fake_vllm
    assert engine.init["model"] == "/models/tiny-teacher" and engine.init["tensor_parallel_size"] == 2
    assert engine.init["max_model_len"] == 4096
    assert len(engine.calls) == 1  # one batch: the engine schedules it continuously
    conversations, params = engine.calls[0]
    assert len(conversations) == 5 and conversations[0] == [{"role": "user", "content":
                                                              "Q: What is 3 + 4 (case 0)?\nA:"}]
    assert params[0].kwargs == {"n": 3, "temperature": 0.8, "top_p": 1.0, "max_tokens": 100, "seed": 5,
                                "stop": ["\n\nQ:"]}
    assert [(c.example_id, c.sample_idx) for c in out] == [(f"e{i}", k) for i in range(5) for k in range(3)]
    assert [c.text.split(":")[0] for c in out[:3]] == ["Sample 0", "Sample 1", "Sample 2"]
    assert all(c.tokens_out == 12 and c.tokens_in is not None for c in out)

    again = build_backend(spec(), corpus=tmp_path).complete(requests(5, 3))  # a resumed job: all cached
    assert len(fake_vllm) == 1 and [c.text for c in again] == [c.text for c in out]
    assert RequestCache.for_corpus(tmp_path).count() == 15


def test_json_prompts_use_guided_decoding_and_two_stage_prompts_batch_each_stage(fake_vllm, tmp_path):
    schema = json.dumps({"type": "object", "properties": {"rationale": {"type": "string"},
                                                          "label": {"type": "string"}}}, sort_keys=True)
    backend = build_backend(spec(), corpus=tmp_path)
    (out,) = backend.complete(requests(1, 1, response_schema=schema))
    assert json.loads(out.text)["label"] == "7"
    params = fake_vllm[0].calls[0][1][0]
    assert params.kwargs["structured_outputs"].json == json.loads(schema)

    staged = backend.complete(requests(4, 1, followup="Therefore, the answer is"))
    calls = fake_vllm[0].calls[1:]
    assert [len(c[0]) for c in calls] == [4, 4]  # all reasoning stages, then all answer stages
    assert calls[1][0][0][-2]["role"] == "assistant" and calls[1][0][0][-1]["content"] == "Therefore, the answer is"
    assert staged[0].text.endswith("\nTherefore, the answer is 7.")


def test_a_job_on_the_vllm_backend_produces_records(fake_vllm, tmp_path):
    write_jsonl(tmp_path / "d.jsonl", [{"id": f"q{i}", "question": f"What is 3 + 4 (case {i})?", "answer": "7"}
                                       for i in range(6)])
    (tmp_path / "job.yaml").write_text(
        "job_id: vllm-job\ndataset: {path: d.jsonl, id_field: id, answer_field: answer}\ntask: arithmetic\n"
        "prompt: few_shot_cot\nteacher: {backend: vllm, model: /models/tiny-teacher}\n"
        "sampling: {n: 2, temperature: 0.7}\nshard_size: 3\n")
    summary = run_job(load_job(tmp_path / "job.yaml"), tmp_path / "corpus")
    assert (summary.n_records, summary.n_accepted, summary.n_correct) == (12, 12, 12)
    assert len(fake_vllm) == 1 and len(fake_vllm[0].calls) == 2  # one engine, one call per shard
    rows = query(tmp_path / "corpus", "SELECT DISTINCT teacher_backend, teacher_model FROM records").table.to_pylist()
    assert rows == [{"teacher_backend": "vllm", "teacher_model": "/models/tiny-teacher"}]


def test_reasoning_fields_reach_the_engine_and_the_trace_is_kept_as_generated(fake_vllm, tmp_path):
    sampling = Sampling(temperature=0.6, max_tokens=100, max_completion_tokens=8192, reasoning_effort="high",
                        chat_template_kwargs=json.dumps({"enable_thinking": True}),
                        extra_body=json.dumps({"top_k": 20, "min_p": 0.0}))
    messages = [({"role": "user", "content": f"What is 3 + 4 (case {i})?"},) for i in range(2)]  # one per example
    reqs = [TeacherRequest(f"e{i}", k, messages[i], sampling, "p", None, "vllm", "/models/tiny-teacher")
            for i in range(2) for k in range(2)]
    out = build_backend(spec(), corpus=tmp_path).complete(reqs)
    (engine,) = fake_vllm
    assert engine.template_kwargs == [{"enable_thinking": True, "reasoning_effort": "high"}]  # as vllm serve does
    params = engine.calls[0][1][0].kwargs
    assert params["max_tokens"] == 8192  # the completion budget bounds trace and answer
    assert (params["top_k"], params["min_p"]) == (20, 0.0)  # extra_body: vLLM's own sampling parameters
    for c in out:  # the offline engine runs no reasoning parser: the text as generated, the parser splits it
        trace = f"Three and four, sample {c.sample_idx}: seven."
        assert c.text == f"<think>\n{trace}\n</think>\n\nThe answer is \\boxed{{7}}."
        assert c.reasoning is None

    build_backend(spec(), corpus=tmp_path).complete(requests(1, 1))  # a job without them: no template arguments
    assert fake_vllm[1].template_kwargs == [None]
