"""Pareto/NBD and Gamma-Gamma reproduce the published CDNOW fits and behave like the models they are."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from churnops.jobs.baselines import RFM
from churnops.jobs.value.btyd import (
    GammaGammaParams,
    ParetoNBDParams,
    fit_gamma_gamma,
    fit_pareto_nbd,
    gamma_gamma_expected_spend,
    gamma_gamma_log_likelihood,
    pareto_nbd_expected_purchases,
    pareto_nbd_log_likelihood,
    pareto_nbd_probability_alive,
)

# Fader, Hardie & Lee (2005, "RFM and CLV"), as reproduced by the R packages BTYD and CLVTools on the same
# 2,357-customer CDNOW sample (39-week calibration period, weeks): r 0.553, alpha 10.578, s 0.606, beta 11.669,
# log-likelihood -9595.0 (-9594.976 in CLVTools' tests).
PUBLISHED_PARETO_NBD = ParetoNBDParams(r=0.553, alpha=10.578, s=0.606, beta=11.669)
PUBLISHED_PARETO_NBD_LOG_LIKELIHOOD = -9594.976
# Fader & Hardie (2013, "The Gamma-Gamma model of monetary value") on the 946 repeat buyers of that sample:
# p 6.25, q 3.74, gamma 15.44; CLVTools' tests give the log-likelihood -4055.9177.
PUBLISHED_GAMMA_GAMMA = GammaGammaParams(p=6.25, q=3.74, gamma=15.44)
PUBLISHED_GAMMA_GAMMA_LOG_LIKELIHOOD = -4055.9177


def cdnow_sample_summary() -> pd.DataFrame:
    """(x, t_x, T, mean repeat spend zbar) of the CDNOW sample, shipped in the lifetimes wheel (read, not imported)."""
    path = importlib.metadata.distribution("lifetimes").locate_file(
        "lifetimes/datasets/cdnow_customers_summary_with_transactions.csv"
    )
    return pd.read_csv(Path(str(path)))


def summary_rfm(summary: pd.DataFrame) -> RFM:
    return RFM(
        frequency=summary["x"].to_numpy(float),
        recency=summary["t_x"].to_numpy(float),
        age=summary["T"].to_numpy(float),
    )


def test_pareto_nbd_fit_reproduces_the_published_cdnow_parameters_and_likelihood() -> None:
    rfm = summary_rfm(cdnow_sample_summary())
    assert len(rfm.frequency) == 2357
    fitted = fit_pareto_nbd(rfm)
    assert fitted.r == pytest.approx(PUBLISHED_PARETO_NBD.r, abs=0.002)
    assert fitted.alpha == pytest.approx(PUBLISHED_PARETO_NBD.alpha, abs=0.02)
    assert fitted.s == pytest.approx(PUBLISHED_PARETO_NBD.s, abs=0.002)
    # beta sits on a flat ridge (its published standard error is 6.2), so it is checked more loosely.
    assert fitted.beta == pytest.approx(PUBLISHED_PARETO_NBD.beta, abs=0.05)
    assert pareto_nbd_log_likelihood(fitted, rfm).sum() == pytest.approx(PUBLISHED_PARETO_NBD_LOG_LIKELIHOOD, abs=0.01)


def test_gamma_gamma_fit_reproduces_the_published_cdnow_parameters_and_likelihood() -> None:
    repeat = cdnow_sample_summary().query("x > 0")
    assert len(repeat) == 946
    x, zbar = repeat["x"].to_numpy(float), repeat["zbar"].to_numpy(float)
    fitted = fit_gamma_gamma(x, zbar)
    for name, published in PUBLISHED_GAMMA_GAMMA.as_dict().items():
        assert getattr(fitted, name) == pytest.approx(published, abs=0.01), name
    assert gamma_gamma_log_likelihood(fitted, x, zbar).sum() == pytest.approx(
        PUBLISHED_GAMMA_GAMMA_LOG_LIKELIHOOD, abs=0.01
    )


def test_pareto_nbd_conditional_forecast_matches_the_published_worked_example() -> None:
    """BTYD's vignette: with its fitted parameters, customer 1516 (x = 26, t_x = 30.86, T = 31) is expected to make
    25.46 purchases in the next 52 weeks and is alive with probability 0.9979 (both as printed, rounded)."""
    params = ParetoNBDParams(r=0.5533971, alpha=10.5801985, s=0.6060625, beta=11.6562237)
    customer = RFM(frequency=np.array([26.0]), recency=np.array([30.86]), age=np.array([31.0]))
    assert round(pareto_nbd_expected_purchases(params, customer, 52.0)[0], 2) == 25.46
    assert round(pareto_nbd_probability_alive(params, customer)[0], 4) == 0.9979


def test_a_customer_who_just_bought_is_alive_and_one_long_silent_is_probably_not() -> None:
    customers = RFM(frequency=np.array([5.0, 5.0]), recency=np.array([30.0, 4.0]), age=np.array([30.0, 30.0]))
    alive = pareto_nbd_probability_alive(PUBLISHED_PARETO_NBD, customers)
    assert alive[0] == pytest.approx(1.0)
    assert alive[1] < 0.2
    expected = pareto_nbd_expected_purchases(PUBLISHED_PARETO_NBD, customers, 39.0)
    assert expected[0] > 5 * expected[1]


def test_likelihood_is_the_same_on_either_side_of_alpha_equals_beta() -> None:
    """The closed form switches hypergeometric series at alpha = beta; both branches must agree there."""
    rfm = RFM(frequency=np.array([0.0, 3.0, 40.0]), recency=np.array([0.0, 12.0, 30.0]), age=np.array([38.0] * 3))
    below = pareto_nbd_log_likelihood(ParetoNBDParams(0.6, 10.0 - 1e-7, 0.7, 10.0), rfm)
    above = pareto_nbd_log_likelihood(ParetoNBDParams(0.6, 10.0 + 1e-7, 0.7, 10.0), rfm)
    assert below == pytest.approx(above, abs=1e-5)
    assert np.isfinite(below).all()


def test_expected_purchases_are_continuous_at_dropout_shape_one() -> None:
    """(1 - ((beta+T)/(beta+T+t))^(s-1)) / (s-1) tends to a logarithm at s = 1; no jump or division by zero."""
    rfm = RFM(frequency=np.array([2.0]), recency=np.array([20.0]), age=np.array([30.0]))
    at_one = pareto_nbd_expected_purchases(ParetoNBDParams(0.5, 10.0, 1.0, 12.0), rfm, 39.0)[0]
    near_one = pareto_nbd_expected_purchases(ParetoNBDParams(0.5, 10.0, 1.0 + 1e-6, 12.0), rfm, 39.0)[0]
    assert np.isfinite(at_one)
    assert at_one == pytest.approx(near_one, rel=1e-5)


def simulate_pareto_nbd(params: ParetoNBDParams, n: int, age: float, rng: np.random.Generator) -> RFM:
    """Customers drawn from the Pareto/NBD story: Poisson purchases at rate lambda until an exponential death."""
    rate = rng.gamma(params.r, 1 / params.alpha, n)
    death = rng.exponential(1 / rng.gamma(params.s, 1 / params.beta, n))
    frequency, recency = np.zeros(n), np.zeros(n)
    for i in range(n):
        end = min(death[i], age)
        times = np.cumsum(rng.exponential(1 / rate[i], size=int(rate[i] * end * 3) + 20))
        times = times[times <= end]
        frequency[i] = len(times)
        recency[i] = times[-1] if len(times) else 0.0
    return RFM(frequency=frequency, recency=recency, age=np.full(n, age))


def test_fit_recovers_the_parameters_customers_were_simulated_with() -> None:
    truth = ParetoNBDParams(r=0.8, alpha=8.0, s=0.7, beta=12.0)
    fitted = fit_pareto_nbd(simulate_pareto_nbd(truth, 4000, age=52.0, rng=np.random.default_rng(5)))
    assert fitted.r / fitted.alpha == pytest.approx(truth.r / truth.alpha, rel=0.1)  # mean purchase rate
    assert fitted.r == pytest.approx(truth.r, rel=0.25)
    assert fitted.s / fitted.beta == pytest.approx(truth.s / truth.beta, rel=0.35)  # mean dropout rate


def test_gamma_gamma_spend_is_the_published_weighted_average_of_own_and_population_mean() -> None:
    """E[M | x, m] = (q - 1) / (p x + q - 1) * p gamma / (q - 1) + p x / (p x + q - 1) * m (Fader & Hardie 2013)."""
    params = GammaGammaParams(p=6.0, q=4.0, gamma=15.0)
    spend = gamma_gamma_expected_spend(params, np.array([0.0, 1.0, 10.0]), np.array([0.0, 50.0, 50.0]))
    population = 6.0 * 15.0 / 3.0  # 30
    assert spend[0] == pytest.approx(population)
    assert spend[1] == pytest.approx(3 / 9 * population + 6 / 9 * 50.0)
    assert spend[2] == pytest.approx(3 / 63 * population + 60 / 63 * 50.0)
    assert params.population_mean_spend == pytest.approx(population)


def test_gamma_gamma_refuses_customers_without_a_repeat_purchase_or_a_positive_mean() -> None:
    with pytest.raises(ValueError, match="repeat buyers only"):
        fit_gamma_gamma(np.array([0.0, 2.0]), np.array([10.0, 20.0]))
    with pytest.raises(ValueError, match="repeat buyers only"):
        fit_gamma_gamma(np.array([1.0, 2.0]), np.array([0.0, 20.0]))
    with pytest.raises(ValueError, match="mean_spend has 1"):
        fit_gamma_gamma(np.array([1.0, 2.0]), np.array([10.0]))
