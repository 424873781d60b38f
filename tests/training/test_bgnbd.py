"""BG/NBD, the buy-till-you-die baseline, reproduces the published CDNOW fit and behaves like the model it is."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from churnops.jobs.baselines import (
    RFM,
    BGNBDParams,
    bgnbd_expected_purchases,
    bgnbd_log_likelihood,
    bgnbd_purchase_probability,
    fit_bgnbd,
    rfm_from_features,
)
from churnops.postprocess import ScorePostprocess

# Fader, Hardie & Lee (2005), table/figure for the 2,357-customer CDNOW sample, 39-week calibration period.
PUBLISHED = BGNBDParams(r=0.243, alpha=4.414, a=0.793, b=2.426)
PUBLISHED_LOG_LIKELIHOOD = -9582.4


def cdnow_calibration_summary() -> RFM:
    """The published (x, t_x, T) summary of the CDNOW sample, shipped in the lifetimes wheel (read, not imported)."""
    path = Path(
        str(importlib.metadata.distribution("lifetimes").locate_file("lifetimes/datasets/cdnow_customers_summary.csv"))
    )
    summary = pd.read_csv(path)
    return RFM(
        frequency=summary["frequency"].to_numpy(float),
        recency=summary["recency"].to_numpy(float),
        age=summary["T"].to_numpy(float),
    )


def test_fit_reproduces_the_published_cdnow_parameters_and_likelihood() -> None:
    rfm = cdnow_calibration_summary()
    assert len(rfm.frequency) == 2357
    fitted = fit_bgnbd(rfm)
    for name, published in PUBLISHED.as_dict().items():
        assert getattr(fitted, name) == pytest.approx(published, abs=0.002), name
    assert bgnbd_log_likelihood(fitted, rfm).sum() == pytest.approx(PUBLISHED_LOG_LIKELIHOOD, abs=0.05)


def simulate_bgnbd(params: BGNBDParams, n: int, age: float, rng: np.random.Generator) -> RFM:
    """Draw customers from the BG/NBD story: Poisson purchases at rate lambda, dropout after each with prob p."""
    rate = rng.gamma(params.r, 1 / params.alpha, n)
    dropout = rng.beta(params.a, params.b, n)
    frequency, recency = np.zeros(n), np.zeros(n)
    for i in range(n):
        t = 0.0
        while True:
            t += rng.exponential(1 / rate[i])
            if t > age:
                break
            frequency[i] += 1
            recency[i] = t
            if rng.random() < dropout[i]:
                break
    return RFM(frequency=frequency, recency=recency, age=np.full(n, age))


def test_fit_recovers_the_parameters_customers_were_simulated_with() -> None:
    truth = BGNBDParams(r=0.5, alpha=3.0, a=0.8, b=2.5)
    fitted = fit_bgnbd(simulate_bgnbd(truth, 4000, age=52.0, rng=np.random.default_rng(7)))
    assert fitted.r == pytest.approx(truth.r, rel=0.15)
    assert fitted.alpha == pytest.approx(truth.alpha, rel=0.25)
    assert fitted.a / (fitted.a + fitted.b) == pytest.approx(truth.a / (truth.a + truth.b), rel=0.2)


def test_purchase_probability_falls_with_time_since_the_last_purchase_and_matches_simulation() -> None:
    """A customer whose repeat purchases stopped long ago is less likely to buy; the closed form agrees with a
    Monte-Carlo draw of the same customer's future under the posterior."""
    params = PUBLISHED
    recent = RFM(frequency=np.array([3.0]), recency=np.array([37.0]), age=np.array([39.0]))
    lapsed = RFM(frequency=np.array([3.0]), recency=np.array([5.0]), age=np.array([39.0]))
    p_recent = bgnbd_purchase_probability(params, recent, horizon_days=91)[0]
    p_lapsed = bgnbd_purchase_probability(params, lapsed, horizon_days=91)[0]
    assert 0 < p_lapsed < p_recent < 1
    # Monte Carlo by rejection for a customer with no repeat purchase in 39 weeks (alive for sure: BG/NBD drops
    # customers only after a purchase): draw rates from the prior, keep those who waited > 39 weeks, count a
    # purchase in the next 13.
    rng = np.random.default_rng(1)
    rate = rng.gamma(params.r, 1 / params.alpha, 400_000)
    never = RFM(frequency=np.array([0.0]), recency=np.array([0.0]), age=np.array([39.0]))
    first_gap = rng.exponential(1 / rate)
    kept = first_gap > 39  # no repeat purchase in the first 39 weeks (memoryless: a fresh wait starts at 39)
    next_gap = rng.exponential(1 / rate[kept])
    monte_carlo = float(np.mean(next_gap <= 13))
    assert bgnbd_purchase_probability(params, never, horizon_days=91)[0] == pytest.approx(monte_carlo, abs=0.004)


def test_expected_purchases_grow_with_frequency() -> None:
    rfm = RFM(frequency=np.array([1.0, 4.0, 8.0]), recency=np.array([30.0] * 3), age=np.array([39.0] * 3))
    expected = bgnbd_expected_purchases(PUBLISHED, rfm, horizon_days=39 * 7)
    assert np.all(np.diff(expected) > 0)


def test_rfm_from_features_counts_purchase_days_and_measures_weeks() -> None:
    frame = pd.DataFrame(
        {"active_days_all": [1.0, 4.0], "days_since_first_event": [70.0, 140.0], "days_since_last_event": [70.0, 14.0]}
    )
    rfm = rfm_from_features(frame)
    assert rfm.frequency.tolist() == [0.0, 3.0]
    assert rfm.recency.tolist() == [0.0, 18.0]
    assert rfm.age.tolist() == [10.0, 20.0]


def test_served_blend_evaluates_bgnbd_from_the_encoded_row_like_the_baseline() -> None:
    """The served post-processing computes the same BG/NBD probability from the model's input columns."""
    columns = ["amount_sum_all", "active_days_all", "days_since_first_event", "days_since_last_event"]
    frame = pd.DataFrame(
        {
            "amount_sum_all": [10.0, 50.0],
            "active_days_all": [1.0, 4.0],
            "days_since_first_event": [70.0, 140.0],
            "days_since_last_event": [70.0, 14.0],
        }
    )
    post = ScorePostprocess.from_metadata(
        {"blend": {"weight": 1.0, "bgnbd": PUBLISHED.as_dict(), "horizon_days": 90, "label": "propensity"}}, columns
    )
    matrix = frame[columns].to_numpy(float)
    served = post.apply(np.zeros(2), matrix)
    assert served == pytest.approx(bgnbd_purchase_probability(PUBLISHED, rfm_from_features(frame), 90))
    # A row without history keeps the booster's own score instead of becoming NaN.
    matrix[0, 1:] = np.nan
    assert post.apply(np.array([0.3, 0.3]), matrix)[0] == 0.3
