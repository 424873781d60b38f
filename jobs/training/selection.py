"""The chosen model: the best trial refitted on every training row, its post-processing chosen on the folds, and
every candidate scored on the evaluation rows.

The evaluation rows (the out-of-time cutoff, or the holdout) are only ever used here to *measure*: the model, its
post-processing and threshold were all chosen on the training period. Next to the model the report shows the
logistic-regression candidate and the recency / BG/NBD baselines on the same rows.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from churnops.config import TrainingSettings
from churnops.dataset import DatasetContract
from churnops.jobs.evaluate import binary_metrics, stability
from churnops.jobs.training.candidates import logistic_candidate
from churnops.jobs.training.data import TrainingData
from churnops.jobs.training.postprocess import (
    Postprocessing,
    bgnbd_scores,
    choose_postprocessing,
    fold_predictions,
    stored_postprocess,
)
from churnops.jobs.training.search import booster_params, fit_booster
from churnops.metrics import evaluation_prefix
from churnops.postprocess import apply_calibration

# Metrics of each baseline logged to the MLflow parent run (all of them are in evaluation.json).
LOGGED_BASELINE_METRICS = ("roc_auc", "gini", "pr_auc", "brier", "precision_at_10")


def select_and_evaluate(
    training: TrainingSettings, contract: DatasetContract, data: TrainingData, study: Any, seed: int
) -> dict[str, Any]:
    """Refit the best trial, choose blend/calibration/threshold on the folds, and score the evaluation rows.

    Returns what registration and the report need: the booster and its encoded view, the evaluation scores and
    metrics, the post-processing, the retro-test and the baselines' scores (a plain dict: `churnops.jobs.report` reads
    it).
    """
    best = study.best_trial
    params, feature_set = booster_params(seed, best.params)
    rounds = int(best.user_attrs["rounds"])
    view = data.view(feature_set)

    folds = fold_predictions(data, contract, view, params, rounds)
    chosen = choose_postprocessing(folds, training, seed)

    booster = fit_booster(view, data.y_train, params, np.ones(len(data.y_train), dtype=bool), rounds)
    eval_bgnbd = bgnbd_scores(data.eval, contract)
    uncalibrated = chosen.blended(booster.predict(view.x_eval), eval_bgnbd and eval_bgnbd[0])
    scores = apply_calibration(chosen.calibration, uncalibrated)
    metrics = binary_metrics(data.y_eval, scores)

    retro = {f.split.name: binary_metrics(f.labels, chosen.blended(f.raw, f.bgnbd))["gini"] for f in folds}
    if data.eval_cutoff is not None:
        retro[data.eval_cutoff] = metrics["gini"]

    from churnops.jobs.baselines import score_baselines

    baselines = score_baselines(data.train, data.eval, contract, bgnbd_params=eval_bgnbd and eval_bgnbd[1])
    logistic = logistic_candidate(data)
    selected = {
        "best_params": dict(best.params),
        "feature_set": feature_set,
        "rounds": rounds,
        "cv_roc_auc": float(best.value),
        "n_trials": len(study.trials),
        "booster": booster,
        "view": view,
        "scores": scores,
        "metrics": metrics,
        "uncalibrated_metrics": binary_metrics(data.y_eval, uncalibrated),
        **_postprocessing_fields(chosen),
        "postprocess": stored_postprocess(chosen, eval_bgnbd, contract),
        "retro_gini": retro,
        "logistic_regression_cv_roc_auc": logistic["cv_roc_auc"],
        "baseline_scores": {"logistic_regression": logistic["scores"], **baselines.scores},
        "baseline_details": baselines.details,
    }
    _log_selection(selected, data.y_eval, data.validation)
    return selected


def _postprocessing_fields(chosen: Postprocessing) -> dict[str, Any]:
    return {
        "threshold": chosen.threshold,
        "threshold_objective": chosen.threshold_objective,
        "calibration": chosen.calibration,
        "calibration_brier_by_method": chosen.calibration_brier_by_method,
        "blend_weight": chosen.blend_weight,
        "blend_auc_by_weight": chosen.blend_auc_by_weight,
    }


def _log_selection(selected: dict[str, Any], labels: np.ndarray, validation: str) -> None:
    """The choice and its evaluation figures on the active MLflow (parent) run, named for what the evaluation rows
    are: `oot_*` (a later cutoff) or `holdout_*` (entity data, no time axis)."""
    import mlflow

    evaluated = evaluation_prefix(validation)
    mlflow.log_params(
        {f"best_{k}": v for k, v in selected["best_params"].items()} | {"best_rounds": selected["rounds"]}
    )
    mlflow.log_metrics(
        {f"{evaluated}_{k}": v for k, v in selected["metrics"].items()}
        | {f"{evaluated}_uncalibrated_{k}": v for k, v in selected["uncalibrated_metrics"].items()}
        | {
            f"baseline_{name}_{k}": v
            for name, s in selected["baseline_scores"].items()
            for k, v in binary_metrics(labels, s).items()
            if k in LOGGED_BASELINE_METRICS
        }
        | {
            "best_cv_roc_auc": selected["cv_roc_auc"],
            "logistic_regression_cv_roc_auc": selected["logistic_regression_cv_roc_auc"],
            "threshold": selected["threshold"],
            "blend_weight": selected["blend_weight"],
            "n_trials": selected["n_trials"],
        }
        | {f"retro_{k}": v for k, v in stability(selected["retro_gini"]).items()}
    )
    mlflow.set_tag("churnops.calibration", selected["calibration"]["method"])
