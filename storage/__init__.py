"""Bytes at rest: the Arrow schemas, atomic Parquet part files, the job registry, the request cache, uploads and
read-only DuckDB queries. Every path of a corpus is declared in `layout.py`, which documents the layout."""
