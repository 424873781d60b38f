"""Baselines every training run reports next to the model: a naive recency rule and BG/NBD.

They answer "how much does the ML model add?". Both read only the snapshot's RFM columns, so they score exactly
the customers and cutoffs the model is evaluated on:

- **Recency rule**: the label rate as a logistic function of log(1 + days since the last event), fitted on the
  training cutoffs. A monotone map of recency alone, so its ROC AUC is that of recency itself, but it also gives
  probabilities that log loss and Brier can judge.
- **BG/NBD** (Fader, Hardie & Lee 2005, "Counting your customers the easy way"): the classical buy-till-you-die
  model, fitted by maximum likelihood on (frequency, recency, T) as of the evaluated cutoff. It uses no label, only
  the purchase history before the cutoff, so fitting it on the evaluation cutoff's own history is not a leak. The
  score is the model's exact probability of at least one event in the label horizon (or its complement for a churn
  label); `bgnbd_expected_purchases` ranks by the expected number of events instead. Checked against the
  published CDNOW parameters in `tests/training/test_bgnbd.py`.

`lifetimes` is deliberately not used: it is unmaintained, and the likelihood is a dozen lines of scipy.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import optimize, special

from churnops import postprocess
from churnops.dataset import DatasetContract
from churnops.features import LABEL

# Snapshot columns the baselines read (declared in churnops.features): RFM as of each cutoff.
ACTIVE_DAYS_COLUMN, TENURE_COLUMN, RECENCY_COLUMN = postprocess.BGNBD_INPUT_COLUMNS
DAYS_PER_PERIOD = postprocess.BGNBD_DAYS_PER_PERIOD  # weeks, the unit of the published CDNOW parameters


@dataclass(frozen=True)
class BGNBDParams:
    """BG/NBD parameters: purchase rate ~ Gamma(r, alpha), dropout probability ~ Beta(a, b); time in weeks."""

    r: float
    alpha: float
    a: float
    b: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass(frozen=True)
class RFM:
    """Per customer: repeat-purchase count x, time of the last purchase t_x and age T (weeks since first purchase)."""

    frequency: np.ndarray
    recency: np.ndarray
    age: np.ndarray


def rfm_from_features(frame: pd.DataFrame) -> RFM:
    """BG/NBD inputs from a snapshot's RFM features.

    A customer's purchase *days* count as transactions (several orders on one day are one), as in the published
    CDNOW summaries; x = active days - 1 repeat purchases; t_x = time from the first to the last purchase day;
    T = time from the first purchase day to the cutoff.
    """
    columns = [frame[c].to_numpy(dtype=float) for c in (ACTIVE_DAYS_COLUMN, TENURE_COLUMN, RECENCY_COLUMN)]
    if any(np.isnan(c).any() for c in columns):
        raise ValueError("BG/NBD needs every customer to have at least one event before the cutoff")
    frequency, recency, age = postprocess.bgnbd_inputs_from_days(*columns)
    return RFM(frequency=frequency, recency=recency, age=age)


def bgnbd_log_likelihood(params: BGNBDParams, rfm: RFM) -> np.ndarray:
    """Each customer's log-likelihood of (x, t_x, T) under BG/NBD (equation 6 of Fader, Hardie & Lee 2005)."""
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    x, t_x, age = rfm.frequency, rfm.recency, rfm.age
    rate_part = special.gammaln(r + x) - special.gammaln(r) + r * np.log(alpha)
    dropout_part = special.betaln(a, b + x) - special.betaln(a, b)
    still_alive = -(r + x) * np.log(alpha + age)
    # Dropped out right after the last purchase; only possible for customers with a repeat purchase.
    with np.errstate(divide="ignore"):
        dropped = np.where(
            x > 0, np.log(a) - np.log(np.maximum(b + x - 1, 1e-300)) - (r + x) * np.log(alpha + t_x), -np.inf
        )
    return rate_part + dropout_part + np.logaddexp(still_alive, dropped)


def fit_bgnbd(rfm: RFM) -> BGNBDParams:
    """Maximum-likelihood BG/NBD parameters (optimised on the log scale, so they stay positive).

    Customers with the same (x, t_x, T) share one likelihood term weighted by their count: event data measured in
    days repeats those triples a lot, which makes a fit on 20k+ customers take well under a second.
    """
    distinct, counts = distinct_triples(rfm)
    return fit_bgnbd_on_triples(distinct, counts, float(np.mean(rfm.age)))


def distinct_triples(rfm: RFM) -> tuple[RFM, np.ndarray]:
    """The distinct (x, t_x, T) of `rfm`, sorted, and how many customers have each: what BG/NBD and Pareto/NBD
    likelihoods read of a population."""
    triples = np.column_stack([rfm.frequency, rfm.recency, rfm.age])
    unique, counts = np.unique(triples, axis=0, return_counts=True)
    return RFM(frequency=unique[:, 0], recency=unique[:, 1], age=unique[:, 2]), counts


def fit_bgnbd_on_triples(distinct: RFM, counts: np.ndarray, mean_age: float) -> BGNBDParams:
    """`fit_bgnbd` from the distinct triples, their counts and the customers' mean T (where the search starts), so
    that a population summarised batch by batch (Spark) fits as the whole frame does."""

    def negative_log_likelihood(log_params: np.ndarray) -> float:
        params = BGNBDParams(*np.exp(log_params))
        return -float(np.dot(counts, bgnbd_log_likelihood(params, distinct)))

    start = np.log([1.0, max(mean_age, 1.0), 1.0, 1.0])
    coarse = optimize.minimize(negative_log_likelihood, start, method="Nelder-Mead", options={"maxiter": 2000})
    # Polish with a gradient method from the simplex optimum: Nelder-Mead alone stops a little short on flat ridges.
    polished = optimize.minimize(negative_log_likelihood, coarse.x, method="L-BFGS-B")
    best = polished if polished.fun <= coarse.fun else coarse
    if not np.isfinite(best.fun):
        raise ValueError("BG/NBD fit failed: the likelihood is not finite at the optimum")
    return BGNBDParams(*(float(v) for v in np.exp(best.x)))


def bgnbd_purchase_probability(params: BGNBDParams, rfm: RFM, horizon_days: float) -> np.ndarray:
    """P(at least one purchase in (T, T + horizon] | history); the formula a served blend also evaluates."""
    return postprocess.bgnbd_purchase_probability(
        params.as_dict(), rfm.frequency, rfm.recency, rfm.age, horizon_days / DAYS_PER_PERIOD
    )


def bgnbd_expected_purchases(params: BGNBDParams, rfm: RFM, horizon_days: float) -> np.ndarray:
    """E[number of purchases in (T, T + horizon] | history] (equation 10 of Fader, Hardie & Lee 2005)."""
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    x, t_x, age = rfm.frequency, rfm.recency, rfm.age
    t = horizon_days / DAYS_PER_PERIOD
    z = t / (alpha + age + t)
    hyper = special.hyp2f1(r + x, b + x, a + b + x - 1, z)
    numerator = (a + b + x - 1) / (a - 1) * (1 - ((alpha + age) / (alpha + age + t)) ** (r + x) * hyper)
    denominator = 1 + np.where(
        x > 0, a / np.maximum(b + x - 1, 1e-300) * ((alpha + age) / (alpha + t_x)) ** (r + x), 0.0
    )
    return numerator / denominator


@dataclass(frozen=True)
class RecencyRule:
    """P(label) = sigmoid(intercept + slope * log(1 + days since last event)), fitted on training rows."""

    intercept: float
    slope: float

    @classmethod
    def fit(cls, frame: pd.DataFrame) -> RecencyRule:
        from sklearn.linear_model import LogisticRegression

        x = np.log1p(frame[[RECENCY_COLUMN]].to_numpy(dtype=float))
        model = LogisticRegression(C=1e6, max_iter=1000).fit(x, frame[LABEL].to_numpy(dtype=int))
        return cls(intercept=float(model.intercept_[0]), slope=float(model.coef_[0, 0]))

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        z = self.intercept + self.slope * np.log1p(frame[RECENCY_COLUMN].to_numpy(dtype=float))
        return special.expit(z)


@dataclass(frozen=True)
class BaselineScores:
    """Scores of every baseline on one evaluated frame (same row order), and how each was fitted."""

    scores: dict[str, np.ndarray]
    details: dict[str, dict[str, Any]]


def has_rfm(frame: pd.DataFrame) -> bool:
    """Event data has the RFM columns the baselines need; entity-level data (no event log) does not."""
    return all(c in frame.columns for c in (RECENCY_COLUMN, TENURE_COLUMN, ACTIVE_DAYS_COLUMN))


def score_baselines(
    train: pd.DataFrame,
    evaluated: pd.DataFrame,
    contract: DatasetContract,
    bgnbd_params: dict[str, float] | None = None,
) -> BaselineScores:
    """Fit the recency rule on the training rows and BG/NBD on the evaluated cutoff's history; score `evaluated`.

    `bgnbd_params` skips the BG/NBD fit when the caller already fitted it on the same rows.
    Scores are oriented to the label: for a churn label, BG/NBD's score is P(no event in the horizon).
    Returns no baselines for entity-level data, which has no event history.
    """
    if not has_rfm(evaluated) or contract.label.horizon_days is None:
        return BaselineScores(scores={}, details={})
    rule = RecencyRule.fit(train)
    rfm = rfm_from_features(evaluated)
    params = BGNBDParams(**bgnbd_params) if bgnbd_params else fit_bgnbd(rfm)
    churn = contract.label.kind == "churn"
    buys = bgnbd_purchase_probability(params, rfm, contract.label.horizon_days)
    # The expected count ranks customers a little differently from P(>=1); 1 - exp(-E) keeps that ranking and
    # makes it a probability (as if purchases were Poisson) so log loss and Brier apply.
    expected = bgnbd_expected_purchases(params, rfm, contract.label.horizon_days)
    return BaselineScores(
        scores={
            "recency_rule": rule.predict(evaluated),
            "bgnbd": 1.0 - buys if churn else buys,
            "bgnbd_expected_purchases": np.exp(-expected) if churn else 1.0 - np.exp(-expected),
        },
        details={
            "recency_rule": {"intercept": rule.intercept, "slope": rule.slope, "fitted_on": "training cutoffs"},
            "bgnbd": {
                **params.as_dict(),
                "time_unit_days": DAYS_PER_PERIOD,
                "fitted_on": "purchase history before the evaluated cutoff (no labels)",
                "score": "P(no event in horizon)" if churn else "P(>=1 event in horizon)",
            },
        },
    )
