"""The replay's source system: history as one initial extract, then one file per day, each delivered once."""

from __future__ import annotations

import datetime as dt

import pandas as pd

from churnops.dataset import DatasetContract
from churnops.jobs.feeder import DAY_FILE, INITIAL_FILE, EventFeeder

D = dt.date


def feeder_for(tmp_path) -> EventFeeder:
    events = pd.DataFrame(
        {
            "who": ["a", "b", "a", "c", "b", "c"],
            "when": pd.to_datetime(
                [
                    "2024-01-01 10:00",
                    "2024-01-02 09:00",
                    "2024-01-03 08:00",
                    "2024-01-03 23:59",
                    "2024-01-05 00:00",
                    "2024-01-06 12:00",
                ]
            ),
            "value": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
        }
    )
    events.to_parquet(tmp_path / "events.parquet", index=False)
    contract = DatasetContract.model_validate(
        {
            "name": "feed",
            "events": {
                "path": str(tmp_path / "events.parquet"),
                "entity_key": "who",
                "timestamp": "when",
                "amount": "value",
            },
            "label": {"kind": "churn", "horizon_days": 7},
            "cutoffs": {"first": "2024-01-01"},
        }
    )
    return EventFeeder.for_contract(contract, tmp_path / "landing")


def landed(feeder: EventFeeder) -> pd.DataFrame:
    files = sorted(feeder.landing.rglob("*.parquet"))
    return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True).sort_values("when", ignore_index=True)


def test_history_goes_out_once_and_days_follow_one_file_each(tmp_path):
    feeder = feeder_for(tmp_path)
    assert feeder.release_history(D(2024, 1, 3)) == 2
    assert feeder.release_history(D(2024, 1, 3)) == 0  # already delivered
    assert feeder.release_until(D(2024, 1, 6)) == [D(2024, 1, 3), D(2024, 1, 5)]
    assert feeder.release_until(D(2024, 1, 6)) == []  # idempotent

    assert (feeder.landing / INITIAL_FILE).exists()
    assert len(pd.read_parquet(feeder.day_file(D(2024, 1, 3)))) == 2
    assert list(landed(feeder)["value"]) == [1.0, 2.0, 3.0, 4.0, 5.0]  # nothing lost, nothing twice, source columns


def test_a_missed_delivery_is_skipped_until_released(tmp_path):
    feeder = feeder_for(tmp_path)
    feeder.release_history(D(2024, 1, 2))
    assert feeder.release_until(D(2024, 1, 7), skip_days=frozenset({D(2024, 1, 5)})) == [
        D(2024, 1, 2),
        D(2024, 1, 3),
        D(2024, 1, 6),
    ]
    assert not feeder.day_file(D(2024, 1, 5)).exists()
    assert feeder.release_until(D(2024, 1, 7)) == [D(2024, 1, 5)]
    assert feeder.day_file(D(2024, 1, 5)).name == DAY_FILE
