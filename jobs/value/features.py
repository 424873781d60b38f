"""The value model's inputs at one cutoff: purchase history, BTYD fits and their horizon-free outputs.

At every cutoff the three BTYD models are fitted on the purchase history before it (no label is read, so fitting on
the evaluated cutoff's own history is not a leak) and give the model what it cannot learn from a few cutoffs:

- horizon-free features — P(alive) under Pareto/NBD and BG/NBD, the posterior purchase rate per week, the
  Gamma-Gamma spend per purchase and their product, the current value rate — which mean the same thing whatever
  window the target covers, so a model trained on short windows can be applied to a longer horizon;
- the Pareto/NBD x Gamma-Gamma value over the target's own window, which the model corrects multiplicatively
  (`churnops.jobs.value.model` uses its log as the LightGBM offset): the extrapolation from a short training window to a
  long horizon is the BTYD model's, the correction is learned.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from churnops.bronze import AMOUNT, EVENT_DAY
from churnops.features import ENTITY_ID
from churnops.jobs.baselines import (
    DAYS_PER_PERIOD,
    RFM,
    BGNBDParams,
    bgnbd_expected_purchases,
    distinct_triples,
    fit_bgnbd_on_triples,
)
from churnops.jobs.value.btyd import (
    GammaGammaParams,
    ParetoNBDParams,
    fit_gamma_gamma_by,
    fit_pareto_nbd_on_triples,
    gamma_gamma_expected_spend,
    gamma_gamma_log_likelihood,
    pareto_nbd_expected_purchases,
    pareto_nbd_probability_alive,
)
from churnops.jobs.value.exact_sum import exact_sum
from churnops.jobs.value.history import (
    AGE_WEEKS,
    AMOUNT_TOTAL,
    FREQUENCY,
    HISTORY_COLUMNS,
    PURCHASE_DAYS,
    REPEAT_MEAN_SPEND,
    history_rfm,
    purchase_days,
    purchase_history,
)

# Smallest BTYD value used as an offset: a log of 0 would make the offset, and so the prediction, -inf.
MIN_OFFSET_VALUE = 1e-6
RECENT_PURCHASES = 3  # amounts and gaps of the last three purchase days are features
EARLY_LIFE_DAYS = (28, 84)  # purchase days and spend in the customer's first 4 and 12 weeks

BTYD_FEATURES = (
    "pareto_nbd_p_alive",
    "pareto_nbd_rate_per_week",
    "bgnbd_p_alive",
    "gamma_gamma_spend",
    "gamma_gamma_spend_all",
    "btyd_value_per_week",
)
RECENT_PURCHASE_FEATURES = (
    *(f"amount_purchase_day_last_{k}" for k in range(1, RECENT_PURCHASES + 1)),
    *(f"gap_days_before_purchase_day_last_{k}" for k in range(1, RECENT_PURCHASES + 1)),
    "days_first_to_second_purchase",
    *(f"purchase_days_first_{d}d" for d in EARLY_LIFE_DAYS),
    *(f"amount_first_{d}d" for d in EARLY_LIFE_DAYS),
)
# The value model's own inputs (the catalog features of `churnops.features` may be added next to them).
VALUE_FEATURES = (*(c for c in HISTORY_COLUMNS if c != PURCHASE_DAYS), *BTYD_FEATURES, *RECENT_PURCHASE_FEATURES)


SpendBasis = Literal["repeat", "all"]
SPEND_BASES: tuple[SpendBasis, ...] = ("repeat", "all")


@dataclass(frozen=True)
class BTYDFit:
    """The BTYD models fitted on the purchase history before one cutoff (no labels).

    Gamma-Gamma is fitted on two bases. `repeat` is the published one (Fader, Hardie & Lee 2005): each repeat
    buyer's mean spend over their repeat purchase days, the first purchase left out, one-time buyers given the
    population mean. `all` counts every purchase day, the first included, so one-time buyers keep their own first
    spend as evidence; which one the value model's offset uses is chosen on the time folds.
    """

    pareto_nbd: ParetoNBDParams
    bgnbd: BGNBDParams
    gamma_gamma: GammaGammaParams
    gamma_gamma_all: GammaGammaParams

    def as_dict(self) -> dict[str, dict[str, float]]:
        return {
            "pareto_nbd": self.pareto_nbd.as_dict(),
            "bgnbd": self.bgnbd.as_dict(),
            "gamma_gamma": self.gamma_gamma.as_dict(),
            "gamma_gamma_all": self.gamma_gamma_all.as_dict(),
        }


def _spend_inputs(history: pd.DataFrame, basis: SpendBasis) -> tuple[np.ndarray, np.ndarray]:
    """(number of purchase days the mean rests on, mean spend per purchase day) on a Gamma-Gamma basis."""
    if basis == "repeat":
        count = history[FREQUENCY].to_numpy(float)
        mean = history[REPEAT_MEAN_SPEND].fillna(0.0).clip(lower=0.0).to_numpy(float)
    elif basis == "all":
        count = history[PURCHASE_DAYS].to_numpy(float)
        mean = (history[AMOUNT_TOTAL] / history[PURCHASE_DAYS]).clip(lower=0.0).to_numpy(float)
    else:
        raise ValueError(f"unknown Gamma-Gamma spend basis {basis!r}; use one of {SPEND_BASES}")
    return count, mean


def usable_spend(history: pd.DataFrame, basis: SpendBasis) -> tuple[np.ndarray, np.ndarray]:
    """The (count, mean spend) of the customers Gamma-Gamma is fitted on: the model's spend is positive, so $0
    means are left out."""
    count, mean = _spend_inputs(history, basis)
    usable = (count > 0) & (mean > 0)
    return count[usable], mean[usable]


@dataclass(frozen=True)
class SpendLikelihood:
    """What a Gamma-Gamma fit reads of its buyers: their total log-likelihood as a function of the parameters
    (summed exactly, so one number however the buyers are split), their median mean spend and their count.

    `fitted`: the fit already made where the buyers are (Spark fits them on one executor, with this module's
    `spend_likelihood` and the same search: the same parameters, without one Spark job per evaluation of the
    optimizer); `total` is then None."""

    total: Callable[[GammaGammaParams], float] | None
    median_spend: float
    buyers: int
    fitted: GammaGammaParams | None = None


@dataclass(frozen=True)
class BTYDPopulation:
    """Everything the BTYD fits read of a population's histories: the distinct (x, t_x, T), their counts and the
    mean T for Pareto/NBD and BG/NBD, and the spend likelihood per Gamma-Gamma basis. Built from one frame here
    (`population_of`), or from many batches by Spark (`churnops.jobs.score_spark_value`): the same numbers, so
    the same fit."""

    triples: RFM
    counts: np.ndarray
    mean_age: float
    spend: Mapping[SpendBasis, SpendLikelihood]


def spend_likelihood(count: np.ndarray, mean: np.ndarray) -> Callable[[GammaGammaParams], float]:
    """The total Gamma-Gamma log-likelihood of these buyers (`usable_spend`), summed exactly."""
    return lambda params: exact_sum(gamma_gamma_log_likelihood(params, count, mean))


def population_of(history: pd.DataFrame) -> BTYDPopulation:
    """The BTYD population of a `purchase_history` frame."""
    rfm = history_rfm(history)
    triples, counts = distinct_triples(rfm)
    spend = {}
    for basis in SPEND_BASES:
        count, mean = usable_spend(history, basis)
        median = float(np.median(mean)) if len(mean) else float("nan")
        spend[basis] = SpendLikelihood(spend_likelihood(count, mean), median, len(mean))
    return BTYDPopulation(triples, counts, exact_sum(rfm.age) / len(rfm.age), spend)


def fit_btyd(history: pd.DataFrame) -> BTYDFit:
    """Fit Pareto/NBD and BG/NBD on every customer's (x, t_x, T) and Gamma-Gamma on both spend bases."""
    return fit_btyd_on(population_of(history))


def fit_btyd_on(population: BTYDPopulation) -> BTYDFit:
    """`fit_btyd` from a population's summary (`BTYDPopulation`)."""
    with np.errstate(all="ignore"):  # BG/NBD's search visits parameters where its likelihood overflows
        bgnbd = fit_bgnbd_on_triples(population.triples, population.counts, population.mean_age)
    return BTYDFit(
        pareto_nbd=fit_pareto_nbd_on_triples(population.triples, population.counts, population.mean_age),
        bgnbd=bgnbd,
        gamma_gamma=_fit_spend(population.spend["repeat"], "repeat"),
        gamma_gamma_all=_fit_spend(population.spend["all"], "all"),
    )


def _fit_spend(spend: SpendLikelihood, basis: SpendBasis) -> GammaGammaParams:
    if spend.buyers == 0:
        raise ValueError(f"Gamma-Gamma ({basis} purchases) needs a customer with a positive spend before the cutoff")
    if spend.fitted is not None:
        return spend.fitted
    assert spend.total is not None, "a spend likelihood without a fit has its total"
    return fit_gamma_gamma_by(spend.total, spend.median_spend)


def expected_spend(fit: BTYDFit, history: pd.DataFrame, basis: SpendBasis = "repeat") -> np.ndarray:
    """Gamma-Gamma spend per future purchase day on the given basis."""
    params = fit.gamma_gamma if basis == "repeat" else fit.gamma_gamma_all
    return gamma_gamma_expected_spend(params, *_spend_inputs(history, basis))


def btyd_values(fit: BTYDFit, history: pd.DataFrame, horizon_days: float) -> dict[str, np.ndarray]:
    """Expected spend in the next `horizon_days`: Pareto/NBD and BG/NBD x the published Gamma-Gamma, and
    Pareto/NBD x Gamma-Gamma on all purchase days."""
    rfm = history_rfm(history)
    pareto = pareto_nbd_expected_purchases(fit.pareto_nbd, rfm, horizon_days / DAYS_PER_PERIOD)
    spend = expected_spend(fit, history, "repeat")
    return {
        "pareto_nbd_gamma_gamma": pareto * spend,
        "bgnbd_gamma_gamma": bgnbd_expected_purchases(fit.bgnbd, rfm, horizon_days) * spend,
        "pareto_nbd_gamma_gamma_all": pareto * expected_spend(fit, history, "all"),
    }


def past_spend_rate_value(history: pd.DataFrame, horizon_days: float) -> np.ndarray:
    """The naive forecast: spend so far per day since the first purchase (at least one day), times the horizon."""
    days_known = np.maximum(history[AGE_WEEKS].to_numpy(float) * DAYS_PER_PERIOD, 1.0)
    return history[AMOUNT_TOTAL].to_numpy(float) / days_known * horizon_days


def baseline_values(inputs: CutoffInputs, horizon_days: float) -> dict[str, np.ndarray]:
    """Every value baseline at one cutoff over the horizon: the BTYD x Gamma-Gamma forecasts and the naive
    past-spend rate (same customer order as `inputs.history`)."""
    return {
        **btyd_values(inputs.fit, inputs.history, horizon_days),
        "past_spend_rate": past_spend_rate_value(inputs.history, horizon_days),
    }


def log_offset(fit: BTYDFit, history: pd.DataFrame, horizon_days: float, basis: SpendBasis = "repeat") -> np.ndarray:
    """log of the Pareto/NBD x Gamma-Gamma value over the horizon (spend on `basis`): the value model's offset."""
    rfm = history_rfm(history)
    purchases = pareto_nbd_expected_purchases(fit.pareto_nbd, rfm, horizon_days / DAYS_PER_PERIOD)
    return np.log(np.maximum(purchases * expected_spend(fit, history, basis), MIN_OFFSET_VALUE))


def btyd_features(fit: BTYDFit, history: pd.DataFrame) -> pd.DataFrame:
    """Horizon-free BTYD outputs per customer (same index as `history`)."""
    rfm = history_rfm(history)
    pnbd, bg = fit.pareto_nbd, fit.bgnbd
    alive = pareto_nbd_probability_alive(pnbd, rfm)
    rate = (pnbd.r + rfm.frequency) / (pnbd.alpha + rfm.age)  # E[purchases per week | alive]
    x = rfm.frequency
    with np.errstate(divide="ignore", over="ignore"):
        odds_dead = np.where(
            x > 0,
            bg.a / np.maximum(bg.b + x - 1, 1e-300) * ((bg.alpha + rfm.age) / (bg.alpha + rfm.recency)) ** (bg.r + x),
            0.0,
        )
    spend = expected_spend(fit, history, "repeat")
    return pd.DataFrame(
        {
            "pareto_nbd_p_alive": alive,
            "pareto_nbd_rate_per_week": rate,
            "bgnbd_p_alive": 1.0 / (1.0 + odds_dead),
            "gamma_gamma_spend": spend,
            "gamma_gamma_spend_all": expected_spend(fit, history, "all"),
            "btyd_value_per_week": alive * rate * spend,
        },
        index=history.index,
    )


def recent_purchase_features(events: pd.DataFrame, cutoff: dt.date | pd.Timestamp) -> pd.DataFrame:
    """Amounts and gaps (days) of the last purchase days, days from the first to the second purchase, and the
    purchase days and spend in the customer's first weeks; NaN where a customer has too few purchases."""
    daily = purchase_days(events, cutoff)
    grouped = daily.groupby(ENTITY_ID, sort=True)
    daily = daily.assign(
        from_end=grouped.cumcount(ascending=False),
        from_start=grouped.cumcount(),
        gap=grouped[EVENT_DAY].diff().dt.days.astype(float),
        life=(daily[EVENT_DAY] - grouped[EVENT_DAY].transform("min")).dt.days,
    )
    customers = grouped.size().index
    out = pd.DataFrame(index=customers)
    for k in range(1, RECENT_PURCHASES + 1):
        last = daily[daily["from_end"] == k - 1].set_index(ENTITY_ID)
        out[f"amount_purchase_day_last_{k}"] = last[AMOUNT]
        out[f"gap_days_before_purchase_day_last_{k}"] = last["gap"]
    out["days_first_to_second_purchase"] = daily[daily["from_start"] == 1].set_index(ENTITY_ID)["gap"]
    for days in EARLY_LIFE_DAYS:
        early = daily[daily["life"] < days].groupby(ENTITY_ID)
        out[f"purchase_days_first_{days}d"] = early.size().reindex(customers, fill_value=0).astype(float)
        out[f"amount_first_{days}d"] = early[AMOUNT].sum().reindex(customers, fill_value=0.0)
    return out[list(RECENT_PURCHASE_FEATURES)]


@dataclass(frozen=True)
class CutoffInputs:
    """Everything the value model and the baselines read at one cutoff, for the customers seen before it."""

    cutoff: pd.Timestamp
    history: pd.DataFrame  # `purchase_history`, indexed by customer id
    fit: BTYDFit
    features: pd.DataFrame  # model inputs, same index as `history`


def cutoff_inputs(
    events: pd.DataFrame, cutoff: dt.date | pd.Timestamp, catalog: pd.DataFrame | None = None
) -> CutoffInputs:
    """History, BTYD fit and model features at `cutoff` from the events strictly before it.

    `catalog` optionally adds the platform's catalog features (`churnops.features`) at this cutoff, one row per
    customer indexed by customer id (a snapshot's rows for the cutoff); customers it lacks get NaN.
    """
    summaries = customer_summaries(events, cutoff)
    fit = fit_btyd(summaries[list(HISTORY_COLUMNS)])
    return inputs_from_summaries(cutoff, summaries, fit, catalog)


def customer_summaries(events: pd.DataFrame, cutoff: dt.date | pd.Timestamp) -> pd.DataFrame:
    """Per customer with a purchase before `cutoff` (indexed by id): `purchase_history` and the recent purchase
    features. A customer's row reads only their own events, so any batch holding all of its customers' events
    gives their rows (what Spark computes per partition)."""
    history = purchase_history(events, cutoff)
    return pd.concat([history, recent_purchase_features(events, cutoff).reindex(history.index)], axis=1)


def inputs_from_summaries(
    cutoff: dt.date | pd.Timestamp, summaries: pd.DataFrame, fit: BTYDFit, catalog: pd.DataFrame | None = None
) -> CutoffInputs:
    """The value model's inputs of these customers (`customer_summaries`, all or a batch) given the population's
    BTYD fit: each row depends on its customer and the fit only."""
    cutoff = pd.Timestamp(cutoff)
    if catalog is not None:
        if catalog.index.has_duplicates:
            raise ValueError(f"the catalog features for {cutoff.date()} have duplicate customer ids")
        clash = [c for c in catalog.columns if c in VALUE_FEATURES]
        if clash:
            raise ValueError(f"catalog columns {clash} clash with the value features; drop them from the catalog")
    history = summaries[list(HISTORY_COLUMNS)]
    features = pd.concat(
        [history, btyd_features(fit, history), summaries[list(RECENT_PURCHASE_FEATURES)]],
        axis=1,
    )[list(VALUE_FEATURES)]
    if catalog is not None:
        features = pd.concat([features, catalog.reindex(history.index)], axis=1)
    return CutoffInputs(cutoff=cutoff, history=history, fit=fit, features=features)
