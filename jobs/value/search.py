"""Choosing and training the value model on time folds inside the training period (never the evaluation rows).

The final model is trained on windows of `window_days` and asked for `horizon_days`, a longer horizon. The folds
rehearse exactly that extrapolation one step earlier: a fold validated at cutoff v on a `window_days` window is fit
on cutoffs whose targets cover `window_days * window_days / horizon_days` days and end by v (on CDNOW: fit on
30-day windows, judge 91-day ones, as the final model fits 91-day windows and is judged on 273 days).

Optuna (seeded TPE) chooses the objective (Poisson or Tweedie and its power), the feature set, the Gamma-Gamma
basis of the offset, the tree settings and the target cap;
every trial stops early on each fold's deviance and is scored by the mean over folds of
(Spearman + top-10 % revenue capture) / 2, the two ranking figures the issue's targets name, less the relative
amount by which its mean fold MAE exceeds Pareto/NBD x Gamma-Gamma's (the third target: MAE no worse than that
baseline's). The refit on every training cutoff uses the mean of the folds' best round counts.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from churnops.jobs.value.features import SPEND_BASES, CutoffInputs, baseline_values
from churnops.jobs.value.metrics import mae, revenue_capture, spearman
from churnops.jobs.value.model import ValueModel, ValueModelParams, fit_value_model, training_rows

MAX_ROUNDS = 1500
EARLY_STOPPING_ROUNDS = 50
MIN_FIT_WINDOW_DAYS = 7
TARGET_CAP_QUANTILES = (0.99, 0.995, 0.999, 1.0)

TrialCallback = Callable[[int, dict[str, Any], float], None]


@dataclass(frozen=True)
class ValueFold:
    """Fit on `fit_cutoffs` with `fit_window_days` targets; validate at `valid_cutoff` on `valid_window_days`."""

    fit_cutoffs: tuple[pd.Timestamp, ...]
    fit_window_days: int
    valid_cutoff: pd.Timestamp
    valid_window_days: int


def value_time_folds(
    cutoffs: Sequence[dt.date | pd.Timestamp],
    evaluation_cutoff: dt.date | pd.Timestamp,
    window_days: int,
    horizon_days: int,
    n_folds: int = 2,
    spacing_days: int = 28,
) -> list[ValueFold]:
    """Folds validated at the latest cutoffs whose `window_days` window ends by the evaluation cutoff, at least
    `spacing_days` apart, each fit on earlier cutoffs with windows shortened by the same ratio as the final
    extrapolation (window_days / horizon_days) and ending by its validation cutoff."""
    if not 0 < window_days <= horizon_days:
        raise ValueError(f"need 0 < window_days <= horizon_days; got {window_days} and {horizon_days}")
    stamps = sorted(pd.Timestamp(c) for c in cutoffs)
    end = pd.Timestamp(evaluation_cutoff)
    fit_window = max(MIN_FIT_WINDOW_DAYS, round(window_days * window_days / horizon_days))
    valid: list[pd.Timestamp] = []
    for cutoff in reversed([c for c in stamps if c + pd.Timedelta(days=window_days) <= end]):
        if not valid or (valid[-1] - cutoff).days >= spacing_days:
            valid.append(cutoff)
        if len(valid) == n_folds:
            break
    folds = []
    for v in sorted(valid):
        fit = tuple(c for c in stamps if c + pd.Timedelta(days=fit_window) <= v)
        if fit:
            folds.append(ValueFold(fit, fit_window, v, window_days))
    if not folds:
        raise ValueError(
            f"no time fold fits: cutoffs {[c.date() for c in stamps]} leave no validation cutoff with a "
            f"{window_days}-day window before {end.date()} and earlier cutoffs to fit; add earlier cutoffs"
        )
    return folds


def selection_score(actual: np.ndarray, predicted: np.ndarray) -> float:
    """(Spearman + top-10 % revenue capture) / 2: what a trial is chosen by."""
    return (spearman(actual, predicted) + revenue_capture(actual, predicted, 0.10)) / 2


def trial_score(results: Sequence[FoldResult]) -> float:
    """Mean fold selection score, less the relative excess of the mean fold MAE over the baseline's (if any)."""
    mae, baseline_mae = np.mean([r.mae for r in results]), np.mean([r.baseline_mae for r in results])
    return float(np.mean([r.score for r in results]) - max(0.0, mae / baseline_mae - 1.0))


@dataclass(frozen=True)
class FoldResult:
    score: float
    mae: float
    rounds: int
    baseline_score: float  # Pareto/NBD x Gamma-Gamma on the same validation rows
    baseline_mae: float


def cross_validate(
    inputs: Mapping[pd.Timestamp, CutoffInputs],
    events: pd.DataFrame,
    folds: Sequence[ValueFold],
    params: ValueModelParams,
    seed: int,
) -> list[FoldResult]:
    """Fit and score `params` on every fold (early stopping on the fold's validation deviance)."""
    results = []
    for fold in folds:
        fit_rows = training_rows(
            [inputs[c] for c in fold.fit_cutoffs],
            events,
            fold.fit_window_days,
            known_until=fold.valid_cutoff,
            offset_spend=params.offset_spend,
        )
        valid_end = fold.valid_cutoff + pd.Timedelta(days=fold.valid_window_days)
        valid_rows = training_rows(
            [inputs[fold.valid_cutoff]], events, fold.valid_window_days, valid_end, params.offset_spend
        )
        model, rounds = fit_value_model(
            fit_rows, params, seed, valid=valid_rows, early_stopping_rounds=EARLY_STOPPING_ROUNDS
        )
        predicted = model.predict(valid_rows.features, valid_rows.log_offset)
        baseline = baseline_values(inputs[fold.valid_cutoff], fold.valid_window_days)["pareto_nbd_gamma_gamma"]
        results.append(
            FoldResult(
                score=selection_score(valid_rows.target, predicted),
                mae=mae(valid_rows.target, predicted),
                rounds=rounds,
                baseline_score=selection_score(valid_rows.target, baseline),
                baseline_mae=mae(valid_rows.target, baseline),
            )
        )
    return results


def suggest_params(trial: Any) -> ValueModelParams:
    """The search space of one Optuna trial."""
    objective = trial.suggest_categorical("objective", ["poisson", "tweedie"])
    return ValueModelParams(
        objective=objective,
        feature_set=trial.suggest_categorical("feature_set", ["value", "all"]),
        offset_spend=trial.suggest_categorical("offset_spend", list(SPEND_BASES)),
        tweedie_variance_power=trial.suggest_float("tweedie_variance_power", 1.1, 1.9)
        if objective == "tweedie"
        else 1.5,
        learning_rate=trial.suggest_float("learning_rate", 0.01, 0.1, log=True),
        num_leaves=trial.suggest_int("num_leaves", 4, 64, log=True),
        min_child_samples=trial.suggest_int("min_child_samples", 50, 3000, log=True),
        feature_fraction=trial.suggest_float("feature_fraction", 0.4, 1.0),
        bagging_fraction=trial.suggest_float("bagging_fraction", 0.5, 1.0),
        lambda_l2=trial.suggest_float("lambda_l2", 1e-3, 100.0, log=True),
        target_cap_quantile=trial.suggest_categorical("target_cap_quantile", list(TARGET_CAP_QUANTILES)),
        rounds=MAX_ROUNDS,
    )


@dataclass(frozen=True)
class SearchResult:
    params: ValueModelParams  # the best trial's, with `rounds` = the mean of its folds' best rounds
    score: float
    fold_scores: tuple[float, ...]
    fold_maes: tuple[float, ...]
    baseline_fold_scores: tuple[float, ...]
    baseline_fold_maes: tuple[float, ...]
    trials: list[dict[str, Any]] = field(default_factory=list)


def search_value_model(
    inputs: Mapping[pd.Timestamp, CutoffInputs],
    events: pd.DataFrame,
    folds: Sequence[ValueFold],
    n_trials: int,
    seed: int,
    on_trial: TrialCallback | None = None,
) -> SearchResult:
    """An Optuna study over `suggest_params`, each trial cross-validated on `folds`."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
    fold_results: dict[int, list[FoldResult]] = {}

    def objective(trial: Any) -> float:
        results = cross_validate(inputs, events, folds, suggest_params(trial), seed)
        fold_results[trial.number] = results
        score = trial_score(results)
        if on_trial is not None:
            on_trial(trial.number, dict(trial.params), score)
        return score

    study.optimize(objective, n_trials=n_trials)
    best = study.best_trial
    results = fold_results[best.number]
    params = replace(
        suggest_params(optuna.trial.FixedTrial(best.params)), rounds=round(np.mean([r.rounds for r in results]))
    )
    trials = [
        {
            "number": t.number,
            "score": t.value,
            **t.params,
            "fold_scores": [r.score for r in fold_results[t.number]],
            "fold_maes": [r.mae for r in fold_results[t.number]],
            "rounds": [r.rounds for r in fold_results[t.number]],
        }
        for t in study.trials
        if t.value is not None
    ]
    return SearchResult(
        params=params,
        score=float(best.value),
        fold_scores=tuple(r.score for r in results),
        fold_maes=tuple(r.mae for r in results),
        baseline_fold_scores=tuple(r.baseline_score for r in results),
        baseline_fold_maes=tuple(r.baseline_mae for r in results),
        trials=trials,
    )


@dataclass(frozen=True)
class TrainedValueModel:
    model: ValueModel
    search: SearchResult
    folds: list[ValueFold]
    training_cutoffs: tuple[pd.Timestamp, ...]
    window_days: int
    training_rows: int


def train_value_model(
    inputs: Mapping[pd.Timestamp, CutoffInputs],
    events: pd.DataFrame,
    evaluation_cutoff: dt.date | pd.Timestamp,
    horizon_days: int,
    window_days: int,
    n_trials: int,
    seed: int,
    on_trial: TrialCallback | None = None,
) -> TrainedValueModel:
    """Search on time folds, then refit on every cutoff in `inputs` whose `window_days` window ends by the
    evaluation cutoff. `inputs` holds the training cutoffs only; the evaluation cutoff's are used to predict."""
    end = pd.Timestamp(evaluation_cutoff)
    usable = sorted(c for c in inputs if c + pd.Timedelta(days=window_days) <= end)
    folds = value_time_folds(usable, end, window_days, horizon_days)
    search = search_value_model(inputs, events, folds, n_trials, seed, on_trial)
    rows = training_rows([inputs[c] for c in usable], events, window_days, end, search.params.offset_spend)
    model, _ = fit_value_model(rows, search.params, seed)
    return TrainedValueModel(
        model=model,
        search=search,
        folds=folds,
        training_cutoffs=tuple(usable),
        window_days=window_days,
        training_rows=len(rows),
    )
