"""Spark feature job: point-in-time correctness, agreement with a brute-force oracle and with DuckDB, labels.

One local[2] SparkSession serves the whole module (see conftest.py).
"""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from churnops.bronze import event_part_paths
from churnops.features import CUTOFF, ENTITY_ID, LABEL, LABEL_AVAILABLE, event_feature_specs, model_feature_columns
from churnops.jobs.cdnow import cdnow_source_file, read_cdnow
from churnops.jobs.feature_frames import compute_feature_table
from churnops.jobs.reference_duckdb import compute_reference_features
from tests.features.brute_force import brute_force_row
from tests.features.conftest import make_settings, synthetic_contract_yaml, write_contract

# The generated data ends on 2024-12-31: a run on 2025-01-01 observes everything before it.
OBSERVED_UNTIL = dt.date(2025, 1, 1)


def spark_features(spark, contract, home: Path, cutoffs: list[dt.date]) -> pd.DataFrame:
    observed_until = contract.cutoffs.as_of or OBSERVED_UNTIL
    frame = compute_feature_table(spark, contract, make_settings(home), cutoffs, observed_until).toPandas()
    frame[CUTOFF] = pd.to_datetime(frame[CUTOFF])
    return frame.sort_values([CUTOFF, ENTITY_ID], ignore_index=True)


def assert_same_features(actual: pd.DataFrame, expected: pd.DataFrame, columns: list[str]) -> None:
    """Equal row sets and values; floats equal up to the job's 6-decimal rounding (one unit in the last place)."""
    assert list(actual[ENTITY_ID]) == list(expected[ENTITY_ID])
    for column in columns:
        left, right = actual[column], expected[column]
        if pd.api.types.is_numeric_dtype(left) and pd.api.types.is_numeric_dtype(right):
            np.testing.assert_allclose(
                left.to_numpy(dtype=float), right.to_numpy(dtype=float), rtol=1e-9, atol=2e-6, err_msg=column
            )
        else:
            assert left.astype("string").fillna("<NA>").tolist() == right.astype("string").fillna("<NA>").tolist(), (
                column
            )


# ---------------------------------------------------------------------------------------------------------------
# Point in time: nothing at or after the cutoff can change a feature
# ---------------------------------------------------------------------------------------------------------------


def truncated_copy(events: pd.DataFrame, timestamp_column: str, cutoff: dt.date, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    kept = events[events[timestamp_column] < pd.Timestamp(cutoff)]
    assert len(kept) < len(events), "the test needs events at or after the cutoff to remove"
    kept.to_parquet(path, index=False, coerce_timestamps="us")
    return path


@pytest.mark.slow
@pytest.mark.parametrize("cutoff", [dt.date(2023, 9, 1), dt.date(2024, 11, 1)])
def test_synthetic_features_ignore_events_at_or_after_cutoff(spark, small_synthetic, tmp_path, cutoff):
    full = write_contract(tmp_path / "full", synthetic_contract_yaml(small_synthetic, name="pit-full"))
    events = pd.read_parquet(small_synthetic / "events.parquet")
    cut_path = truncated_copy(events, "event_time", cutoff, tmp_path / "cut" / "events.parquet")
    raw = synthetic_contract_yaml(small_synthetic, name="pit-cut")
    raw["events"]["path"] = str(cut_path)
    truncated = write_contract(tmp_path / "cut", raw)

    with_future = spark_features(spark, full, tmp_path / "home-full", [cutoff])
    without_future = spark_features(spark, truncated, tmp_path / "home-cut", [cutoff])

    numeric, categorical = model_feature_columns(full)
    assert len(with_future) > 50
    assert_same_features(with_future, without_future, numeric + categorical)


@pytest.fixture(scope="module")
def cdnow_events(tmp_path_factory) -> pd.DataFrame:
    return read_cdnow(cdnow_source_file())


def cdnow_contract(folder: Path, events_path: Path, name: str):
    raw = yaml.safe_load((Path(__file__).resolve().parents[2] / "churnops/datasets/cdnow.yaml").read_text())
    raw["name"], raw["events"]["path"] = name, str(events_path)
    return write_contract(folder, raw)


@pytest.mark.slow
@pytest.mark.parametrize("cutoff", [dt.date(1997, 5, 10), dt.date(1997, 10, 1)])
def test_cdnow_features_ignore_purchases_at_or_after_cutoff(spark, cdnow_events, tmp_path, cutoff):
    full_path = tmp_path / "full" / "events.parquet"
    full_path.parent.mkdir(parents=True)
    cdnow_events.to_parquet(full_path, index=False, coerce_timestamps="us")
    cut_path = truncated_copy(cdnow_events, "purchase_date", cutoff, tmp_path / "cut" / "events.parquet")

    with_future = spark_features(
        spark, cdnow_contract(tmp_path / "full", full_path, "cdnow-full"), tmp_path / "home-full", [cutoff]
    )
    without_future = spark_features(
        spark, cdnow_contract(tmp_path / "cut", cut_path, "cdnow-cut"), tmp_path / "home-cut", [cutoff]
    )

    numeric, categorical = model_feature_columns(cdnow_contract(tmp_path / "x", full_path, "cdnow-x"))
    assert_same_features(with_future, without_future, numeric + categorical)
    if cutoff == dt.date(1997, 10, 1):
        # Issue 9's protocol: every one of the 23,570 customers bought before 1997-10-01 and is scored there.
        assert len(with_future) == 23_570


# ---------------------------------------------------------------------------------------------------------------
# Values: Spark equals a brute-force pandas loop on sampled customers, and DuckDB on all of them
# ---------------------------------------------------------------------------------------------------------------

VALUE_CUTOFFS = [dt.date(2024, 6, 1), dt.date(2024, 11, 1), dt.date(2025, 1, 1)]


@pytest.fixture(scope="module")
def synthetic_run(spark, small_synthetic, tmp_path_factory):
    folder = tmp_path_factory.mktemp("values")
    contract = write_contract(folder, synthetic_contract_yaml(small_synthetic, name="values"))
    home = folder / "home"
    return contract, home, spark_features(spark, contract, home, VALUE_CUTOFFS)


@pytest.mark.slow
def test_feature_values_equal_brute_force_on_sampled_customers(synthetic_run, small_synthetic):
    contract, _, features = synthetic_run
    events = pd.read_parquet(small_synthetic / "events.parquet")
    events["customer_id"] = events["customer_id"].astype(str)
    customers = pd.read_parquet(small_synthetic / "customers.parquet").set_index(
        pd.read_parquet(small_synthetic / "customers.parquet")["customer_id"].astype(str)
    )
    sample = features.sample(n=60, random_state=3)
    specs = event_feature_specs(contract)
    compared = 0
    for _, row in sample.iterrows():
        cutoff = row[CUTOFF].date()
        expected = brute_force_row(events[events["customer_id"] == row[ENTITY_ID]], cutoff, contract)
        for spec in specs:
            actual, wanted = row[spec.name], expected[spec.name]
            if spec.kind == "categorical":
                assert (None if pd.isna(actual) else actual) == wanted, (spec.name, row[ENTITY_ID], cutoff)
            elif math.isnan(wanted):
                assert pd.isna(actual), (spec.name, row[ENTITY_ID], cutoff, actual)
            else:
                assert actual == pytest.approx(wanted, rel=1e-9, abs=2e-6), (spec.name, row[ENTITY_ID], cutoff)
            compared += 1
        signup = customers.loc[row[ENTITY_ID], "signup_date"]
        assert row["days_since_signup"] == (pd.Timestamp(cutoff) - signup).days
        assert row["plan"] == customers.loc[row[ENTITY_ID], "plan"]
        if row[LABEL_AVAILABLE]:
            assert row[LABEL] == expected["label"], (row[ENTITY_ID], cutoff)
        else:
            assert pd.isna(row[LABEL])
    assert compared == 60 * len(specs)


@pytest.mark.slow
def test_population_is_customers_active_within_the_contract_window(synthetic_run, small_synthetic):
    contract, _, features = synthetic_run
    events = pd.read_parquet(small_synthetic / "events.parquet")
    for cutoff in VALUE_CUTOFFS:
        start = pd.Timestamp(cutoff) - pd.Timedelta(days=contract.population.active_within_days)
        recent = events[(events["event_time"] >= start) & (events["event_time"] < pd.Timestamp(cutoff))]
        expected = set(recent["customer_id"].astype(str))
        assert set(features.loc[features[CUTOFF] == pd.Timestamp(cutoff), ENTITY_ID]) == expected


@pytest.mark.slow
def test_duckdb_reference_agrees_with_spark_on_every_customer(synthetic_run):
    contract, home, features = synthetic_run
    reference = compute_reference_features(
        contract, event_part_paths(make_settings(home), contract.name), VALUE_CUTOFFS, OBSERVED_UNTIL
    )
    numeric, categorical = model_feature_columns(contract)
    assert len(reference) == len(features)
    assert_same_features(features, reference, numeric + categorical + [LABEL, LABEL_AVAILABLE])


# ---------------------------------------------------------------------------------------------------------------
# Labels, on a hand-made CSV event log whose every row is there for a reason
# ---------------------------------------------------------------------------------------------------------------

CUTOFF_DAY = dt.date(2024, 3, 1)
LATE_CUTOFF = dt.date(2024, 5, 1)  # its 30-day horizon ends after as_of: label not yet observable
LABEL_EVENTS = [
    # customer, timestamp, type, amount
    ("on_cutoff_day", "2024-01-10 12:00:00", "purchase", "10"),
    ("on_cutoff_day", "2024-03-01 00:00:00", "visit", "0"),  # the cutoff day belongs to the label, not features
    ("just_outside", "2024-02-01 08:00:00", "purchase", "5"),
    ("just_outside", "2024-03-31 00:00:00", "purchase", "5"),  # cutoff + 30 days: after the horizon
    ("last_moment", "2024-02-01 08:00:00", "purchase", "5"),
    ("last_moment", "2024-03-30 23:59:59", "visit", "0"),  # the last second of the horizon
    ("only_after", "2024-03-05 10:00:00", "purchase", "7"),  # unknown at the cutoff: not in its population
    ("visits_after", "2024-02-20 10:00:00", "purchase", "3"),
    ("visits_after", "2024-03-10 10:00:00", "visit", "0"),
    ("buys_after", "2024-02-20 10:00:00", "visit", "0"),
    ("buys_after", "2024-03-10 10:00:00", "purchase", "9"),
]


def label_contract(folder: Path, kind: str, event_type: str | None = None):
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(LABEL_EVENTS, columns=["who", "when", "what", "value"]).to_csv(folder / "events.csv", index=False)
    label = {"kind": kind, "horizon_days": 30} | ({"event_type": event_type} if event_type else {})
    raw = {
        "name": f"labels-{kind}",
        "events": {
            "path": "events.csv",
            "format": "csv",
            "entity_key": "who",
            "timestamp": "when",
            "amount": "value",
            "event_type": "what",
            "counted_event_types": ["purchase", "visit"],
        },
        "label": label,
        "cutoffs": {"first": "2024-03-01", "as_of": "2024-05-15"},
    }
    return write_contract(folder, raw)


def labels_by_customer(spark, contract, home: Path) -> dict[tuple[str, dt.date], object]:
    frame = spark_features(spark, contract, home, [CUTOFF_DAY, LATE_CUTOFF])
    return {(r[ENTITY_ID], r[CUTOFF].date()): r for _, r in frame.iterrows()}


@pytest.mark.slow
def test_churn_label_is_no_event_in_the_horizon_starting_on_the_cutoff_day(spark, tmp_path):
    rows = labels_by_customer(spark, label_contract(tmp_path, "churn"), tmp_path / "home")
    at = {customer: rows[(customer, CUTOFF_DAY)] for customer, day in rows if day == CUTOFF_DAY}

    assert at["on_cutoff_day"][LABEL] == 0 and at["on_cutoff_day"]["event_count_all"] == 1
    assert at["just_outside"][LABEL] == 1
    assert at["last_moment"][LABEL] == 0
    assert "only_after" not in at
    assert at["visits_after"][LABEL] == 0 and at["buys_after"][LABEL] == 0
    assert all(bool(r[LABEL_AVAILABLE]) for r in at.values())


@pytest.mark.slow
def test_propensity_label_counts_only_the_named_event_type(spark, tmp_path):
    rows = labels_by_customer(spark, label_contract(tmp_path, "propensity", "purchase"), tmp_path / "home")

    assert rows[("visits_after", CUTOFF_DAY)][LABEL] == 0
    assert rows[("buys_after", CUTOFF_DAY)][LABEL] == 1
    assert rows[("on_cutoff_day", CUTOFF_DAY)][LABEL] == 0  # a visit on the cutoff day is not a purchase
    assert rows[("just_outside", CUTOFF_DAY)][LABEL] == 0


@pytest.mark.slow
def test_label_is_null_and_unavailable_when_the_horizon_passes_the_data_end(spark, tmp_path):
    rows = labels_by_customer(spark, label_contract(tmp_path, "churn"), tmp_path / "home")
    late = [r for (customer, day), r in rows.items() if day == LATE_CUTOFF]

    assert late, "customers seen before the late cutoff are still scored there"
    assert all(not r[LABEL_AVAILABLE] and pd.isna(r[LABEL]) for r in late)
