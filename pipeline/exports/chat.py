"""`chat`: OpenAI fine-tuning JSONL, user = the input, assistant = the answer. For a record with a thinking trace
the assistant message carries it in `reasoning_content` (what Qwen3-style chat templates and TRL read) and its
`content` is what the teacher wrote after the trace; without one, the content is the rationale and "So the answer
is <label>."."""

from stepwise.pipeline.exports.base import OPENAI_MIN_EXAMPLES, ExportFormat


def trace_and_content(r: dict, label: str) -> tuple[str | None, str]:
    """The assistant turn of a record: its thinking trace (None without one) and the content after it. The
    content is the teacher's own text after the trace, or, when it wrote none, "So the answer is <label>."."""
    trace = (r.get("reasoning") or "").strip()
    if not trace:
        return None, f"{r['rationale']}\nSo the answer is {label}."
    return trace, (r.get("completion") or "").strip() or f"So the answer is {label}."


def rows(r: dict, label: str) -> list[dict]:
    trace, content = trace_and_content(r, label)
    assistant = {"role": "assistant", "content": content}
    if trace is not None:
        assistant["reasoning_content"] = trace
    return [{"messages": [{"role": "user", "content": r["input"]}, assistant]}]


FORMAT = ExportFormat("chat", rows, min_rows=OPENAI_MIN_EXAMPLES, min_rows_for="OpenAI fine-tuning").register()
