"""File writes that are all-or-nothing: a crashed or killed writer never leaves a half-written file visible."""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any


def _staging_path(final: Path) -> Path:
    return final.with_name(f".{final.name}.staging-{uuid.uuid4().hex[:8]}")


def write_parquet_atomically(frame: Any, path: Path) -> None:
    """Write a pandas DataFrame to `path` through a staging file and an atomic rename.

    Timestamps are stored in microseconds: Spark cannot read Parquet's nanosecond timestamps.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = _staging_path(path)
    try:
        frame.to_parquet(staging, index=False, coerce_timestamps="us", allow_truncated_timestamps=True)
        os.replace(staging, path)
    finally:
        staging.unlink(missing_ok=True)


def write_arrow_atomically(table: Any, path: Path) -> None:
    """Write a pyarrow Table to `path` as Parquet through a staging file and an atomic rename."""
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    staging = _staging_path(path)
    try:
        pq.write_table(table, staging)
        os.replace(staging, path)
    finally:
        staging.unlink(missing_ok=True)


def write_csv_atomically(frame: Any, path: Path, **to_csv: Any) -> None:
    """Write a pandas DataFrame as CSV to `path` through a staging file and an atomic rename (`to_csv` options as
    pandas takes them; the index is never written)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = _staging_path(path)
    try:
        frame.to_csv(staging, index=False, **to_csv)
        os.replace(staging, path)
    finally:
        staging.unlink(missing_ok=True)


def write_json_atomically(payload: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = _staging_path(path)
    try:
        staging.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str))
        os.replace(staging, path)
    finally:
        staging.unlink(missing_ok=True)


def publish_directory(staging: Path, final: Path) -> None:
    """Make a fully written staging directory visible under `final`, replacing an older one.

    `rename` of a directory is atomic on one filesystem; the old copy is moved aside first and deleted after, so a
    reader sees either the old or the new directory, never a mix.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    retired = None
    if final.exists():
        retired = final.with_name(f".{final.name}.retired-{uuid.uuid4().hex[:8]}")
        os.replace(final, retired)
    os.replace(staging, final)
    if retired is not None:
        shutil.rmtree(retired, ignore_errors=True)


def staging_directory_for(final: Path) -> Path:
    final.parent.mkdir(parents=True, exist_ok=True)
    return _staging_path(final)
