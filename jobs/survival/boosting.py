"""The gradient-boosted survival model: LightGBM fitted on person-period rows (see `churnops.jobs.survival.hazard`).

One booster predicts a customer's log daily purchase rate in each time bin from their features, the bin's start and
their time-since columns advanced to it; the Poisson objective with log(exposure) as the initial score is the exact
piecewise-exponential likelihood, so censoring is handled row by row. Serving needs only the booster, the feature
schema, the bins, the advanced column names and two numbers (`base_log_rate`, `horizon_days`): every curve,
P(buy by t) and median comes from `churnops.jobs.survival.hazard` on the booster's raw scores.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd

from churnops.jobs.survival.bin_trees import BinTrees
from churnops.jobs.survival.data import DURATION, EVENT
from churnops.jobs.survival.hazard import (
    AT_BIN_START,
    BIN_START,
    TimeBins,
    expand_person_periods,
    hazard_inputs,
    median_days,
    survival_curves,
)
from churnops.schema import FeatureSchema

# Horizons of the per-customer probabilities in the lists and from /predict.
REPORTED_HORIZONS_DAYS = (30, 90, 180)
# Columns whose value grows by one every day after the cutoff (advanced to each bin's start when present).
TIME_SINCE_COLUMNS = ("days_since_last_event", "days_since_first_event")
FIXED_PARAMS: dict[str, Any] = {"objective": "poisson", "verbosity": -1, "num_threads": 1, "deterministic": True}


@dataclass(frozen=True)
class HazardBoostingModel:
    """A fitted booster and what is needed to turn its raw scores into survival curves."""

    booster: lgb.Booster
    schema: FeatureSchema
    bins: TimeBins
    shifted: tuple[str, ...]
    # Longest follow-up (days) in the training rows: curves past it are extrapolated, medians past it not reported.
    horizon_days: float
    # log(purchases / days at risk) of the training rows: the booster's trees start from it (see `base_log_rate`).
    base_log_rate: float
    params: dict[str, Any] = field(default_factory=dict)

    def rates(self, frame: pd.DataFrame, threads: int | None = None) -> np.ndarray:
        """Daily purchase rate of each customer (rows) in each time bin (columns).

        The same inputs row for row as `all_bins_inputs`, without materialising every customer in every bin
        (gigabytes for a list of a million): each tree is evaluated only in the bins it can tell apart, on the bin
        start and advanced time-since columns computed per bin (`churnops.jobs.survival.bin_trees`, with numpy). A
        booster that is not a plain sum of trees is predicted whole per bin on one rewritten matrix, on all cores:
        it was trained on one thread (`FIXED_PARAMS`), which LightGBM would otherwise keep for prediction too.
        `threads`: how many cores to use (default: all; a Spark task passes its own)."""
        matrix = self.schema.encode_frame(frame)
        starts = np.asarray(self.bins.starts, dtype=float)
        planned = self._bin_trees
        if planned is not None:  # the bin start and advanced columns are computed per bin from the encoded rows
            return np.exp(self.base_log_rate + planned.predict_raw_by_bin(matrix, starts, threads))
        shifted = _shifted_indices(self.schema, self.shifted)
        n = len(matrix)
        inputs = hazard_inputs(matrix, self.bins, np.arange(n), np.zeros(n, dtype=np.int64), shifted)
        start_column = matrix.shape[1]
        # Not a plain sum of trees: the whole booster in every bin.
        log_rates = np.empty((n, len(self.bins)), dtype=float)
        for index, start in enumerate(starts):
            inputs[:, start_column] = start
            for offset, column in enumerate(shifted, start=1):
                inputs[:, start_column + offset] = matrix[:, column] + start
            log_rates[:, index] = self.booster.predict(inputs, raw_score=True, num_threads=threads or 0)
        return np.exp(self.base_log_rate + log_rates)

    @cached_property
    def _bin_trees(self) -> BinTrees | None:
        start_column = len(self.schema.columns)
        shifted = _shifted_indices(self.schema, self.shifted)
        advanced = {start_column + offset: column for offset, column in enumerate(shifted, start=1)}
        return BinTrees.of(self.booster, start_column, advanced)

    def survival(self, frame: pd.DataFrame, days: np.ndarray) -> np.ndarray:
        """P(no purchase in days 1..t), customers by days."""
        return survival_curves(self.rates(frame), self.bins, days)

    def predict_customers(
        self, frame: pd.DataFrame, horizons: Sequence[int] = REPORTED_HORIZONS_DAYS, threads: int | None = None
    ) -> pd.DataFrame:
        """Per customer: P(buy by each horizon, in days) and the median days to the next purchase (NaN = beyond the
        horizon the model was trained on, flagged in `median_beyond_horizon`). `threads`: as in `rates`."""
        rates = self.rates(frame, threads)
        survival = survival_curves(rates, self.bins, np.asarray(horizons, dtype=float))
        medians = median_days(rates, self.bins, self.horizon_days)
        result = {f"p_buy_{t}d": 1.0 - survival[:, i] for i, t in enumerate(horizons)}
        return pd.DataFrame(
            {**result, "median_days_to_next_purchase": medians, "median_beyond_horizon": np.isnan(medians)},
            index=frame.index,
        )


def _shifted_indices(schema: FeatureSchema, shifted: Sequence[str]) -> list[int]:
    return [schema.columns.index(c) for c in shifted]


def shifted_columns(schema: FeatureSchema) -> tuple[str, ...]:
    """The time-since columns of this schema that get advanced to each bin's start."""
    return tuple(c for c in TIME_SINCE_COLUMNS if c in schema.numeric)


def input_names(schema: FeatureSchema, shifted: Sequence[str]) -> list[str]:
    """Booster input names: the schema's columns, the bin start, then the advanced time-since columns."""
    return [*schema.columns, BIN_START, *(AT_BIN_START.format(c) for c in shifted)]


def base_log_rate(frame: pd.DataFrame) -> float:
    """log of the pooled daily purchase rate, purchases / days at risk.

    LightGBM does not boost from the average when an initial score is given, so without this offset the trees
    would start from a rate of one purchase a day and spend their first hundreds of rounds walking down to it.
    """
    events, exposure = float(frame[EVENT].sum()), float(frame[DURATION].sum())
    if events == 0:
        raise ValueError("the training rows hold no observed purchase: a hazard model has nothing to learn from")
    return float(np.log(events / exposure))


def person_period_dataset(
    frame: pd.DataFrame,
    schema: FeatureSchema,
    bins: TimeBins,
    shifted: Sequence[str],
    offset: float,
    reference: lgb.Dataset | None,
) -> lgb.Dataset:
    """A LightGBM dataset of the frame's person-period rows: outcome "bought in this bin", initial score
    log(exposure) + `offset` (the pooled log rate)."""
    periods = expand_person_periods(frame[DURATION].to_numpy(), frame[EVENT].to_numpy(), bins)
    matrix = schema.encode_frame(frame)
    inputs = hazard_inputs(matrix, bins, periods.subject, periods.bin, _shifted_indices(schema, shifted))
    return lgb.Dataset(
        inputs,
        label=periods.event,
        init_score=np.log(periods.exposure_days) + offset,
        feature_name=input_names(schema, shifted),
        categorical_feature=schema.categorical_indices or "auto",
        reference=reference,
        free_raw_data=False,
    )


def fit_hazard_model(
    train: pd.DataFrame,
    schema: FeatureSchema,
    bins: TimeBins,
    params: dict[str, Any],
    num_rounds: int,
    valid: pd.DataFrame | None = None,
    early_stopping_rounds: int = 50,
    advance_time_since: bool = True,
) -> tuple[HazardBoostingModel, int]:
    """Fit on `train`'s survival rows; with `valid`, stop early on its Poisson deviance. Returns (model, rounds).

    `advance_time_since` adds the time-since columns advanced to each bin's start as inputs."""
    shifted = shifted_columns(schema) if advance_time_since else ()
    offset = base_log_rate(train)
    train_set = person_period_dataset(train, schema, bins, shifted, offset, reference=None)
    full_params = {**FIXED_PARAMS, **params}
    callbacks: list[Any] = []
    valid_sets: list[lgb.Dataset] = []
    if valid is not None:
        valid_sets = [person_period_dataset(valid, schema, bins, shifted, offset, reference=train_set)]
        callbacks = [lgb.early_stopping(early_stopping_rounds, verbose=False)]
    booster = lgb.train(full_params, train_set, num_boost_round=num_rounds, valid_sets=valid_sets, callbacks=callbacks)
    rounds = booster.best_iteration if valid is not None and booster.best_iteration > 0 else num_rounds
    model = HazardBoostingModel(
        booster=booster,
        schema=schema,
        bins=bins,
        shifted=shifted,
        horizon_days=float(train[DURATION].max()),
        base_log_rate=offset,
        params=full_params,
    )
    return model, int(rounds)
