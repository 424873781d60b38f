"""A run's date: the day the platform acts as if it were, from which every cutoff of the run follows.

The run date is the run's scoring cutoff: its features use events strictly before it, and the data it needs ends
the day before. Where it comes from, in order:

1. an explicit request (the `run_date` of a manual trigger, a replay or a CLI option);
2. the run that triggered this one (the `run_date` carried in the triggering Asset event's extra);
3. the schedule: a scheduled or backfill run's data interval end (a daily 00:00 run of 2025-03-02 works on the
   data up to and including 2025-03-01);
4. the data: a run started by hand without a date takes the day after the latest complete day of data.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

RunDateSource = Literal["requested", "upstream", "schedule", "data"]
SCHEDULED_RUN_TYPES = frozenset({"scheduled", "backfill"})
ONE_DAY = dt.timedelta(days=1)


class NoDataYet(LookupError):
    """A run without a date cannot take one from data that does not exist yet."""


@dataclass(frozen=True)
class RunDate:
    date: dt.date
    source: RunDateSource

    @property
    def last_data_day(self) -> dt.date:
        """The last day of events a run on this date needs."""
        return self.date - ONE_DAY


def parse_date(value: str | dt.date | dt.datetime | None) -> dt.date | None:
    """`YYYY-MM-DD` (or a date/datetime) to a date; None and empty stay None."""
    if value is None or value == "":
        return None
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value)[:10])
    except ValueError as error:
        raise ValueError(f"run date {value!r} is not a date: use YYYY-MM-DD") from error


def run_date_from_data(latest_event_day: dt.date) -> dt.date:
    """The day after the latest complete day of data."""
    return latest_event_day + ONE_DAY


def newest_upstream_run_date(events: Iterable[Any]) -> dt.date | None:
    """The `run_date` of the newest triggering Asset event that carries one (events have `.extra`, `.timestamp`)."""
    dated = [e for e in events if (getattr(e, "extra", None) or {}).get("run_date")]
    if not dated:
        return None
    return parse_date(max(dated, key=lambda e: e.timestamp).extra["run_date"])


def resolve_run_date(
    *,
    requested: str | dt.date | None = None,
    upstream: dt.date | None = None,
    run_type: str | None = None,
    data_interval_end: dt.datetime | None = None,
    latest_event_day: Callable[[], dt.date | None] | None = None,
) -> RunDate:
    """The run date by the precedence in the module docstring; `latest_event_day` is only called when needed."""
    explicit = parse_date(requested)
    if explicit is not None:
        return RunDate(explicit, "requested")
    if upstream is not None:
        return RunDate(upstream, "upstream")
    if run_type in SCHEDULED_RUN_TYPES:
        if data_interval_end is None:
            raise ValueError(f"a {run_type} run without a data interval has no date")
        return RunDate(data_interval_end.date(), "schedule")
    latest = latest_event_day() if latest_event_day is not None else None
    if latest is None:
        raise NoDataYet(
            "this run has no date (started by hand without `run_date`) and no events have been ingested yet to "
            "take one from; ingest data first or give the run a date"
        )
    return RunDate(run_date_from_data(latest), "data")


class DataNotReady(RuntimeError):
    """The events do not reach the day a run needs; running now would read missing data as inactivity."""


def watermark_reached(run_date: dt.date, latest_event_day: dt.date | None, tolerance_days: int = 0) -> bool:
    """True when the events reach the run's last data day, give or take `tolerance_days`."""
    return latest_event_day is not None and latest_event_day >= run_date - ONE_DAY * (1 + tolerance_days)


def require_watermark(
    dataset: str, run_date: dt.date, latest_event_day: dt.date | None, tolerance_days: int = 0
) -> None:
    """Raise `DataNotReady`, naming the last day seen, unless the events reach the run's last data day."""
    if watermark_reached(run_date, latest_event_day, tolerance_days):
        return
    needed = run_date - ONE_DAY * (1 + tolerance_days)
    seen = latest_event_day.isoformat() if latest_event_day else "none (no events ingested)"
    raise DataNotReady(
        f"dataset {dataset!r}: the run of {run_date} needs events through {needed}, but the last day seen is {seen}; "
        "deliver the missing files, then retry the run"
    )
