"""The data watermark: the latest event day with an accepted row in committed bronze, read from the manifest, and
whether it reaches a run's date. Missing data must never look like data that says "nobody did anything"."""

from __future__ import annotations

import datetime as dt

import pytest

from churnops.bronze import watermark
from churnops.jobs.ingest import ingest_events
from churnops.run_dates import DataNotReady, require_watermark, watermark_reached
from tests.features.conftest import make_settings
from tests.features.test_incremental_ingest import deliver
from tests.features.test_ingest import NOW, contract_for

MAY = [dt.date(2024, 5, day) for day in range(1, 32)]


@pytest.fixture
def landing(tmp_path):
    return tmp_path / "landing", contract_for(tmp_path, "landing"), make_settings(tmp_path / "home")


def test_the_watermark_is_the_latest_day_with_an_accepted_event(landing):
    folder, contract, settings = landing
    assert watermark(settings, contract.name) is None
    deliver(folder, "a.csv", ["c1,2024-05-01 09:00:00,purchase,1", "c2,2024-05-03 23:59:59,visit,0"])
    deliver(folder, "b.csv", ["c3,2024-05-02 10:00:00,purchase,2"])

    ingest_events(contract, settings, future_after=NOW)

    assert watermark(settings, contract.name) == dt.date(2024, 5, 3)


def test_quarantined_rows_do_not_move_the_watermark(landing):
    folder, contract, settings = landing
    deliver(
        folder,
        "a.csv",
        [
            "c1,2024-05-01 09:00:00,purchase,1",
            "c1,2024-05-09 09:00:00,purchase,-1",  # negative amount
            "c1,2024-06-01 12:00:01,purchase,1",  # one second after the ingestion time: future
        ],
    )
    ingest_events(contract, settings, future_after=NOW)

    assert watermark(settings, contract.name) == dt.date(2024, 5, 1)


def test_a_redelivery_with_fewer_days_moves_the_watermark_back(landing):
    folder, contract, settings = landing
    deliver(folder, "a.csv", ["c1,2024-05-01 09:00:00,purchase,1", "c1,2024-05-07 09:00:00,purchase,1"])
    ingest_events(contract, settings, future_after=NOW)
    deliver(folder, "a.csv", ["c1,2024-05-01 09:00:00,purchase,1"])

    ingest_events(contract, settings, future_after=NOW)

    assert watermark(settings, contract.name) == dt.date(2024, 5, 1)


def test_the_rows_of_a_file_gone_from_the_landing_folder_still_count(landing):
    folder, contract, settings = landing
    deliver(folder, "a.csv", ["c1,2024-05-01 09:00:00,purchase,1"])
    deliver(folder, "b.csv", ["c1,2024-05-04 09:00:00,purchase,1"])
    ingest_events(contract, settings, future_after=NOW)
    (folder / "b.csv").unlink()

    ingest_events(contract, settings, future_after=NOW)

    assert watermark(settings, contract.name) == dt.date(2024, 5, 4)


@pytest.mark.parametrize(
    ("latest", "run_date", "tolerance", "ready"),
    [
        (MAY[8], MAY[9], 0, True),  # events on the day before the run date: everything the run needs
        (MAY[9], MAY[9], 0, True),
        (MAY[7], MAY[9], 0, False),  # the day before the run date is missing
        (MAY[7], MAY[9], 1, True),  # ... accepted with one day of tolerance
        (MAY[6], MAY[9], 1, False),
        (None, MAY[9], 30, False),  # no event at all never reaches anything
    ],
)
def test_the_data_reaches_a_run_date_when_the_day_before_it_has_events(latest, run_date, tolerance, ready):
    assert watermark_reached(run_date, latest, tolerance) is ready


def test_data_that_does_not_reach_the_run_date_names_the_last_day_seen(landing):
    folder, contract, settings = landing
    deliver(folder, "a.csv", ["c1,2024-05-07 09:00:00,purchase,1"])
    ingest_events(contract, settings, future_after=NOW)

    with pytest.raises(DataNotReady, match="needs events through 2024-05-09, but the last day seen is 2024-05-07"):
        require_watermark(contract.name, MAY[9], watermark(settings, contract.name))
