"""A source system for replays: releases a dataset's recorded events into a landing folder one day at a time.

The landing folder holds the history before the replay as one initial extract (`initial/events.parquet`), then one
Parquet file per event day (`day=YYYY-MM-DD/events.parquet`), each written atomically, in the source's own columns,
exactly as an upstream system delivering a backfill and then daily extracts would. A replay copies the
dataset's contract with `events.path` pointing at the folder, so ingestion picks up each day's file as it appears.
Releasing is idempotent: a day already in the folder is not written again.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from churnops.dataset import DatasetContract
from churnops.storage import write_json_atomically, write_parquet_atomically

DAY_FOLDER = "day={day}"
DAY_FILE = "events.parquet"
INITIAL_FILE = "initial/events.parquet"
# Says which days the initial extract holds (every day before `before`), so daily files never repeat them.
INITIAL_MARKER = "initial/extract.json"


@dataclass
class EventFeeder:
    """The recorded events of a dataset, released into `landing` day by day."""

    events: pd.DataFrame
    timestamp_column: str
    landing: Path

    @classmethod
    def for_contract(cls, contract: DatasetContract, landing: Path) -> EventFeeder:
        """Read the contract's whole event source once (Parquet or CSV) to release it in daily slices."""
        if contract.events is None:
            raise ValueError(f"dataset {contract.name!r} has no event log to replay")
        source = contract.events
        path = contract.resolve(source.path)
        if not path.exists():
            raise FileNotFoundError(f"the event source {path} does not exist (for built-in data: churnops generate)")
        events = pd.read_csv(path) if source.format == "csv" else pd.read_parquet(path)
        if source.timestamp not in events.columns:
            raise ValueError(f"the event source {path} has no timestamp column {source.timestamp!r}")
        days = pd.to_datetime(events[source.timestamp], errors="coerce").dt.normalize()
        return cls(events.assign(_day=days.dt.date), source.timestamp, landing)

    def last_day(self, before: dt.date | None = None) -> dt.date | None:
        """The last day the recorded log holds an event (before `before` when given: what a release up to it
        delivers); nothing can mature after the day after it. None when there is no such day."""
        days = self.events["_day"].dropna()
        if before is not None:
            days = days[days < before]
        return max(days, default=None)

    def day_file(self, day: dt.date) -> Path:
        return self.landing / DAY_FOLDER.format(day=day.isoformat()) / DAY_FILE

    def release_history(self, end: dt.date) -> int:
        """Write every event before `end` as the initial extract, once; return the rows written (0 if present)."""
        if self.initial_extract_before() is not None:
            return 0
        history = self.events[self.events["_day"] < end]
        write_parquet_atomically(history.drop(columns="_day"), self.landing / INITIAL_FILE)
        write_json_atomically({"before": end.isoformat(), "rows": len(history)}, self.landing / INITIAL_MARKER)
        return len(history)

    def initial_extract_before(self) -> dt.date | None:
        marker = self.landing / INITIAL_MARKER
        return dt.date.fromisoformat(json.loads(marker.read_text())["before"]) if marker.exists() else None

    def release_until(self, end: dt.date, skip_days: frozenset[dt.date] = frozenset()) -> list[dt.date]:
        """Write every day's file before `end` that is not in the landing folder yet (except `skip_days`, a
        source system's missed deliveries); return the days written."""
        first = self.initial_extract_before()
        pending = self.events[self.events["_day"] < end]
        if first is not None:
            pending = pending[pending["_day"] >= first]
        written = []
        for day, rows in pending.groupby("_day", sort=True):
            if day in skip_days or self.day_file(day).exists():
                continue
            write_parquet_atomically(rows.drop(columns="_day"), self.day_file(day))
            written.append(day)
        return written
