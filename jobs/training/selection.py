"""The chosen model: the model family with the best cross-validated ROC AUC (LightGBM's best trial or the
logistic regression) refitted on every training row, its post-processing chosen on the folds, and every candidate
scored on the evaluation rows.

The evaluation rows (the out-of-time cutoff, or the holdout) are only ever used here to *measure*: the family, the
model, its post-processing and threshold were all chosen on the training period. Next to the model the report
shows the family not chosen and the recency / BG/NBD baselines on the same rows. On entity data the chosen
configuration is then refitted on every labelled row, and that refit is what gets registered.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from churnops.config import TrainingSettings
from churnops.dataset import DatasetContract
from churnops.jobs.evaluate import binary_metrics, stability
from churnops.jobs.training.candidates import fit_linear, linear_cv_roc_auc
from churnops.jobs.training.data import EncodedView, TrainingData
from churnops.jobs.training.postprocess import (
    FitOnRows,
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
    """Choose the model family on the validation folds, choose its blend/calibration/threshold on the folds, score
    the evaluation rows, and (entity data) refit the choice on every labelled row.

    Returns what registration and the report need: the model to register and its encoded view, the evaluation
    scores and metrics, the family choice, the post-processing, the retro-test and the baselines' scores (a plain
    dict: `churnops.jobs.report` reads it).
    """
    best = study.best_trial
    params, feature_set = booster_params(seed, best.params)
    rounds = int(best.user_attrs["rounds"])

    def fit_lightgbm(view: EncodedView, y: np.ndarray, mask: np.ndarray) -> Any:
        return fit_booster(view, y, params, mask, rounds)

    # Both families are scored by mean ROC AUC on the same cross-validation splits of the training period; the
    # evaluation rows play no part in the choice. A tie keeps LightGBM.
    family_cv_roc_auc = {
        "lightgbm": float(best.value),
        "logistic_regression": linear_cv_roc_auc(data, data.view("all")),
    }
    family = max(family_cv_roc_auc, key=lambda name: family_cv_roc_auc[name])
    fits: dict[str, tuple[str, FitOnRows]] = {
        "lightgbm": (feature_set, fit_lightgbm),
        "logistic_regression": ("all", fit_linear),
    }
    model_features, fit = fits[family]
    view = data.view(model_features)

    folds = fold_predictions(data, contract, view, fit)
    chosen = choose_postprocessing(folds, training, seed)

    every_training_row = np.ones(len(data.y_train), dtype=bool)
    model = fit(view, data.y_train, every_training_row)
    eval_bgnbd = bgnbd_scores(data.eval, contract)
    uncalibrated = chosen.blended(model.predict(view.x_eval), eval_bgnbd and eval_bgnbd[0])
    scores = apply_calibration(chosen.calibration, uncalibrated)
    metrics = binary_metrics(data.y_eval, scores)

    retro = {f.split.name: binary_metrics(f.labels, chosen.blended(f.raw, f.bgnbd))["gini"] for f in folds}
    if data.eval_cutoff is not None:
        retro[data.eval_cutoff] = metrics["gini"]

    from churnops.jobs.baselines import score_baselines

    baselines = score_baselines(data.train, data.eval, contract, bgnbd_params=eval_bgnbd and eval_bgnbd[1])
    # The family not chosen, fitted on the same rows and shown next to the model (without post-processing).
    [(other, (other_features, fit_other))] = [item for item in fits.items() if item[0] != family]
    other_view = data.view(other_features)
    other_scores = fit_other(other_view, data.y_train, every_training_row).predict(other_view.x_eval)

    refit_rows = None
    if data.validation != "out_of_time":
        # Entity data: the holdout has measured the choice, so the same configuration now learns from every
        # labelled row (train + holdout) and that refit is what is registered. The figures and the promotion
        # gate keep using `scores`, the holdout scores of the model fitted without the holdout: the refit has no
        # unseen rows left to be measured on. Out-of-time data keeps the model fitted on the training cutoffs.
        view = data.all_rows_view(model_features)
        model = fit(view, data.y_all, np.ones(len(data.y_all), dtype=bool))
        refit_rows = len(data.y_all)
    selected = {
        "family": family,
        "family_cv_roc_auc": family_cv_roc_auc,
        "best_params": dict(best.params) if family == "lightgbm" else {},
        "feature_set": model_features,
        "rounds": rounds,
        "cv_roc_auc": family_cv_roc_auc[family],
        "n_trials": len(study.trials),
        "model": model,
        "view": view,
        "refitted_on_all_rows": refit_rows,
        "scores": scores,
        "metrics": metrics,
        "uncalibrated_metrics": binary_metrics(data.y_eval, uncalibrated),
        **_postprocessing_fields(chosen),
        "postprocess": stored_postprocess(chosen, eval_bgnbd, contract),
        "retro_gini": retro,
        "baseline_scores": {other: other_scores, **baselines.scores},
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
            **{f"{name}_cv_roc_auc": auc for name, auc in selected["family_cv_roc_auc"].items()},
            "threshold": selected["threshold"],
            "blend_weight": selected["blend_weight"],
            "n_trials": selected["n_trials"],
        }
        | {f"retro_{k}": v for k, v in stability(selected["retro_gini"]).items()}
    )
    mlflow.set_tag("churnops.calibration", selected["calibration"]["method"])
    mlflow.set_tag("churnops.model_family", selected["family"])
