"""The two ends of a replay: run dates too early to train a first model, and lists that mature after the last one.

- A run date whose contract plan has no fully observed training and out-of-time cutoffs yet, or whose training
  cutoffs cannot form one time fold (`jobs.training.data.time_folds`), cannot train the bootstrap model: the feature
  DAG would refuse the plan and the training DAG the folds. Such a date is recorded in the timeline as not run, with
  the reason, and the next date is tried (`untrainable_reason`).
- Every list scored at run date d matures at d + horizon; those of the last run dates mature after the replay ends.
  Once the run dates are done, the feeder releases the rest of the log up to the last list's maturity (never past
  the log's end), bronze ingests it, and the platform's own `compute_realized_performance` evaluates every list
  whose horizon has now passed. Nothing is scored, trained or checked for drift after the last run date
  (`mature_remaining_lists`).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pandas as pd

from churnops.config import Settings
from churnops.dataset import DatasetContract

if TYPE_CHECKING:
    from churnops.jobs.feeder import EventFeeder


def untrainable_reason(
    contract: DatasetContract, run_date: dt.date, cv_folds: int, last_event_day: dt.date | None
) -> str | None:
    """Why a first model cannot be trained at `run_date` from the data before it, whose last day is
    `last_event_day` (None: it can). The feature job plans with the same bound: the day after the last day of data."""
    from churnops.jobs.training.data import time_folds

    if last_event_day is None:
        return f"no event before {run_date}"
    try:
        plan = contract.plan(run_date, observed_until=last_event_day + dt.timedelta(days=1))
        assert contract.label.horizon_days is not None  # plan() refuses event data without a horizon
        time_folds([pd.Timestamp(c) for c in plan.train], contract.label.horizon_days, cv_folds)
    except ValueError as error:
        return f"too little history to train: {error}"
    return None


@dataclass(frozen=True)
class Maturity:
    """What the step after the last run date did: data released up to `released_until` (exclusive), the lists it
    evaluated, and the scored lists whose horizon ends after the log (never evaluated)."""

    released_until: dt.date
    evaluated: list[dt.date]
    beyond_the_log: list[dt.date]


def maturity_date(last_list: dt.date | None, horizon_days: int, log_last_day: dt.date) -> dt.date | None:
    """The day data must reach (exclusive) for the last list to mature, capped at the day after the log's last
    day; None when there is no list."""
    if last_list is None:
        return None
    return min(last_list + dt.timedelta(days=horizon_days), log_last_day + dt.timedelta(days=1))


def mature_remaining_lists(settings: Settings, contract: DatasetContract, feeder: EventFeeder) -> Maturity | None:
    """Release the log up to the last list's maturity, ingest it, and evaluate the matured lists with the
    platform's realized-performance code; None when the replay scored no list or has no horizon."""
    from churnops.jobs.ingest import ensure_bronze
    from churnops.monitoring.realized import compute_realized_performance, scoring_lists

    horizon = contract.label.horizon_days
    lists = [stored.logical_date for stored in scoring_lists(settings, contract) if stored.list_kind == "regular"]
    last_day = feeder.last_day()
    until = None if last_day is None else maturity_date(max(lists, default=None), horizon or 0, last_day)
    if horizon is None or until is None:
        return None
    feeder.release_until(until)
    ensure_bronze(contract, settings)
    evaluated = compute_realized_performance(settings, contract, run_date=until)
    beyond = [d for d in lists if d + dt.timedelta(days=horizon) > until]
    return Maturity(until, sorted(r.logical_date for r in evaluated), sorted(beyond))
