"""Snapshots written by Spark as Parquet partitioned by cutoff, hashed from their files' digests.

Layout of `data/`: one folder per cutoff, `cutoff=YYYY-MM-DD/`, holding `part-NNNNN.parquet` files whose rows are in
customer order (the cutoff is in the folder's name, not in the files). The feature job never brings the rows to the
driver: Spark writes the files, the executors digest them (SHA-256 of each file's bytes, `digest_files` in
`jobs/cutoff_frames.py`), and the driver reads only the Parquet footers (row counts, null counts, the schema).

The hashes are built from the files' digests, so they are as deterministic as the files are: a cutoff's file is
written by one Spark task, sorted by customer, and named by its position, so the same rows give the same bytes
however many other cutoffs were computed alongside (tests/features/test_cutoff_frames.py holds an incremental build
to a full rebuild). A cutoff's hash digests its files' names and digests, the snapshot's hash every cutoff's hash
with its day. A new Spark or Parquet writer version may write other bytes for the same rows: the snapshot then gets
another id and is rebuilt, never wrongly reused.

A reader reads only the cutoffs and columns it needs (partition pruning and column projection) and verifies the
files of the cutoffs it read by streaming their bytes through SHA-256 (no rows are hashed).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from churnops.features import CUTOFF, ENTITY_ID
from churnops.snapshots import DATA_DIR, SnapshotIntegrityError, SnapshotMetadata

HASH_SCHEME = "parquet-file-digests-v1"
PARTITION_PREFIX = f"{CUTOFF}="


def file_sha256(path: str) -> str:
    """SHA-256 of one file's bytes, streamed (module level so Spark executors can run it)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cutoff_folder(day: dt.date | str) -> str:
    return f"{PARTITION_PREFIX}{day if isinstance(day, str) else day.isoformat()}"


def data_files(data_dir: Path) -> list[str]:
    """The snapshot's Parquet files, as `cutoff=DAY/part-N.parquet` paths relative to `data_dir`, sorted."""
    return sorted(str(p.relative_to(data_dir)) for p in data_dir.glob(f"{PARTITION_PREFIX}*/*.parquet"))


def _by_cutoff(file_digests: dict[str, str]) -> dict[str, dict[str, str]]:
    grouped: dict[str, dict[str, str]] = {}
    for relative, digest in sorted(file_digests.items()):
        folder, name = relative.split("/", 1)
        grouped.setdefault(folder.removeprefix(PARTITION_PREFIX), {})[name] = digest
    return grouped


def _sha(payload: Any) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def hashes_from_digests(file_digests: dict[str, str]) -> tuple[str, dict[str, str]]:
    """The snapshot's content hash and each cutoff's, from the files' digests. A cutoff's hash does not name its
    day (an entity-level table computed on another day has the same training hash); the snapshot's does."""
    per_cutoff = {day: _sha([HASH_SCHEME, sorted(files.items())]) for day, files in _by_cutoff(file_digests).items()}
    return _sha([HASH_SCHEME, sorted(per_cutoff.items())]), per_cutoff


def _footers(data_dir: Path, files: list[str]) -> tuple[dict[str, int], Any, set[str]]:
    """Rows per cutoff, the files' Arrow schema and the columns holding a null, from the Parquet footers only."""
    import pyarrow.parquet as pq

    rows: dict[str, int] = {}
    schema, nullable = None, set()
    for relative in files:
        meta = pq.ParquetFile(data_dir / relative).metadata
        day = relative.split("/", 1)[0].removeprefix(PARTITION_PREFIX)
        rows[day] = rows.get(day, 0) + meta.num_rows
        schema = schema or meta.schema.to_arrow_schema()
        for group in range(meta.num_row_groups):
            for index in range(meta.num_columns):
                column = meta.row_group(group).column(index)
                stats = column.statistics
                if stats is None or not stats.has_null_count or stats.null_count > 0:
                    nullable.add(column.path_in_schema)
    return rows, schema, nullable


def pandas_dtypes(schema: Any, with_nulls: set[str]) -> dict[str, str]:
    """The pandas dtype of every column as a read of the whole snapshot gives it (pyarrow's conversion: an integer
    column holding a null becomes float64, a boolean one object), with the cutoff as datetime64[ns] after the
    customer; recorded so a read of a few cutoffs gets the same dtypes."""
    empty = schema.empty_table().to_pandas()
    dtypes = {}
    for name in schema.names:
        dtype = str(empty[name].dtype)
        if name in with_nulls and dtype.startswith(("int", "uint")):
            dtype = "float64"
        elif name in with_nulls and dtype == "bool":
            dtype = "object"
        dtypes[name] = dtype
        if name == ENTITY_ID:
            dtypes[CUTOFF] = "datetime64[ns]"
    return dtypes if CUTOFF in dtypes else dtypes | {CUTOFF: "datetime64[ns]"}


def role_cutoffs(metadata: SnapshotMetadata, roles: Sequence[str]) -> list[dt.date]:
    """The cutoffs a snapshot plays `roles` ("train", "out_of_time", "scoring") at, for a reader to read only them."""
    return sorted({dt.date.fromisoformat(day) for role in roles for day in metadata.cutoffs.get(role, [])})


def training_cutoffs(metadata: SnapshotMetadata) -> list[dt.date] | None:
    """The cutoffs training reads: its training and out-of-time cutoffs; every one (None) for entity-level data."""
    return role_cutoffs(metadata, ("train", "out_of_time")) if metadata.validation == "out_of_time" else None


def describe_files(
    data_dir: Path, file_digests: dict[str, str], cutoffs: dict[str, list[dt.date]], validation: str, **fields: Any
) -> SnapshotMetadata:
    """A snapshot's metadata from its files' digests and footers; `fields` are the other `SnapshotMetadata` fields."""
    whole, per_cutoff = hashes_from_digests(file_digests)
    rows, schema, with_nulls = _footers(data_dir, sorted(file_digests))
    if validation == "out_of_time":
        days = sorted({d.isoformat() for role in ("train", "out_of_time") for d in cutoffs.get(role, [])})
        trained_on = _sha([HASH_SCHEME, [(day, per_cutoff.get(day, "")) for day in days]])
    else:
        # Entity-level data: the one cutoff is the run date, left out so the same table another day matches.
        trained_on = _sha([HASH_SCHEME, sorted(per_cutoff.values())])
    return SnapshotMetadata(
        content_hash=whole,
        created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        cutoffs={role: [d.isoformat() for d in dates] for role, dates in cutoffs.items()},
        rows_per_cutoff=rows,
        validation=validation,
        training_hash=trained_on,
        cutoff_hashes=per_cutoff,
        column_dtypes=pandas_dtypes(schema, with_nulls) if schema is not None else {},
        file_digests=dict(sorted(file_digests.items())),
        hash_scheme=HASH_SCHEME,
        **fields,
    )


def _digest_here(paths: list[str]) -> list[str]:
    return [file_sha256(path) for path in paths]


def verify_cutoffs(
    snapshot_dir: Path,
    metadata: SnapshotMetadata,
    days: Sequence[str],
    digest: Callable[[list[str]], list[str]] = _digest_here,
) -> None:
    """The files of `days` are exactly those recorded, with the bytes they had when written. `digest` computes the
    SHA-256 of files by path: streamed by this process by default, by Spark's executors in Spark stages."""
    data_dir = snapshot_dir / DATA_DIR
    recorded = _by_cutoff(metadata.file_digests)
    expected: dict[str, str] = {}
    for day in days:
        folder = data_dir / cutoff_folder(day)
        present = sorted(p.name for p in folder.glob("*.parquet")) if folder.is_dir() else []
        if present != sorted(recorded.get(day, {})):
            raise SnapshotIntegrityError(
                f"snapshot {snapshot_dir} was modified after it was written: cutoff {day} was written as files "
                f"{sorted(recorded.get(day, {}))} and now holds {present}; rebuild it with `churnops features`"
            )
        expected |= {f"{cutoff_folder(day)}/{name}": value for name, value in recorded.get(day, {}).items()}
    relative = sorted(expected)
    for path, actual in zip(relative, digest([str(data_dir / r) for r in relative]), strict=True):
        if actual != expected[path]:
            raise SnapshotIntegrityError(
                f"snapshot {snapshot_dir} was modified after it was written: file {path} was recorded with SHA-256 "
                f"{expected[path][:16]}…, its bytes now give {actual[:16]}…; rebuild it with `churnops features`"
            )


def read_file_snapshot(
    snapshot_dir: Path,
    metadata: SnapshotMetadata,
    days: Sequence[str] | None,
    columns: Sequence[str] | None,
    verify: bool,
) -> pd.DataFrame:
    """The rows of `days` (every recorded cutoff when None), of `columns` (all when None), in (cutoff, customer)
    order with the recorded dtypes; their files are verified first when `verify`."""
    import pyarrow as pa
    import pyarrow.dataset as ds

    data_dir = snapshot_dir / DATA_DIR
    recorded = sorted(set(metadata.rows_per_cutoff) | set(_by_cutoff(metadata.file_digests)))
    wanted = sorted(set(days)) if days is not None else recorded
    if verify:
        if days is None:
            extra = sorted({p.name.removeprefix(PARTITION_PREFIX) for p in data_dir.glob(f"{PARTITION_PREFIX}*")})
            verify_cutoffs(snapshot_dir, metadata, sorted(set(wanted) | set(extra)))
        else:
            verify_cutoffs(snapshot_dir, metadata, wanted)
    folders = {cutoff_folder(day) for day in wanted}
    files = [str(data_dir / r) for r in sorted(metadata.file_digests) if r.split("/", 1)[0] in folders]
    partitioning = ds.partitioning(pa.schema([(CUTOFF, pa.date32())]), flavor="hive")
    if files:
        dataset = ds.dataset(files, format="parquet", partitioning=partitioning, partition_base_dir=str(data_dir))
        names = list(columns) if columns is not None else _in_written_order(dataset.schema.names)
        frame = dataset.to_table(columns=names).to_pandas()
    else:
        names = list(columns) if columns is not None else _in_written_order(list(metadata.column_dtypes))
        frame = pd.DataFrame({name: pd.Series(dtype=metadata.column_dtypes[name]) for name in names})
    frame[CUTOFF] = pd.to_datetime(frame[CUTOFF])
    for column in frame.columns:
        dtype = metadata.column_dtypes.get(column)
        if dtype is not None and str(frame[column].dtype) != dtype:
            frame[column] = frame[column].astype(dtype)
    return frame


def _in_written_order(names: list[str]) -> list[str]:
    """The columns in the order the feature job wrote them: customer, cutoff (the folder's), then the files'."""
    rest = [name for name in names if name not in (ENTITY_ID, CUTOFF)]
    return [ENTITY_ID, CUTOFF, *rest] if ENTITY_ID in names else [CUTOFF, *rest]
