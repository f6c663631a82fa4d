"""`chat`: OpenAI fine-tuning JSONL, user = the input, assistant = the rationale and "So the answer is <label>."."""

from stepwise.pipeline.exports.base import ExportFormat


def rows(r: dict, label: str) -> list[dict]:
    return [{"messages": [{"role": "user", "content": r["input"]},
                          {"role": "assistant", "content": f"{r['rationale']}\nSo the answer is {label}."}]}]


FORMAT = ExportFormat("chat", rows).register()
