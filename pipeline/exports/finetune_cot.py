"""`finetune_cot`: Fine-tune-CoT's rationale-then-answer, prompt `<input> ###`, completion
` <rationale> --> <label> END`."""

from stepwise.pipeline.exports.base import ARROW, ExportFormat


def rows(r: dict, label: str) -> list[dict]:
    return [{"example_id": r["example_id"], "sample_idx": r["sample_idx"], "prompt": f"{r['input']} ###",
             "completion": f" {r['rationale']} {ARROW} {label} END"}]


FORMAT = ExportFormat("finetune_cot", rows).register()
