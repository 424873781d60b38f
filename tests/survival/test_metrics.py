"""The survival metrics agree with lifelines and scikit-survival on small data, including censoring."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from lifelines import KaplanMeierFitter
from sklearn.metrics import roc_auc_score
from sksurv.metrics import concordance_index_censored, cumulative_dynamic_auc, integrated_brier_score
from sksurv.util import Surv

from churnops.jobs.survival.data import DURATION, EVENT
from churnops.jobs.survival.metrics import (
    SurvivalPredictions,
    calibration_error,
    calibration_table,
    harrell_c_index,
    integrated_brier,
    kaplan_meier_at,
    survival_metrics,
    time_dependent_auc,
)


def sample(n: int = 400, seed: int = 0, follow_up: int = 60) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exponential purchase times whose rate grows with x, random censoring, and the end of follow-up."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    times = np.ceil(rng.exponential(30 * np.exp(-0.8 * x)))
    censoring = np.ceil(rng.uniform(5, 120, size=n))
    end = np.minimum(censoring, follow_up)
    return np.minimum(times, end), (times <= end).astype(int), x


def test_c_index_matches_scikit_survival_and_rewards_higher_risk_for_earlier_buyers() -> None:
    durations, events, x = sample()
    expected = concordance_index_censored(events.astype(bool), durations, x)[0]
    assert harrell_c_index(durations, events, x) == pytest.approx(expected, abs=1e-9)
    assert harrell_c_index(durations, events, x) > 0.6
    assert harrell_c_index(durations, events, -x) == pytest.approx(1 - harrell_c_index(durations, events, x))


def test_c_index_on_a_hand_made_example() -> None:
    # Comparable pairs (earlier time is a purchase): (0,1), (0,2), (1,2); risk orders (0,1) and (0,2) right.
    assert harrell_c_index(np.array([1, 2, 3]), np.array([1, 1, 0]), np.array([3.0, 1.0, 2.0])) == pytest.approx(2 / 3)


def test_auc_without_censoring_before_t_is_the_roc_auc_of_bought_by_t() -> None:
    durations, events, x = sample(follow_up=200)
    censored_early = (events == 0) & (durations <= 30)
    durations, events, x = durations[~censored_early], events[~censored_early], x[~censored_early]
    bought = ((durations <= 30) & (events == 1)).astype(int)
    assert time_dependent_auc(durations, events, x, [30])[30] == pytest.approx(roc_auc_score(bought, x))


def test_auc_and_brier_match_scikit_survival_where_it_accepts_the_data() -> None:
    durations, events, x = sample(seed=3)
    last = durations.argmax()
    # The one longest time a purchase: the censoring survival stays positive, so sksurv runs on the data as is.
    durations[last], events[last] = durations.max() + 1, 1
    outcomes = Surv.from_arrays(events.astype(bool), durations)
    days = np.array([10, 20, 40])
    expected, _ = cumulative_dynamic_auc(outcomes, outcomes, x, days)
    np.testing.assert_allclose(list(time_dependent_auc(durations, events, x, days).values()), expected)
    grid = np.arange(1, int(durations.max()))
    survival = np.exp(-np.outer(np.exp(0.8 * x) / 30, grid))
    assert integrated_brier(durations, events, survival, grid) == pytest.approx(
        integrated_brier_score(outcomes, outcomes, survival, grid)
    )


def test_metrics_accept_an_administrative_end_of_follow_up_with_purchases_on_its_last_day() -> None:
    durations, events, x = sample(follow_up=60)
    durations[:5], events[:5] = 60, 1  # bought on the last day; everyone still quiet is censored on it too
    aucs = time_dependent_auc(durations, events, x, [30, 59])
    assert all(0.5 < a < 1 for a in aucs.values())


def test_kaplan_meier_matches_lifelines() -> None:
    durations, events, _ = sample(seed=5)
    fitter = KaplanMeierFitter().fit(durations, events)
    for day in (1, 10, 33, 59):
        assert kaplan_meier_at(durations, events, day) == pytest.approx(float(fitter.predict(day)))


def test_calibration_compares_decile_means_with_kaplan_meier_and_is_zero_for_exact_predictions() -> None:
    durations, events, x = sample(n=1000, follow_up=365)
    table = calibration_table(durations, events, x, day=30)
    assert list(table["group"]) == list(range(1, 11)) and table["n"].sum() == 1000
    assert table["observed"].is_monotonic_increasing or table["observed"].iloc[-1] > table["observed"].iloc[0]
    exact = table.assign(predicted=table["observed"])
    assert calibration_error(exact) == 0.0
    assert calibration_error(table.assign(predicted=table["observed"] + 0.1)) == pytest.approx(0.1)


def test_survival_metrics_reports_every_measure_for_horizons_inside_the_follow_up() -> None:
    durations, events, x = sample(n=500, follow_up=120)
    days = np.arange(1, 121)
    survival = np.exp(-np.outer(np.exp(0.8 * x) / 30, days))
    predictions = SurvivalPredictions(days=days, survival=survival, risk=x)
    metrics = survival_metrics(pd.DataFrame({DURATION: durations, EVENT: events}), predictions)
    assert set(metrics) == {
        "c_index",
        "auc_30d",
        "auc_90d",
        "integrated_brier",
        "calibration_error_30d",
        "calibration_error_90d",
    }  # 180 days lies beyond this follow-up
    assert metrics["c_index"] > 0.6 and metrics["calibration_error_30d"] < 0.1
    with pytest.raises(ValueError, match="not on the prediction grid"):
        predictions.p_buy_by(200)
