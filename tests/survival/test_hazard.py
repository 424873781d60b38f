"""Person-period expansion and survival curves from piecewise-constant daily hazard rates."""

from __future__ import annotations

import math

import numpy as np
import pytest

from churnops.jobs.survival.hazard import (
    TimeBins,
    all_bins_inputs,
    cumulative_hazard,
    expand_person_periods,
    hazard_inputs,
    median_days,
    survival_curves,
)

BINS = TimeBins((0, 10, 20))  # days (0,10], (10,20], (20,∞)


def test_expansion_gives_one_row_per_bin_at_risk_with_exposure_and_the_purchase_in_its_bin() -> None:
    durations = np.array([5, 10, 25, 20, 12])
    events = np.array([1, 0, 1, 1, 0])
    rows = expand_person_periods(durations, events, BINS)
    table = list(zip(rows.subject, rows.bin, rows.exposure_days, rows.event, strict=True))
    assert table == [
        (0, 0, 5.0, 1),  # bought on day 5: exposed 5 days of bin 0
        (1, 0, 10.0, 0),  # censored at the bin's last day: a full bin without a purchase, no more rows
        (2, 0, 10.0, 0),
        (2, 1, 10.0, 0),
        (2, 2, 5.0, 1),  # the open-ended last bin: days 21..25
        (3, 0, 10.0, 0),
        (3, 1, 10.0, 1),  # bought on day 20, the last day of bin 1
        (4, 0, 10.0, 0),
        (4, 1, 2.0, 0),  # censored mid-bin: exposed 2 days, never counted as "did not buy in the bin"
    ]


def test_expansion_refuses_durations_below_one_day_and_other_events() -> None:
    with pytest.raises(ValueError, match=">= 1"):
        expand_person_periods(np.array([0]), np.array([1]), BINS)
    with pytest.raises(ValueError, match="0 .censored. or 1"):
        expand_person_periods(np.array([3]), np.array([2]), BINS)


def test_bins_must_start_at_zero_and_increase() -> None:
    with pytest.raises(ValueError, match="start at day 0"):
        TimeBins((5, 10))
    with pytest.raises(ValueError, match="strictly increase"):
        TimeBins((0, 10, 10))
    assert TimeBins.regular(15, 180).starts == tuple(range(0, 181, 15))


def test_survival_is_the_exponential_of_the_piecewise_cumulative_hazard() -> None:
    rates = np.array([[0.1, 0.0, 0.02], [0.0, 0.0, 0.0]])
    days = np.array([1, 5, 10, 15, 20, 30])
    expected_hazard = np.array([[0.1, 0.5, 1.0, 1.0, 1.0, 1.2], [0, 0, 0, 0, 0, 0]])
    np.testing.assert_allclose(cumulative_hazard(rates, BINS, days), expected_hazard)
    np.testing.assert_allclose(survival_curves(rates, BINS, days), np.exp(-expected_hazard))


def test_constant_rate_gives_the_exponential_survival_and_its_median() -> None:
    rate = 0.03
    rates = np.full((1, 3), rate)
    days = np.arange(1, 100)
    np.testing.assert_allclose(survival_curves(rates, BINS, days)[0], np.exp(-rate * days))
    np.testing.assert_allclose(median_days(rates, BINS, horizon_days=100), [math.log(2) / rate])


def test_median_is_found_inside_the_bin_where_the_curve_crosses_one_half() -> None:
    rates = np.array([[0.01, 0.2, 0.0]])  # H(10) = 0.1, then 0.2 a day: crosses ln 2 at 10 + (ln 2 - 0.1) / 0.2
    np.testing.assert_allclose(median_days(rates, BINS, 365), [10 + (math.log(2) - 0.1) / 0.2])
    assert survival_curves(rates, BINS, median_days(rates, BINS, 365))[0, 0] == pytest.approx(0.5)


def test_median_beyond_the_horizon_is_not_reported() -> None:
    rates = np.array([[0.001, 0.001, 0.001], [0.0, 0.0, 0.0]])
    assert np.isnan(median_days(rates, BINS, horizon_days=180)).all()


def test_negative_or_misshapen_rates_are_refused() -> None:
    with pytest.raises(ValueError, match="non-negative"):
        survival_curves(np.array([[0.1, -0.1, 0.0]]), BINS, np.array([1]))
    with pytest.raises(ValueError, match="3 bins"):
        survival_curves(np.array([[0.1, 0.1]]), BINS, np.array([1]))


def test_hazard_inputs_append_the_bin_start_and_advance_time_since_columns() -> None:
    matrix = np.array([[7.0, 2.0], [30.0, 5.0]])  # (days since last purchase, something else)
    inputs = hazard_inputs(matrix, BINS, np.array([0, 1, 1]), np.array([0, 0, 2]), shifted_columns=[0])
    np.testing.assert_array_equal(inputs, [[7, 2, 0, 7], [30, 5, 0, 30], [30, 5, 20, 50]])
    assert all_bins_inputs(matrix, BINS, [0]).shape == (6, 4)
