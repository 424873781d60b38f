"""The classical baselines: Cox PH and Weibull AFT on six RFM covariates, and BG/NBD's P(buy by day t)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from churnops.jobs.survival.classical import RFM_COVARIATES, bgnbd_predictions, fit_lifelines_baseline
from churnops.jobs.survival.data import DURATION, EVENT
from churnops.jobs.survival.metrics import harrell_c_index


def rfm_customers(n: int, seed: int, follow_up: int = 90) -> pd.DataFrame:
    """RFM columns of customers who buy sooner the more often and the more recently they bought."""
    rng = np.random.default_rng(seed)
    active_days = rng.integers(1, 8, size=n).astype(float)
    tenure = rng.integers(60, 200, size=n).astype(float)
    recency = np.minimum(rng.integers(1, 200, size=n), tenure).astype(float)
    amount_mean = rng.gamma(2.0, 20.0, size=n)
    rate = 0.01 * active_days * np.exp(-recency / 60)
    times = np.ceil(rng.exponential(1 / rate))
    return pd.DataFrame(
        {
            "active_days_all": active_days,
            "days_since_last_event": recency,
            "days_since_first_event": tenure,
            "amount_mean_all": amount_mean,
            "amount_sum_all": amount_mean * active_days,
            "active_days_90d": np.minimum(active_days, np.where(recency <= 90, active_days, 0)),
            DURATION: np.minimum(times, follow_up).astype(int),
            EVENT: (times <= follow_up).astype(int),
        }
    )


@pytest.mark.parametrize("kind", ["cox", "weibull_aft"])
def test_lifelines_baselines_rank_frequent_recent_buyers_first_and_give_decreasing_curves(kind: str) -> None:
    train, test = rfm_customers(3000, seed=1), rfm_customers(1500, seed=2)
    model = fit_lifelines_baseline(train, kind)
    days = np.arange(1, 121)
    predicted = model.predict(test, days)
    assert predicted.survival.shape == (len(test), len(days))
    assert (np.diff(predicted.survival, axis=1) <= 1e-12).all()
    assert harrell_c_index(test[DURATION], test[EVENT], predicted.risk) > 0.65
    assert set(model.summary()) >= {c for c in RFM_COVARIATES if kind == "cox"}


def test_unknown_baseline_and_missing_rfm_columns_are_refused() -> None:
    frame = rfm_customers(50, seed=3)
    with pytest.raises(ValueError, match="unknown lifelines baseline"):
        fit_lifelines_baseline(frame, "gompertz")
    with pytest.raises(ValueError, match="amount_mean_all"):
        fit_lifelines_baseline(frame.drop(columns="amount_mean_all"), "cox")


def test_bgnbd_curve_is_its_probability_of_a_purchase_by_each_day() -> None:
    frame = rfm_customers(2000, seed=4)
    days = np.arange(1, 61)
    predicted, params = bgnbd_predictions(frame, days)
    assert set(params) == {"r", "alpha", "a", "b"}
    assert (np.diff(predicted.survival, axis=1) <= 1e-12).all()
    assert ((predicted.survival >= 0) & (predicted.survival <= 1)).all()
    assert (predicted.survival[:, -1] < 1).mean() > 0.5
    assert harrell_c_index(frame[DURATION], frame[EVENT], predicted.risk) > 0.6
