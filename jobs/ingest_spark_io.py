"""The file side of Spark ingestion (`churnops.jobs.ingest_spark`): each source file checked from its footer or
header before Spark starts, and Spark's output folders turned into the bronze layer's named part files."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote, urlparse

import pandas as pd
from pyspark.sql import Column
from pyspark.sql import functions as F

from churnops.config import Settings
from churnops.dataset import EventSource
from churnops.jobs.event_rules import IngestionError, empty_file_error, missing_columns_error, required_columns
from churnops.jobs.landing import SourceFile
from churnops.jobs.landing_postgres import table_source_file


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


def changed_since_listed(file: SourceFile, settings: Settings, source: EventSource) -> bool:
    """Whether the file (a table: its fingerprint) is no longer what the run listed and read."""
    if source.format == "postgres":
        return table_source_file(settings, source).sha256 != file.sha256
    stat = file.path.stat()
    return (stat.st_size, stat.st_mtime_ns) != (file.size, file.mtime_ns)


def _local_key(spark_path: str) -> str:
    # Spark spells a local file `file:/...` in `_metadata.file_path` and `file:///...` in `inputFiles()`.
    return re.sub(r"^file:/+", "/", spark_path)


def spark_file_keys(spark_paths: list[str], index: dict[str, int]) -> dict[str, int]:
    """Each file Spark lists (`DataFrame.inputFiles()`) as `file_index_column` matches it, with its index in
    `index` (by resolved local path)."""
    keys = {}
    for spark_path in spark_paths:
        i = index.get(str(Path(unquote(urlparse(spark_path).path)).resolve()))
        if i is None:
            raise AssertionError(f"Spark lists a file it was not given: {spark_path}")
        keys[_local_key(spark_path)] = i
    return keys


def file_index_column(file_path: Column, keys: dict[str, int]) -> Column:
    """The batch index of the file a row was read from (`file_path`: `_metadata.file_path`); null for another."""
    mapping = F.create_map(*[F.lit(v) for key, i in sorted(keys.items()) for v in (key, i)])
    return mapping[F.regexp_replace(file_path, r"^file:/+", "/")].cast("int")


def row_offsets(blocks: list[tuple[int, int, int, int]]) -> tuple[list[tuple[int, int, int]], dict[int, int]]:
    """From each read block's (file, block start, first row id, rows): what to add to a row id of the block to
    get the row's 1-based number in its file, as (file, block start, shift); and the rows read per file."""
    by_file: dict[int, list[tuple[int, int, int, int]]] = {}
    for block in blocks:
        by_file.setdefault(block[0], []).append(block)
    offsets, rows_read = [], {}
    for i, file_blocks in by_file.items():
        offset = 0
        for _, start, first, rows in sorted(file_blocks):
            offsets.append((i, start, offset - first + 1))
            offset += rows
        rows_read[i] = offset
    return offsets, rows_read


def quarantine_counts(blocks: list[tuple[int, int, dict[str, int]]]) -> dict[int, tuple[int, dict[str, int]]]:
    """From each read block's (file, rows quarantined, rows that broke each rule, in reporting order): per file,
    the rows quarantined and the rules broken (only those some row broke)."""
    counts: dict[int, tuple[int, dict[str, int]]] = {}
    for i, rejected, by_rule in blocks:
        total, reasons = counts.get(i, (0, dict.fromkeys(by_rule, 0)))
        counts[i] = (total + int(rejected), {rule: reasons[rule] + int(by_rule[rule]) for rule in by_rule})
    return {i: (total, {rule: n for rule, n in reasons.items() if n}) for i, (total, reasons) in counts.items()}


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
