"""`chat_think`: chat JSONL with the thinking trace inline, as R1-distill students are trained: the assistant
message is `<think>\n<trace>\n</think>\n\n<content>`. A record without a trace gets an empty think block
(`<think>\n\n</think>\n\n`, what Qwen3's template writes for a turn without thinking) before the content `chat`
would write, so every assistant turn has the one shape."""

from stepwise.pipeline.exports.base import OPENAI_MIN_EXAMPLES, ExportFormat
from stepwise.pipeline.exports.chat import trace_and_content


def rows(r: dict, label: str) -> list[dict]:
    trace, content = trace_and_content(r, label)
    think = f"<think>\n{trace}\n</think>\n\n" if trace is not None else "<think>\n\n</think>\n\n"
    return [{"messages": [{"role": "user", "content": r["input"]},
                          {"role": "assistant", "content": f"{think}{content}"}]}]


FORMAT = ExportFormat("chat_think", rows, min_rows=OPENAI_MIN_EXAMPLES,
                      min_rows_for="OpenAI fine-tuning").register()
