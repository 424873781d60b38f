"""Purchase history as of a cutoff and the value in a window after it, checked by hand on a few events."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from churnops.jobs.value.features import recent_purchase_features
from churnops.jobs.value.history import purchase_history, value_in_window

CUTOFF = dt.date(2024, 3, 1)


def events(rows: list[tuple[str, str, float]]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "customer_id": [r[0] for r in rows],
            "event_day": [dt.date.fromisoformat(r[1]) for r in rows],
            "amount": [r[2] for r in rows],
        }
    )


LOG = events(
    [
        ("a", "2024-01-05", 10.0),
        ("a", "2024-01-05", 5.0),  # a second order on the same day: one purchase day of $15
        ("a", "2024-01-19", 20.0),
        ("a", "2024-02-16", 40.0),
        ("a", "2024-03-01", 99.0),  # on the cutoff: future, not history
        ("b", "2024-02-23", 8.0),
        ("b", "2024-05-30", 7.0),  # the last day of a 91-day window from the cutoff
        ("b", "2024-05-31", 1000.0),  # the first day after it
        ("c", "2024-03-02", 12.0),  # first buys after the cutoff: not a customer yet
    ]
)


def test_history_counts_purchase_days_and_measures_weeks_from_the_first_one() -> None:
    history = purchase_history(LOG, CUTOFF)
    assert history.index.tolist() == ["a", "b"]
    a = history.loc["a"]
    assert a["purchase_days"] == 3
    assert a["frequency"] == 2
    assert a["recency_weeks"] == pytest.approx(6.0)  # 2024-01-05 -> 2024-02-16
    assert a["age_weeks"] == pytest.approx(8.0)  # 2024-01-05 -> 2024-03-01
    assert a["amount_total"] == pytest.approx(75.0)
    assert a["amount_first_day"] == pytest.approx(15.0)
    assert a["repeat_mean_spend"] == pytest.approx(30.0)  # (20 + 40) / 2
    b = history.loc["b"]
    assert (b["frequency"], b["recency_weeks"], b["age_weeks"]) == (0, 0, 1)
    assert np.isnan(b["repeat_mean_spend"])


def test_value_window_starts_on_the_cutoff_day_and_stops_after_window_days() -> None:
    customers = pd.Index(["a", "b", "c", "nobody"])
    assert value_in_window(LOG, customers, CUTOFF, 91).tolist() == [99.0, 7.0, 12.0, 0.0]
    assert value_in_window(LOG, customers, CUTOFF, 92).tolist() == [99.0, 1007.0, 12.0, 0.0]


def test_history_needs_the_bronze_columns() -> None:
    with pytest.raises(ValueError, match="lacks \\['amount'\\]"):
        purchase_history(LOG.drop(columns="amount"), CUTOFF)


def test_recent_purchase_features_read_the_last_purchase_days_before_the_cutoff() -> None:
    recent = recent_purchase_features(LOG, CUTOFF)
    a = recent.loc["a"]
    assert (a["amount_purchase_day_last_1"], a["amount_purchase_day_last_2"]) == (40.0, 20.0)
    assert a["amount_purchase_day_last_3"] == 15.0
    assert (a["gap_days_before_purchase_day_last_1"], a["gap_days_before_purchase_day_last_2"]) == (28.0, 14.0)
    assert a["days_first_to_second_purchase"] == 14.0
    assert (a["purchase_days_first_28d"], a["amount_first_28d"]) == (2.0, 35.0)
    assert np.isnan(recent.loc["b", "amount_purchase_day_last_2"])


def test_past_spend_rate_is_spend_per_day_known_times_the_horizon() -> None:
    from churnops.jobs.value.features import past_spend_rate_value

    history = purchase_history(LOG, CUTOFF)
    # a: $75 over 56 days; b: $8 over 7 days.
    assert past_spend_rate_value(history, 28).tolist() == pytest.approx([75 / 56 * 28, 8 / 7 * 28])


def test_catalog_features_must_be_one_row_per_customer_and_not_rename_value_features() -> None:
    from churnops.jobs.value.features import cutoff_inputs

    duplicated = pd.DataFrame({"amount_sum_30d": [1.0, 2.0]}, index=pd.Index(["a", "a"], name="customer_id"))
    with pytest.raises(ValueError, match="duplicate customer ids"):
        cutoff_inputs(LOG, CUTOFF, duplicated)
    clashing = pd.DataFrame({"frequency": [1.0]}, index=pd.Index(["a"], name="customer_id"))
    with pytest.raises(ValueError, match=r"\['frequency'\] clash"):
        cutoff_inputs(LOG, CUTOFF, clashing)
