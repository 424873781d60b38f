"""A run's date: where it comes from, and when the data is complete enough to act on it."""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace

import pytest

from churnops.run_dates import (
    DataNotReady,
    NoDataYet,
    newest_upstream_run_date,
    require_watermark,
    resolve_run_date,
    watermark_reached,
)

D = dt.date
MIDNIGHT = dt.datetime(2025, 3, 2, 0, 0, tzinfo=dt.UTC)


def test_a_scheduled_run_acts_on_its_data_interval_end():
    run = resolve_run_date(run_type="scheduled", data_interval_end=MIDNIGHT, latest_event_day=lambda: D(2025, 1, 1))
    assert (run.date, run.source) == (D(2025, 3, 2), "schedule")
    assert run.last_data_day == D(2025, 3, 1)


def test_a_backfill_run_acts_on_its_own_past_date():
    backfill = resolve_run_date(run_type="backfill", data_interval_end=MIDNIGHT)
    assert backfill.date == D(2025, 3, 2)


def test_a_run_started_by_hand_without_a_date_takes_the_day_after_the_latest_data():
    run = resolve_run_date(run_type="manual", data_interval_end=MIDNIGHT, latest_event_day=lambda: D(2024, 12, 31))
    assert (run.date, run.source) == (D(2025, 1, 1), "data")


def test_an_explicit_date_wins_over_everything_else():
    run = resolve_run_date(
        requested="2024-06-03", upstream=D(2024, 1, 1), run_type="scheduled", data_interval_end=MIDNIGHT
    )
    assert (run.date, run.source) == (D(2024, 6, 3), "requested")


def test_a_triggered_run_takes_the_date_of_the_run_that_woke_it():
    events = [
        SimpleNamespace(extra={"run_date": "2025-02-01"}, timestamp=1),
        SimpleNamespace(extra={"run_date": "2025-02-08"}, timestamp=2),
        SimpleNamespace(extra={}, timestamp=3),
    ]
    upstream = newest_upstream_run_date(events)
    run = resolve_run_date(upstream=upstream, run_type="asset_triggered", data_interval_end=MIDNIGHT)
    assert (run.date, run.source) == (D(2025, 2, 8), "upstream")


def test_a_run_without_a_date_and_without_data_is_refused():
    with pytest.raises(NoDataYet, match="no events have been ingested"):
        resolve_run_date(run_type="manual", latest_event_day=lambda: None)


def test_a_malformed_date_names_the_expected_format():
    with pytest.raises(ValueError, match="YYYY-MM-DD"):
        resolve_run_date(requested="03/02/2025")


def test_the_watermark_is_reached_when_the_events_reach_the_day_before_the_run():
    assert watermark_reached(D(2025, 3, 2), D(2025, 3, 1))
    assert not watermark_reached(D(2025, 3, 2), D(2025, 2, 28))
    assert watermark_reached(D(2025, 3, 2), D(2025, 2, 28), tolerance_days=1)
    assert not watermark_reached(D(2025, 3, 2), None)


def test_a_missing_day_fails_the_run_naming_the_last_day_seen():
    with pytest.raises(DataNotReady, match="needs events through 2025-03-01, but the last day seen is 2025-02-27"):
        require_watermark("synthetic", D(2025, 3, 2), D(2025, 2, 27))
