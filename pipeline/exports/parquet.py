"""`parquet`: the accepted records as columns example_id, sample_idx, input, rationale, label (the one trained on),
gold_label and teacher_label."""

from stepwise.pipeline.exports.base import ExportFormat, write_parquet


def rows(r: dict, label: str) -> list[dict]:
    return [{"example_id": r["example_id"], "sample_idx": r["sample_idx"], "input": r["input"],
             "rationale": r["rationale"], "label": label, "gold_label": r["gold_label"], "teacher_label": r["label"]}]


FORMAT = ExportFormat("parquet", rows, suffix="parquet", write=write_parquet,
                      media_type="application/vnd.apache.parquet").register()
