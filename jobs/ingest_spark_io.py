"""The file side of Spark ingestion (`churnops.jobs.ingest_spark`): each source file checked from its footer or
header before Spark starts, and Spark's output folders turned into the bronze layer's named part files."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from churnops.dataset import EventSource
from churnops.jobs.event_rules import IngestionError, empty_file_error, missing_columns_error, required_columns


def check_file(path: Path, source: EventSource) -> tuple[list[str], str]:
    """The file's columns and its types (Parquet; "" for CSV), read from its footer or header; refuse it as the
    pandas path would, without reading it."""
    import pyarrow.parquet as pq

    try:
        if source.format == "csv":
            head = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""], skipinitialspace=True, nrows=1)
            columns, types, empty = [str(c) for c in head.columns], "", head.empty
        else:
            metadata = pq.read_metadata(path)
            schema = metadata.schema.to_arrow_schema()
            columns, types, empty = list(schema.names), str(schema.types), metadata.num_rows == 0
    except Exception as error:  # noqa: BLE001 - any reader failure means the same thing: unreadable, write nothing
        raise IngestionError(
            f"cannot ingest {path}: not a readable {source.format} file ({type(error).__name__}: {error}); "
            "nothing was written"
        ) from error
    if empty:
        raise empty_file_error(path)
    if types:
        nanos = [field.name for field in schema if str(field.type).startswith("timestamp[ns")]
        if nanos:
            raise IngestionError(
                f"cannot ingest {path} on Spark: column(s) {nanos} hold nanosecond timestamps, which Spark cannot "
                "read; write microseconds (pandas: to_parquet(..., coerce_timestamps='us')) or ingest with "
                "ingestion.engine pandas"
            )
    missing = [c for c in required_columns(source) if c not in columns]
    if missing:
        raise IngestionError(f"cannot ingest {path}: {missing_columns_error(missing, columns)}")
    return columns, types


def join_identity(left: DataFrame, right: DataFrame, keys: list[str]) -> DataFrame:
    """Left join on the event identity; a missing event type (a contract without one) matches a missing one."""
    right = right.select(*[F.col(c).alias(f"__r{c}") for c in keys], *right.columns[len(keys) :])
    on = [left[c].eqNullSafe(right[f"__r{c}"]) for c in keys]
    return left.join(right, on, "left").drop(*[f"__r{c}" for c in keys])


def written_files(out: Path, file_key: str, day_key: str | None = None) -> list[tuple[int, str, Path]]:
    """(file index, day or "", the one part file) of every partition folder Spark wrote under `out` (partitioned
    by `file_key`, then `day_key` when given)."""
    depth = 1 if day_key is None else 2
    found = []
    pattern = "/".join(["*"] * depth)
    for folder in sorted(path for path in out.glob(pattern) if path.is_dir()):
        parts = sorted(folder.glob("part-*.parquet"))
        if len(parts) != 1:
            raise AssertionError(f"Spark wrote {len(parts)} files into {folder}; one was expected")
        keys = dict(piece.split("=", 1) for piece in folder.relative_to(out).parts)
        found.append((int(keys[file_key]), keys.get(day_key or "", ""), parts[0]))
    return found


def move_part(written: Path, target: Path, keep: list[str] | None = None) -> int:
    """Move a Spark part to its bronze name (dropping columns this source file does not have); return its rows."""
    import pyarrow.parquet as pq

    target.parent.mkdir(parents=True, exist_ok=True)
    if keep is not None and pq.read_schema(written).names != keep:
        pq.write_table(pq.read_table(written, columns=keep), target)
    else:
        written.replace(target)
    return pq.read_metadata(target).num_rows
