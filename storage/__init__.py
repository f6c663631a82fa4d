"""Bytes at rest: the Arrow schemas, atomic Parquet part files, the job registry and read-only DuckDB queries.

Corpus layout under a root, a folder (default `./corpus`) or an object-store URI such as `s3://bucket/corpus`
(`location.py`):

    records/<job_id>/shard-000000.parquet   one part file per finished shard (its existence marks the shard done)
    jobs/<job_id>.parquet                   one row per job: status, spec, counters
"""
