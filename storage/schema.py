"""The one explicit, versioned Arrow schema shared by writers, views and exports. Never inferred."""

from __future__ import annotations

import pyarrow as pa

SCHEMA_VERSION = "3"  # 2: cost_usd; 3: reasoning, reasoning_tokens, trace_label, gold_rationale
_META = {b"stepwise.schema_version": SCHEMA_VERSION.encode()}
_TS = pa.timestamp("us", tz="UTC")

RECORDS_SCHEMA = pa.schema(
    [
        pa.field("job_id", pa.string(), nullable=False),
        pa.field("example_id", pa.string(), nullable=False),
        pa.field("sample_idx", pa.int32(), nullable=False),
        pa.field("task", pa.string(), nullable=False),
        pa.field("input", pa.string()),
        pa.field("gold_label", pa.string()),
        pa.field("label", pa.string()),
        pa.field("rationale", pa.string()),
        pa.field("correct", pa.bool_()),
        pa.field("accepted", pa.bool_(), nullable=False),
        pa.field("reject_reason", pa.string()),
        pa.field("reject_detail", pa.string()),
        pa.field("consensus_label", pa.string()),
        pa.field("agreement", pa.float32()),
        pa.field("prompt_id", pa.string(), nullable=False),
        pa.field("prompt_hash", pa.string()),
        pa.field("teacher_backend", pa.string(), nullable=False),
        pa.field("teacher_model", pa.string(), nullable=False),
        pa.field("request_key", pa.string()),
        pa.field("finish_reason", pa.string()),
        pa.field("tokens_in", pa.int32()),
        pa.field("tokens_out", pa.int32()),
        pa.field("cost_usd", pa.float64()),
        pa.field("latency_s", pa.float32()),
        pa.field("completion", pa.string()),
        pa.field("created_at", _TS, nullable=False),
        pa.field("reasoning", pa.string()),
        pa.field("reasoning_tokens", pa.int32()),
        pa.field("trace_label", pa.string()),
        pa.field("gold_rationale", pa.string()),
    ],
    metadata=_META,
)

JOBS_SCHEMA = pa.schema(
    [
        pa.field("job_id", pa.string(), nullable=False),
        pa.field("status", pa.string(), nullable=False),
        pa.field("fingerprint", pa.string(), nullable=False),
        pa.field("spec_json", pa.string(), nullable=False),
        pa.field("task", pa.string()),
        pa.field("prompt_id", pa.string()),
        pa.field("prompt_hash", pa.string()),
        pa.field("teacher_backend", pa.string()),
        pa.field("teacher_model", pa.string()),
        pa.field("n_shards", pa.int32()),
        pa.field("shards_done", pa.int32()),
        pa.field("n_examples", pa.int64()),
        pa.field("n_records", pa.int64()),
        pa.field("n_accepted", pa.int64()),
        pa.field("n_rejected", pa.int64()),
        pa.field("tokens_in", pa.int64()),
        pa.field("tokens_out", pa.int64()),
        pa.field("cost_usd", pa.float64()),
        pa.field("error", pa.string()),
        pa.field("created_at", _TS, nullable=False),
        pa.field("updated_at", _TS, nullable=False),
    ],
    metadata=_META,
)

# Long free text compresses well but does not dictionary-encode; short repeated columns do.
DICTIONARY_COLUMNS = ["job_id", "task", "gold_label", "label", "reject_reason", "consensus_label", "prompt_id",
                      "prompt_hash", "teacher_backend", "teacher_model", "finish_reason", "trace_label"]
