"""The value model: LightGBM correcting the Pareto/NBD x Gamma-Gamma forecast, trained out of time.

A customer's value over a horizon is predicted as

    value = BTYD value over the horizon x exp(f(features))

where the BTYD value (Pareto/NBD purchases x Gamma-Gamma spend, fitted without labels on the history before the
cutoff) enters LightGBM as a fixed offset (`init_score`, log link) and the booster f learns, with a Poisson or
Tweedie objective, how far off that forecast is for customers like this one. The horizon enters only through the
offset. That is what lets a model trained on **short windows** that end before the evaluation cutoff (13 weeks
on CDNOW) forecast a **longer horizon** (39 weeks): the BTYD model extrapolates the purchase process, the booster
corrects levels and is fed only horizon-free features (`churnops.jobs.value.features`).

Training rows are (customer, cutoff) pairs whose target window ends on or before the evaluation cutoff, built from
the event log cut at the evaluation cutoff, so no purchase on or after it can reach the model.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

from churnops.bronze import EVENT_DAY
from churnops.jobs.value.features import VALUE_FEATURES, CutoffInputs, SpendBasis, log_offset
from churnops.jobs.value.history import value_in_window

Objective = Literal["poisson", "tweedie"]
# `value`: the value model's own inputs (`VALUE_FEATURES`); `all`: those and every catalog feature given.
FeatureSet = Literal["value", "all"]


@dataclass(frozen=True)
class ValueModelParams:
    """LightGBM settings of one value model (what an Optuna trial chooses)."""

    objective: Objective = "poisson"
    feature_set: FeatureSet = "value"
    # The Gamma-Gamma basis of the offset's spend (`churnops.jobs.value.features.BTYDFit`).
    offset_spend: SpendBasis = "repeat"
    tweedie_variance_power: float = 1.5
    learning_rate: float = 0.03
    num_leaves: int = 15
    min_child_samples: int = 200
    feature_fraction: float = 0.8
    bagging_fraction: float = 0.8
    lambda_l2: float = 10.0
    # Training targets above this quantile are set to it: a handful of customers spending thousands otherwise
    # decide the splits. 1.0 keeps every target as it is.
    target_cap_quantile: float = 1.0
    rounds: int = 300

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def booster_params(params: ValueModelParams, seed: int) -> dict[str, Any]:
    """The LightGBM parameter dictionary (single-threaded and deterministic, like the churn model's)."""
    booster = {
        "objective": params.objective,
        "learning_rate": params.learning_rate,
        "num_leaves": params.num_leaves,
        "min_child_samples": params.min_child_samples,
        "feature_fraction": params.feature_fraction,
        "bagging_fraction": params.bagging_fraction,
        "bagging_freq": 1,
        "lambda_l2": params.lambda_l2,
        "verbosity": -1,
        "seed": seed,
        "deterministic": True,
        "force_col_wise": True,
        "num_threads": 1,
    }
    if params.objective == "tweedie":
        booster["tweedie_variance_power"] = params.tweedie_variance_power
    return booster


@dataclass(frozen=True)
class TrainingRows:
    """Stacked (customer, cutoff) rows: model inputs, the value spent in the window after the cutoff, and the
    log BTYD value over that same window (the offset)."""

    features: pd.DataFrame
    target: np.ndarray
    log_offset: np.ndarray
    cutoff: np.ndarray

    def __len__(self) -> int:
        return len(self.target)


def events_before(events: pd.DataFrame, cutoff: dt.date | pd.Timestamp) -> pd.DataFrame:
    """The event log without anything on or after `cutoff`: what may be known at that cutoff."""
    return events[pd.to_datetime(events[EVENT_DAY]) < pd.Timestamp(cutoff)]


def training_rows(
    inputs: Sequence[CutoffInputs],
    events: pd.DataFrame,
    window_days: int,
    known_until: dt.date | pd.Timestamp,
    offset_spend: SpendBasis = "repeat",
) -> TrainingRows:
    """Rows for the given cutoffs with targets over `window_days` from each cutoff.

    Every target window must end on or before `known_until` (the evaluation cutoff, or a fold's validation
    cutoff), and only events before `known_until` are read: a window that would reach past it is an error, not a
    silently truncated target.
    """
    if not inputs:
        raise ValueError("no training cutoffs: pass at least one CutoffInputs")
    limit = pd.Timestamp(known_until)
    late = [i.cutoff.date() for i in inputs if i.cutoff + pd.Timedelta(days=window_days) > limit]
    if late:
        raise ValueError(
            f"training cutoffs {late} have {window_days}-day target windows that end after {limit.date()}; "
            "use earlier cutoffs or a shorter window"
        )
    known = events_before(events, limit)
    return TrainingRows(
        features=pd.concat([i.features for i in inputs], axis=0),
        target=np.concatenate([value_in_window(known, i.history.index, i.cutoff, window_days) for i in inputs]),
        log_offset=np.concatenate([log_offset(i.fit, i.history, window_days, offset_spend) for i in inputs]),
        cutoff=np.concatenate([np.full(len(i.history), i.cutoff) for i in inputs]),
    )


@dataclass(frozen=True)
class ValueModel:
    """A trained booster and the columns it reads; predicts dollars over any horizon given that horizon's offset."""

    booster: Any  # lightgbm.Booster
    feature_names: tuple[str, ...]
    params: ValueModelParams

    def correction(self, features: pd.DataFrame) -> np.ndarray:
        """exp(f(features)): the factor the model applies to the BTYD value."""
        missing = [c for c in self.feature_names if c not in features.columns]
        if missing:
            raise ValueError(f"the feature frame lacks the model's columns {missing}")
        return np.exp(self.booster.predict(features[list(self.feature_names)], raw_score=True))

    def predict(self, features: pd.DataFrame, log_offset: np.ndarray) -> np.ndarray:
        """Expected value over the horizon the offset was computed for."""
        if len(log_offset) != len(features):
            raise ValueError(f"{len(features)} feature rows but {len(log_offset)} offsets")
        return self.correction(features) * np.exp(log_offset)

    def predict_at(self, inputs: CutoffInputs, horizon_days: int) -> np.ndarray:
        """Expected value over the next `horizon_days` for every customer of one cutoff."""
        offset = log_offset(inputs.fit, inputs.history, horizon_days, self.params.offset_spend)
        return self.predict(inputs.features, offset)


def feature_columns(features: pd.DataFrame, feature_set: FeatureSet) -> tuple[str, ...]:
    """The columns of `features` a model with this feature set reads."""
    if feature_set == "all":
        return tuple(features.columns)
    missing = [c for c in VALUE_FEATURES if c not in features.columns]
    if missing:
        raise ValueError(f"the feature frame lacks the value features {missing}; build it with cutoff_inputs")
    return VALUE_FEATURES


def capped_target(target: np.ndarray, quantile: float) -> np.ndarray:
    """Targets above their `quantile` set to it (1.0: unchanged)."""
    if quantile >= 1.0:
        return target
    return np.minimum(target, np.quantile(target, quantile))


def fit_value_model(
    rows: TrainingRows,
    params: ValueModelParams,
    seed: int,
    valid: TrainingRows | None = None,
    early_stopping_rounds: int | None = None,
) -> tuple[ValueModel, int]:
    """Train the booster on `rows` (offset = their log BTYD value); returns the model and its number of rounds.

    With `valid` and `early_stopping_rounds`, training stops when the objective's deviance on `valid` has not
    improved for that many rounds and the model keeps the best round.
    """
    import lightgbm as lgb

    names = feature_columns(rows.features, params.feature_set)
    train_set = lgb.Dataset(
        rows.features[list(names)],
        capped_target(rows.target, params.target_cap_quantile),
        init_score=rows.log_offset,
        free_raw_data=True,
    )
    callbacks = []
    valid_sets = []
    if valid is not None:
        valid_sets = [
            lgb.Dataset(valid.features[list(names)], valid.target, init_score=valid.log_offset, reference=train_set)
        ]
        if early_stopping_rounds:
            callbacks.append(lgb.early_stopping(early_stopping_rounds, first_metric_only=True, verbose=False))
    booster = lgb.train(
        booster_params(params, seed),
        train_set,
        num_boost_round=params.rounds,
        valid_sets=valid_sets,
        callbacks=callbacks,
    )
    rounds = booster.best_iteration if valid is not None and early_stopping_rounds else params.rounds
    if rounds and rounds < booster.current_iteration():
        booster = lgb.Booster(model_str=booster.model_to_string(num_iteration=rounds))
    return ValueModel(booster=booster, feature_names=names, params=params), int(rounds or params.rounds)
