"""`vllm` backend: a local `vllm.LLM` engine fed whole shards, so it batches continuously.

With the Ray executor each worker actor reserves the GPUs its engine needs (`num_gpus`, by default the
tensor-parallel size) and builds one engine for the whole job; with the local executor the engine lives in
this process. Chat templates come from the model (`LLM.chat`, with the job's `chat_template_kwargs` and its
`reasoning_effort`, as `vllm serve` passes them to the template), sampling from `SamplingParams` (n, temperature,
top_p, max_tokens: the job's `max_completion_tokens` when set, seed, stop, and the job's `extra_body` fields, which
`vllm serve` also takes as sampling parameters), JSON-mode prompts use guided decoding
(`StructuredOutputsParams(json=schema)`). Completions go to the request cache like any teacher's, so a
resumed job does not generate them again.

The offline engine runs no reasoning parser: a reasoning model's text is kept as generated, its trace inline
(`<think>...</think>`, or opened by the chat template and only closed in the text), for the parser to split.

vLLM is imported only when a job uses this backend, behind the `vllm` extra; it needs a CUDA GPU.
"""

from __future__ import annotations

import concurrent.futures
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from stepwise.storage.cache import RequestCache
from stepwise.pipeline.errors import TeacherError
from stepwise.pipeline.teachers.base import completed_future
from stepwise.pipeline.types import Completion, Sampling, TeacherRequest

MISSING = ("the 'vllm' teacher backend needs the vllm extra and a CUDA GPU: pip install 'stepwise-distill[vllm]' "
           "(or point backend: openai at a `vllm serve` server)")


def import_vllm():
    try:
        import vllm
    except ImportError:
        raise TeacherError(MISSING) from None
    return vllm


@dataclass(frozen=True)
class Call:
    """One engine request: a conversation and the samples (n) it produces."""

    conversation: list[dict[str, str]]
    sampling: dict[str, Any]          # SamplingParams keyword arguments
    schema: dict[str, Any] | None     # JSON schema for guided decoding
    members: tuple[tuple[TeacherRequest, str], ...]
    template_kwargs: dict[str, Any] = field(default_factory=dict)  # LLM.chat's chat_template_kwargs


def plan_calls(requests: Sequence[tuple[TeacherRequest, str]], supports_n: bool = True) -> list[Call]:
    """Group the samples of one example (same messages) into one call with n = number of samples."""
    groups: dict[tuple, list[tuple[TeacherRequest, str]]] = {}
    for req, key in requests:
        groups.setdefault((req.example_id, id(req.messages), req.response_schema), []).append((req, key))
    calls = []
    for members in groups.values():
        chunks = [members] if supports_n else [[m] for m in members]
        for chunk in chunks:
            first = chunk[0][0]
            s = first.sampling
            kwargs: dict[str, Any] = {"n": len(chunk), "temperature": s.temperature, "top_p": s.top_p,
                                      "max_tokens": s.token_budget}
            if s.seed is not None:
                kwargs["seed"] = s.seed + first.sample_idx
            if s.stop:
                kwargs["stop"] = list(s.stop)
            for name, value in (json.loads(s.extra_body) if s.extra_body else {}).items():
                kwargs.setdefault(name, value)
            schema = json.loads(first.response_schema) if first.response_schema else None
            calls.append(Call(list(first.messages), kwargs, schema, tuple(chunk), template_kwargs(s)))
    return calls


def template_kwargs(s: Sampling) -> dict[str, Any]:
    """What the chat template is given: the job's `chat_template_kwargs` and its `reasoning_effort`."""
    out = json.loads(s.chat_template_kwargs) if s.chat_template_kwargs else {}
    if s.reasoning_effort is not None:
        out["reasoning_effort"] = s.reasoning_effort
    return out


def to_completions(call: Call, output: Any, model: str, latency_s: float | None) -> list[Completion]:
    """Map a vLLM RequestOutput (prompt_token_ids, outputs[i].text / finish_reason / token_ids) to Completions."""
    outs = list(getattr(output, "outputs", []) or [])
    prompt_tokens = len(getattr(output, "prompt_token_ids", None) or []) or None
    n = len(call.members)
    result = []
    for i, (req, key) in enumerate(call.members):
        o = outs[i] if i < len(outs) else None
        tin = None if prompt_tokens is None else prompt_tokens // n + (prompt_tokens % n if i == 0 else 0)
        if o is None:
            result.append(Completion(key, req.example_id, req.sample_idx, None, None, tin, None, latency_s, model,
                                     "the engine returned fewer outputs than samples", retryable=True))
            continue
        finish = getattr(o, "finish_reason", None) or "stop"
        result.append(Completion(key, req.example_id, req.sample_idx, o.text, finish, tin,
                                 len(getattr(o, "token_ids", None) or []) or None, latency_s, model))
    return result


class VLLMBackend:
    """Teacher backend running `vllm.LLM` in this process (a Ray worker actor that holds the GPUs)."""

    backend = "vllm"
    streams = False
    endpoint = None  # no server: the model (a path or hub id) names the weights
    events = None

    def __init__(self, spec, cache: RequestCache | None = None, cost=None):
        self.spec = spec
        self.model = spec.model
        self.cache = cache
        self.price = cost
        self._llm = None

    @classmethod
    def build(cls, spec, options) -> VLLMBackend:
        return cls(spec, cache=options.cache(), cost=options.cost)

    def _engine(self):
        if self._llm is None:
            vllm = import_vllm()
            s = self.spec
            self._llm = vllm.LLM(model=s.model, tensor_parallel_size=s.tensor_parallel_size, dtype=s.dtype,
                                 gpu_memory_utilization=s.gpu_memory_utilization, max_model_len=s.max_model_len,
                                 trust_remote_code=s.trust_remote_code, seed=s.engine_seed, **s.engine_kwargs)
        return self._llm

    def _params(self, call: Call):
        vllm = import_vllm()
        kwargs = dict(call.sampling)
        if call.schema is not None:
            from vllm.sampling_params import StructuredOutputsParams

            kwargs["structured_outputs"] = StructuredOutputsParams(json=call.schema)
        try:
            return vllm.SamplingParams(**kwargs)
        except TypeError as exc:  # an extra_body field that is no sampling parameter
            raise TeacherError(f"sampling.extra_body: vLLM's SamplingParams refused it: {exc}") from None

    def _chat(self, calls: list[Call]) -> list[Any]:
        """One `LLM.chat` per set of chat-template arguments (it takes one set for all its conversations; a job
        has one), outputs in call order."""
        llm = self._engine()
        groups: dict[str, list[int]] = {}
        for i, call in enumerate(calls):
            groups.setdefault(json.dumps(call.template_kwargs, sort_keys=True), []).append(i)
        outputs: list[Any] = [None] * len(calls)
        for members in groups.values():
            chosen = [calls[i] for i in members]
            options = {"chat_template_kwargs": chosen[0].template_kwargs} if chosen[0].template_kwargs else {}
            got = llm.chat([c.conversation for c in chosen], sampling_params=[self._params(c) for c in chosen],
                           use_tqdm=False, **options)
            for i, output in zip(members, got, strict=True):
                outputs[i] = output
        return outputs

    def _generate(self, calls: list[Call]) -> list[Completion]:
        if not calls:
            return []
        started = time.monotonic()
        outputs = self._chat(calls)
        latency = (time.monotonic() - started) / max(1, len(calls))  # the engine batches: a mean per request
        out = []
        for call, output in zip(calls, outputs, strict=True):
            for c in to_completions(call, output, self.model, latency):
                if self.price:
                    c = replace(c, cost_usd=self.price.cost(c.tokens_in, c.tokens_out))
                if self.cache is not None:
                    self.cache.put(c)
                out.append(c)
        return out

    def complete(self, requests: Sequence[TeacherRequest]) -> list[Completion]:
        keys = [r.cache_key() for r in requests]
        cached = self.cache.get_many(keys) if self.cache is not None else {}
        results = {k: c for k, c in cached.items()}
        todo = [(r, k) for r, k in zip(requests, keys, strict=True) if k not in results]
        plain = [(r, k) for r, k in todo if r.followup is None]
        staged = [(r, k) for r, k in todo if r.followup is not None]
        for c in self._generate(plan_calls(plain, self.spec.supports_n)):
            results[c.request_key] = c
        if staged:  # two-stage zero-shot CoT: all first stages in one batch, then all answer stages
            first = [(replace(r, followup=None), replace(r, followup=None).cache_key()) for r, _ in staged]
            hits = self.cache.get_many([k for _, k in first]) if self.cache is not None else {}
            stage1 = dict(hits)
            for c in self._generate(plan_calls([(r, k) for r, k in first if k not in hits], False)):
                stage1[c.request_key] = c
            seconds = []
            for (req, key), (_, k1) in zip(staged, first, strict=True):
                s1 = stage1[k1]
                if s1.text is None or s1.finish_reason == "length":
                    results[key] = replace(s1, request_key=key)
                    continue
                messages = (*req.messages, {"role": "assistant", "content": s1.text},
                            {"role": "user", "content": req.followup})
                r2 = replace(req, messages=messages, followup=None,
                             sampling=replace(req.sampling, max_tokens=min(64, req.sampling.max_tokens)))
                seconds.append((req, key, s1, r2, r2.cache_key()))
            hits2 = self.cache.get_many([k2 for *_, k2 in seconds]) if self.cache is not None else {}
            stage2 = dict(hits2)
            for c in self._generate(plan_calls([(r2, k2) for *_, r2, k2 in seconds if k2 not in hits2], False)):
                stage2[c.request_key] = c
            for req, key, s1, _r2, k2 in seconds:
                s2 = stage2[k2]
                if s2.text is None:
                    results[key] = replace(s2, request_key=key)
                    continue
                combined = Completion(key, req.example_id, req.sample_idx,
                                      f"{s1.text.rstrip()}\n{req.followup} {s2.text.strip()}", s2.finish_reason,
                                      (s1.tokens_in or 0) + (s2.tokens_in or 0),
                                      (s1.tokens_out or 0) + (s2.tokens_out or 0), None, self.model,
                                      reasoning=s1.reasoning, reasoning_tokens=s1.reasoning_tokens)
                if self.cache is not None:
                    self.cache.put(combined)
                results[key] = combined
        return [replace(results[k], example_id=r.example_id, sample_idx=r.sample_idx)
                for r, k in zip(requests, keys, strict=True)]

    def submit(self, requests: Sequence[TeacherRequest]) -> concurrent.futures.Future[list[Completion]]:
        """Generation runs on the caller's thread: the whole shard goes to the engine at once."""
        return completed_future(self.complete(requests))

    def close(self) -> None:
        self._llm = None
