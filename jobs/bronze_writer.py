"""The write side of the bronze layer (read side: `churnops/bronze.py`): the lock that keeps two ingestions of one
dataset from interleaving, the day part files, and the removal of files no manifest lists.

Part files are written straight to their final names: a name carries its ingestion run, so it is new, and no reader
looks at it until a manifest lists it.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from churnops.bronze import EVENT_DAY, EVENTS_DIR, LOCK_FILE, MANIFEST_FILE, BronzeManifest, event_schema
from churnops.jobs.event_rules import IngestionError

LOCK_TIMEOUT_SECONDS = 600.0


@contextlib.contextmanager
def bronze_lock(root: Path, timeout_seconds: float = LOCK_TIMEOUT_SECONDS) -> Iterator[None]:
    """Hold the bronze folder's lock (an fcntl lock on its `.lock` file): one ingestion per dataset at a time."""
    import fcntl

    root.mkdir(parents=True, exist_ok=True)
    with (root / LOCK_FILE).open("a+") as handle:
        deadline = time.monotonic() + timeout_seconds
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise IngestionError(
                        f"another ingestion holds the lock {root / LOCK_FILE} (waited {timeout_seconds:g} s); "
                        "run again when it has finished"
                    ) from None
                time.sleep(0.2)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def remove_unlisted_files(root: Path, manifest: BronzeManifest | None) -> int:
    """Delete every file under the bronze folder the committed manifest does not list (never the manifest or the
    lock): parts of a run that crashed before its commit, superseded deliveries, an older layout's files."""
    listed = (manifest.listed_files() if manifest else set()) | {MANIFEST_FILE, LOCK_FILE}
    removed = 0
    for path in sorted(root.rglob("*"), reverse=True):  # deepest first, so emptied folders can go too
        relative = path.relative_to(root).as_posix()
        if path.is_dir():
            if not any(path.iterdir()):
                path.rmdir()
        elif relative not in listed:
            path.unlink()
            removed += 1
    return removed


def part_stem(relative: str, ingestion_id: str) -> str:
    """A part's name: readable from the source path, unique per source file and ingestion run."""
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", relative.replace("/", "__"))[-80:]
    return f"{readable}-{hashlib.sha256(relative.encode()).hexdigest()[:8]}.{ingestion_id}"


def write_day_parts(root: Path, stem: str, accepted: pd.DataFrame) -> dict[str, dict[str, object]]:
    """One Parquet file per event day of `accepted` under events/day=YYYY-MM-DD/; returns the manifest's `days`."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    # A stable sort keeps the source order within each day; one Arrow conversion, then one slice per day.
    ordered = accepted.sort_values(EVENT_DAY, kind="stable", ignore_index=True)
    table = pa.Table.from_pandas(ordered, schema=event_schema(), preserve_index=False)
    day_values = ordered[EVENT_DAY].to_numpy()
    if not len(day_values):
        return {}
    starts = np.flatnonzero(np.r_[True, day_values[1:] != day_values[:-1]])
    lengths = np.diff(np.r_[starts, len(day_values)])
    days: dict[str, dict[str, object]] = {}
    for start, length in zip(starts.tolist(), lengths.tolist(), strict=True):
        day = day_values[start].isoformat()
        part = f"{EVENTS_DIR}/day={day}/{stem}.parquet"
        (root / part).parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table.slice(start, length), root / part)
        days[day] = {"part": part, "rows": length}
    return days
