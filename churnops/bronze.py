"""The bronze layer: validated events per source file and event day, committed by one manifest.

Layout under `<home>/bronze/<dataset>/`:

    manifest.json                                       the commit point: every source file, its counts, its parts
    events/day=YYYY-MM-DD/<file>-<hash>.<run>.parquet   accepted rows of one source file on one event day
    quarantine/<file>-<hash>.<run>.parquet              rejected rows of one source file (raw values, row, reasons)
    .lock                                               held by the one ingestion writing here (jobs/ingest.py)

Readers read only the part files the manifest lists: a part written by a run that crashed before its commit, or
one a later delivery superseded, is invisible, and the next ingestion deletes it. Part names carry the ingestion
run, so a re-delivery never overwrites a file a reader may hold. The manifest is written whole and renamed into
place, so a reader sees the previous commit or the next one, never a mix.

This module reads (events, quarantine, the watermark); `jobs/ingest.py` is the only writer.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd

from churnops.config import Settings
from churnops.dataset import bronze_dir
from churnops.features import ENTITY_ID

MANIFEST_FILE = "manifest.json"
LOCK_FILE = ".lock"
EVENTS_DIR = "events"
QUARANTINE_DIR = "quarantine"
# Bumped when the layout or the validation rules change meaning: a manifest of another version is re-ingested.
LAYOUT_VERSION = 1

# Bronze columns: the platform's names, whatever the source calls them.
EVENT_TIME, EVENT_DAY, EVENT_TYPE, AMOUNT = "event_time", "event_day", "event_type", "amount"
EVENT_COLUMNS = (ENTITY_ID, EVENT_TIME, EVENT_DAY, EVENT_TYPE, AMOUNT)
# Quarantine columns added to the raw ones: every rule the row broke, its 1-based data row, and its source file.
REASON, SOURCE_ROW, SOURCE_FILE = "_reasons", "_source_row", "_source_file"


class BronzeMissingError(FileNotFoundError):
    """No ingestion has committed a bronze layer for this dataset yet."""


def event_schema() -> Any:
    """The Arrow schema of every event part file (one schema for all parts, whatever their source)."""
    import pyarrow as pa

    return pa.schema(
        [
            (ENTITY_ID, pa.string()),
            (EVENT_TIME, pa.timestamp("us")),
            (EVENT_DAY, pa.date32()),
            (EVENT_TYPE, pa.string()),
            (AMOUNT, pa.float64()),
        ]
    )


@dataclass(frozen=True)
class SourceFileRecord:
    """One source file as it was ingested: its identity, its reconciled counts and the bronze files it produced.

    `days` maps each event day with accepted rows to its part file (relative to the bronze folder) and row count.
    `gone_since` is set when the file has left the landing folder: its rows stay in bronze (see
    docs/dataset-contract.md, "Sources").
    """

    size: int
    mtime_ns: int
    sha256: str
    ingestion_id: str
    ingested_at: str
    # Rows stamped after this instant were quarantined as `future_timestamp` (the ingestion time, unless pinned).
    future_after: str
    rows_read: int
    rows_accepted: int
    rows_quarantined: int
    quarantined_by_reason: dict[str, int] = field(default_factory=dict)
    min_event_day: str | None = None
    max_event_day: str | None = None
    days: dict[str, dict[str, Any]] = field(default_factory=dict)
    quarantine: str | None = None
    gone_since: str | None = None

    @property
    def reconciles(self) -> bool:
        """read = accepted + quarantined, and the day parts hold exactly the accepted rows."""
        in_parts = sum(int(entry["rows"]) for entry in self.days.values())
        return self.rows_read == self.rows_accepted + self.rows_quarantined and in_parts == self.rows_accepted

    @property
    def parts(self) -> list[str]:
        return [self.days[day]["part"] for day in sorted(self.days)]

    def with_stat(self, size: int, mtime_ns: int) -> SourceFileRecord:
        return replace(self, size=size, mtime_ns=mtime_ns, gone_since=None)


@dataclass(frozen=True)
class BronzeManifest:
    """Every source file in bronze, keyed by its path relative to the source root (posix separators)."""

    dataset: str
    # The contract's `events.path` as written, and a fingerprint of the rules that turned rows into bronze.
    source: str
    rules: str
    layout_version: int = LAYOUT_VERSION
    files: dict[str, SourceFileRecord] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self) | {"files": {path: asdict(self.files[path]) for path in sorted(self.files)}}

    @classmethod
    def from_json(cls, payload: dict[str, Any]) -> BronzeManifest:
        files = {path: SourceFileRecord(**record) for path, record in payload.pop("files").items()}
        return cls(**payload, files=files)

    def event_parts(self, first_day: dt.date | None = None, last_day: dt.date | None = None) -> list[str]:
        """Part files (relative to the bronze folder) holding the events of [first_day, last_day], in day order."""
        low = first_day.isoformat() if first_day else ""
        high = last_day.isoformat() if last_day else "9999-12-31"
        parts = [
            (day, path, entry["part"])
            for path, record in self.files.items()
            for day, entry in record.days.items()
            if low <= day <= high
        ]
        return [part for _, _, part in sorted(parts)]

    @property
    def latest_event_day(self) -> dt.date | None:
        days = [record.max_event_day for record in self.files.values() if record.max_event_day]
        return dt.date.fromisoformat(max(days)) if days else None

    def rows_per_day(self) -> dict[dt.date, int]:
        counts: dict[str, int] = {}
        for record in self.files.values():
            for day, entry in record.days.items():
                counts[day] = counts.get(day, 0) + int(entry["rows"])
        return {dt.date.fromisoformat(day): n for day, n in sorted(counts.items())}

    def listed_files(self) -> set[str]:
        """Every file (relative to the bronze folder) this manifest keeps alive: event parts and quarantines."""
        listed: set[str] = set()
        for record in self.files.values():
            listed.update(record.parts)
            if record.quarantine:
                listed.add(record.quarantine)
        return listed

    def fingerprint(self) -> str:
        """SHA-256 over the rules and the (path, SHA-256) of every file whose rows are in bronze: what the events
        of a snapshot came from, without re-reading a byte of them."""
        listing = [(path, self.files[path].sha256) for path in sorted(self.files)]
        return hashlib.sha256(json.dumps([self.rules, listing]).encode()).hexdigest()

    def totals(self) -> dict[str, Any]:
        """Reconciled counts over every file in bronze (the snapshot metadata records them)."""
        reasons: dict[str, int] = {}
        for record in self.files.values():
            for reason, n in record.quarantined_by_reason.items():
                reasons[reason] = reasons.get(reason, 0) + n
        return {
            "files": len(self.files),
            "rows_read": sum(r.rows_read for r in self.files.values()),
            "rows_accepted": sum(r.rows_accepted for r in self.files.values()),
            "rows_quarantined": sum(r.rows_quarantined for r in self.files.values()),
            "quarantined_by_reason": dict(sorted(reasons.items())),
        }


def manifest_path(settings: Settings, dataset: str) -> Path:
    return bronze_dir(settings, dataset) / MANIFEST_FILE


def read_manifest(settings: Settings, dataset: str) -> BronzeManifest | None:
    """The committed manifest, or None when nothing was ever ingested for this dataset."""
    path = manifest_path(settings, dataset)
    if not path.exists():
        return None
    return BronzeManifest.from_json(json.loads(path.read_text(encoding="utf-8")))


def committed_manifest(settings: Settings, dataset: str) -> BronzeManifest:
    manifest = read_manifest(settings, dataset)
    if manifest is None:
        raise BronzeMissingError(
            f"no bronze layer for dataset {dataset!r} ({manifest_path(settings, dataset)} does not exist): ingest "
            "it first with `churnops features` or `python -m churnops.jobs.ingest --dataset <name>`"
        )
    return manifest


def event_part_paths(
    settings: Settings,
    dataset: str,
    manifest: BronzeManifest | None = None,
    first_day: dt.date | None = None,
    last_day: dt.date | None = None,
) -> list[Path]:
    """Absolute paths of the committed event part files of [first_day, last_day] (all days by default)."""
    manifest = manifest or committed_manifest(settings, dataset)
    root = bronze_dir(settings, dataset)
    return [root / part for part in manifest.event_parts(first_day, last_day)]


def read_parquet_files(paths: Sequence[Path], schema: Any, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """Read Parquet files that share `schema` into one frame (empty, typed, when there are none)."""
    import pyarrow.dataset as ds

    dataset = ds.dataset([str(p) for p in paths], schema=schema, format="parquet")
    return dataset.to_table(columns=list(columns) if columns else None).to_pandas()


def read_bronze_events(
    settings: Settings,
    dataset: str,
    columns: Sequence[str] | None = None,
    first_day: dt.date | None = None,
    last_day: dt.date | None = None,
    manifest: BronzeManifest | None = None,
) -> pd.DataFrame:
    """Committed bronze events of [first_day, last_day] (whole days), only the columns asked for."""
    paths = event_part_paths(settings, dataset, manifest, first_day, last_day)
    return read_parquet_files(paths, event_schema(), columns)


def read_quarantine(settings: Settings, dataset: str, manifest: BronzeManifest | None = None) -> pd.DataFrame:
    """Every committed quarantined row, with `_source_file` naming the source file it came from."""
    manifest = manifest or committed_manifest(settings, dataset)
    root = bronze_dir(settings, dataset)
    frames = [
        pd.read_parquet(root / record.quarantine).assign(**{SOURCE_FILE: path})
        for path, record in sorted(manifest.files.items())
        if record.quarantine
    ]
    if not frames:
        return pd.DataFrame(columns=[REASON, SOURCE_ROW, SOURCE_FILE])
    return pd.concat(frames, ignore_index=True)


# ----------------------------------------------------------------------------------------------------------------
# The data watermark
# ----------------------------------------------------------------------------------------------------------------


def watermark(settings: Settings, dataset: str) -> dt.date | None:
    """The latest event day with an accepted row in committed bronze (None when bronze holds no event).

    Read from the manifest, never from a scan. Only accepted rows count: a quarantined row (a future timestamp, a
    broken amount) does not move it; the rows of a file that left the landing folder still do (they stay in bronze).
    """
    manifest = read_manifest(settings, dataset)
    return None if manifest is None else manifest.latest_event_day
