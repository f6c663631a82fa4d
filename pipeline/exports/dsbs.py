"""`dsbs`: Distilling step-by-step's two tasks, two rows per record: `predict: <input>` -> the label and
`explain: <input>` -> the rationale."""

from stepwise.pipeline.exports.base import EXPLAIN_PREFIX, PREDICT_PREFIX, ExportFormat


def rows(r: dict, label: str) -> list[dict]:
    base = {"example_id": r["example_id"], "sample_idx": r["sample_idx"]}
    return [{**base, "task": "predict", "input": f"{PREDICT_PREFIX}{r['input']}", "target": label},
            {**base, "task": "explain", "input": f"{EXPLAIN_PREFIX}{r['input']}", "target": r["rationale"]}]


FORMAT = ExportFormat("dsbs", rows).register()
