"""Optuna search for the boosted survival model on time folds inside the training period.

A fold validated at cutoff v fits the training cutoffs before v with their follow-up censored the day before v,
and is scored on the customers at v with the follow-up the training frame has for them: nothing on or after the
evaluation cutoff is ever in the frame, and nothing on or after v reaches the fold's model. The objective is the
mean of Harrell's C over the folds (risk = minus the restricted mean purchase-free days over the fold's follow-up);
the evaluation rows are never seen here.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from churnops.features import CUTOFF
from churnops.jobs.survival.boosting import HazardBoostingModel, fit_hazard_model
from churnops.jobs.survival.data import DURATION, EVENT, censor_before
from churnops.jobs.survival.hazard import TimeBins
from churnops.jobs.survival.metrics import harrell_c_index, restricted_mean_days, time_dependent_auc
from churnops.schema import FeatureSchema

MAX_ROUNDS = 2000
EARLY_STOPPING_ROUNDS = 50
# Reported per fold next to the C-index (every fold's validation follow-up covers it on CDNOW).
FOLD_AUC_DAY = 30


@dataclass(frozen=True)
class TimeFold:
    validation_cutoff: dt.date
    train: pd.DataFrame
    valid: pd.DataFrame


def time_folds(training: pd.DataFrame, validation_cutoffs: Sequence[dt.date]) -> list[TimeFold]:
    """One fold per validation cutoff v: cutoffs before v censored the day before v, against the rows at v."""
    cutoffs = pd.to_datetime(training[CUTOFF])
    folds = []
    for validation_cutoff in validation_cutoffs:
        at = pd.Timestamp(validation_cutoff)
        earlier = training[cutoffs < at]
        valid = training[cutoffs == at]
        if earlier.empty or valid.empty:
            raise ValueError(
                f"time fold at {validation_cutoff}: needs training cutoffs before it and rows at it; the training "
                f"cutoffs are {sorted(cutoffs.dt.date.unique())}"
            )
        folds.append(TimeFold(validation_cutoff, censor_before(earlier, validation_cutoff), valid))
    return folds


def risk_over_follow_up(model: HazardBoostingModel, frame: pd.DataFrame) -> np.ndarray:
    """Minus the restricted mean purchase-free days over the frame's longest follow-up (higher = buys sooner)."""
    days = np.arange(1, int(frame[DURATION].max()) + 1)
    return -restricted_mean_days(model.survival(frame, days), days)


def suggest_params(trial: Any) -> dict[str, Any]:
    """The search space: LightGBM's capacity and regularisation, the width of the time bins, and whether the
    time-since columns advanced to each bin's start are inputs."""
    return {
        "bin_width_days": trial.suggest_categorical("bin_width_days", [15, 30]),
        "advance_time_since": trial.suggest_categorical("advance_time_since", [True, False]),
        "learning_rate": trial.suggest_float("learning_rate", 0.02, 0.2, log=True),
        "num_leaves": trial.suggest_int("num_leaves", 4, 64, log=True),
        "min_child_samples": trial.suggest_int("min_child_samples", 20, 2000, log=True),
        "feature_fraction": trial.suggest_float("feature_fraction", 0.3, 1.0),
        "bagging_fraction": trial.suggest_float("bagging_fraction", 0.5, 1.0),
        "bagging_freq": 1,
        "lambda_l2": trial.suggest_float("lambda_l2", 1e-3, 30.0, log=True),
    }


@dataclass(frozen=True)
class HazardSetup:
    """One trial's parameters split into what `fit_hazard_model` takes."""

    bins: TimeBins
    booster_params: dict[str, Any]
    advance_time_since: bool


def split_params(params: dict[str, Any], seed: int, last_bin_start: int) -> HazardSetup:
    """The time bins, LightGBM parameters and input choice of one trial's parameters."""
    booster = {k: v for k, v in params.items() if k not in ("bin_width_days", "advance_time_since")}
    return HazardSetup(
        bins=TimeBins.regular(int(params["bin_width_days"]), last_bin_start),
        booster_params={**booster, "seed": seed},
        advance_time_since=bool(params.get("advance_time_since", True)),
    )


def fit_setup(
    setup: HazardSetup,
    train: pd.DataFrame,
    schema: FeatureSchema,
    num_rounds: int,
    valid: pd.DataFrame | None = None,
) -> tuple[HazardBoostingModel, int]:
    """`fit_hazard_model` with a trial's setup (early stopping on `valid` when given)."""
    return fit_hazard_model(
        train,
        schema,
        setup.bins,
        setup.booster_params,
        num_rounds,
        valid,
        EARLY_STOPPING_ROUNDS,
        advance_time_since=setup.advance_time_since,
    )


def cross_validate(
    folds: Sequence[TimeFold], schema: FeatureSchema, params: dict[str, Any], seed: int, last_bin_start: int
) -> dict[str, Any]:
    """Fit and score every fold with one parameter set: C-index per fold, AUC at 30 days on the folds followed up
    past it, and the rounds early stopping kept."""
    setup = split_params(params, seed, last_bin_start)
    c_indexes, aucs, rounds = [], [], []
    for fold in folds:
        model, used = fit_setup(setup, fold.train, schema, MAX_ROUNDS, fold.valid)
        durations, events = fold.valid[DURATION].to_numpy(), fold.valid[EVENT].to_numpy()
        c_indexes.append(harrell_c_index(durations, events, risk_over_follow_up(model, fold.valid)))
        if durations.max() > FOLD_AUC_DAY:  # the AUC needs follow-up past its day
            p_buy = 1.0 - model.survival(fold.valid, np.array([float(FOLD_AUC_DAY)]))[:, 0]
            aucs.append(time_dependent_auc(durations, events, p_buy, [FOLD_AUC_DAY])[FOLD_AUC_DAY])
        rounds.append(used)
    return {"c_index": c_indexes, "auc_30d": aucs, "rounds": rounds}


@dataclass(frozen=True)
class SearchResult:
    best_params: dict[str, Any]
    best_rounds: int
    best_cv_c_index: float
    trials: list[dict[str, Any]] = field(default_factory=list)


def search(
    folds: Sequence[TimeFold],
    schema: FeatureSchema,
    n_trials: int,
    seed: int,
    last_bin_start: int,
    on_trial: Callable[[int, dict[str, Any], dict[str, Any]], None] | None = None,
) -> SearchResult:
    """Seeded TPE over `suggest_params`, maximising the mean fold C-index. `on_trial(number, params, result)` is
    called after each trial (e.g. to log a nested MLflow run). Refit rounds = the best trial's mean rounds."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    records: list[dict[str, Any]] = []

    def objective(trial: optuna.Trial) -> float:
        params = suggest_params(trial)
        result = cross_validate(folds, schema, params, seed, last_bin_start)
        score = float(np.mean(result["c_index"]))
        trial.set_user_attr("rounds", int(np.mean(result["rounds"])))
        records.append({"number": trial.number, "params": params, **result, "mean_c_index": score})
        if on_trial is not None:
            on_trial(trial.number, params, result)
        return score

    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
    study.optimize(objective, n_trials=n_trials)
    best = study.best_trial
    return SearchResult(
        best_params={**best.params, "bagging_freq": 1},
        best_rounds=int(best.user_attrs["rounds"]),
        best_cv_c_index=float(best.value),
        trials=records,
    )
