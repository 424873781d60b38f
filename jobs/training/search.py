"""The hyperparameter search: an Optuna study over LightGBM, every trial a nested MLflow run, resumable.

Seeded TPE with median pruning (a trial is pruned after any fold whose running mean is below the median), a trial
and time budget. Each trial chooses LightGBM's hyperparameters, the class weighting (`scale_pos_weight`) and the
feature set, and is scored by the mean ROC AUC over the training data's cross-validation splits.

The study lives in an RDB keyed by dataset, snapshot and seed, so a killed task re-enters the same study (and,
through a study attribute, the same MLflow parent run) and only runs the trials still missing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from churnops.config import Settings
from churnops.dataset import DatasetContract
from churnops.jobs.training.data import EncodedView, TrainingData
from churnops.snapshots import SnapshotMetadata

# Study user attribute holding the MLflow parent run of the training, so a retried task re-enters it.
PARENT_RUN_ATTR = "mlflow_parent_run_id"
# Early stopping patience within a fold, and the cap on boosting rounds it stops within.
EARLY_STOPPING_ROUNDS = 50
MAX_ROUNDS = 1000

# Called after every trial with (trials in the study, trials wanted, the trial's value or None if pruned/failed).
TrialCallback = Callable[[int, int, float | None], None]


def base_params(seed: int) -> dict[str, Any]:
    """LightGBM parameters every fit shares: deterministic, single-threaded, bagging every iteration."""
    return {
        "objective": "binary",
        "metric": "auc",
        "verbosity": -1,
        "seed": seed,
        "deterministic": True,
        "force_col_wise": True,
        # One thread: on a shared machine OpenMP threads spin against other processes (docs/model-selection.md
        # has the measurement), and results stay identical whatever the core count.
        "num_threads": 1,
        "bagging_freq": 1,
    }


def suggest_params(trial: Any, feature_sets: list[str]) -> dict[str, Any]:
    """One trial's choices: the feature set and LightGBM's hyperparameters."""
    return {
        "feature_set": trial.suggest_categorical("feature_set", feature_sets),
        "learning_rate": trial.suggest_float("learning_rate", 0.01, 0.2, log=True),
        "num_leaves": trial.suggest_int("num_leaves", 4, 64, log=True),
        "min_child_samples": trial.suggest_int("min_child_samples", 10, 500, log=True),
        "feature_fraction": trial.suggest_float("feature_fraction", 0.4, 1.0),
        "bagging_fraction": trial.suggest_float("bagging_fraction", 0.5, 1.0),
        "lambda_l2": trial.suggest_float("lambda_l2", 1e-3, 10.0, log=True),
        # Class imbalance: up-weight the positive class; calibration afterwards restores probabilities.
        "scale_pos_weight": trial.suggest_float("scale_pos_weight", 1.0, 10.0, log=True),
    }


def booster_params(seed: int, trial_params: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """LightGBM parameters and the feature set from a trial's parameters."""
    params = {k: v for k, v in trial_params.items() if k != "feature_set"}
    return {**base_params(seed), **params}, trial_params.get("feature_set", "all")


def fit_booster(
    view: EncodedView, y: np.ndarray, params: dict[str, Any], mask: np.ndarray, rounds: int, valid: Any = None
) -> Any:
    """Train a booster on the masked training rows; with `valid` = (x, y), stop early on it."""
    import lightgbm as lgb

    train_set = lgb.Dataset(
        view.x_train[mask],
        y[mask],
        feature_name=view.schema.columns,
        categorical_feature=view.schema.categorical_indices,
        free_raw_data=False,
    )
    if valid is None:
        return lgb.train(params, train_set, num_boost_round=rounds)
    valid_set = lgb.Dataset(valid[0], valid[1], reference=train_set)
    return lgb.train(
        params,
        train_set,
        num_boost_round=rounds,
        valid_sets=[valid_set],
        callbacks=[lgb.early_stopping(stopping_rounds=EARLY_STOPPING_ROUNDS, verbose=False)],
    )


def cross_validate(data: TrainingData, params: dict[str, Any], feature_set: str, trial: Any = None) -> dict[str, Any]:
    """Mean ROC AUC over the cross-validation splits (early-stopped per fold) and the mean best round count;
    with a trial, reports after each fold so the pruner can stop it."""
    import optuna
    from sklearn.metrics import roc_auc_score

    view = data.view(feature_set)
    aucs, rounds = [], []
    for step, split in enumerate(data.splits):
        x_valid, y_valid = view.x_train[split.valid], data.y_train[split.valid]
        booster = fit_booster(view, data.y_train, params, split.fit, rounds=MAX_ROUNDS, valid=(x_valid, y_valid))
        scores = booster.predict(x_valid, num_iteration=booster.best_iteration)
        aucs.append(float(roc_auc_score(y_valid, scores)))
        rounds.append(int(booster.best_iteration or booster.current_iteration()))
        if trial is not None:
            trial.report(float(np.mean(aucs)), step)
            if trial.should_prune():
                raise optuna.TrialPruned()
    return {"auc": float(np.mean(aucs)), "fold_aucs": aucs, "rounds": max(1, int(np.mean(rounds)))}


def study_name(dataset: str, metadata: SnapshotMetadata, seed: int) -> str:
    """One study per dataset, training rows and seed: a rerun with the same three resumes it."""
    return f"{dataset}-{(metadata.training_hash or metadata.content_hash)[:16]}-seed{seed}"


def open_study(settings: Settings, contract: DatasetContract, metadata: SnapshotMetadata, seed: int) -> Any:
    """The dataset's study for these training rows and seed, created or re-opened (a snapshot of another run date
    with the same training rows would have been skipped before this)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    settings.home.mkdir(parents=True, exist_ok=True)
    # Heartbeats let a resumed study mark the trial a killed process left RUNNING as FAILED (after the grace period).
    storage = optuna.storages.RDBStorage(settings.optuna_storage, heartbeat_interval=10, grace_period=60)
    return optuna.create_study(
        study_name=study_name(contract.name, metadata, seed),
        storage=storage,
        load_if_exists=True,
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=0),
    )


def close_interrupted_trial_runs(experiment_id: str, parent_run_id: str) -> None:
    """Nested trial runs a killed process left RUNNING are marked KILLED, so MLflow shows what happened."""
    import mlflow
    from mlflow import MlflowClient

    stale = mlflow.search_runs(
        experiment_ids=[experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}' and attributes.status = 'RUNNING'",
        output_format="list",
    )
    for run in stale:
        MlflowClient().set_terminated(run.info.run_id, status="KILLED")


def run_search(
    study: Any,
    data: TrainingData,
    seed: int,
    total_trials: int,
    timeout_seconds: int | None,
    experiment_id: str,
    on_trial: TrialCallback | None,
) -> None:
    """Run the trials still missing from the study; each trial is a nested MLflow run."""
    import mlflow
    import optuna

    feature_sets = list(data.feature_sets)

    def objective(trial: Any) -> float:
        params, feature_set = booster_params(seed, suggest_params(trial, feature_sets))
        with mlflow.start_run(run_name=f"trial-{trial.number}", nested=True, experiment_id=experiment_id):
            mlflow.log_params(trial.params)
            try:
                result = cross_validate(data, params, feature_set, trial)
            except optuna.TrialPruned:
                mlflow.set_tag("optuna.state", "pruned")
                raise
            trial.set_user_attr("rounds", result["rounds"])
            mlflow.log_metrics(
                {"cv_roc_auc": result["auc"], "rounds": result["rounds"]}
                | {f"fold{i}_roc_auc": a for i, a in enumerate(result["fold_aucs"])}
            )
            mlflow.set_tag("optuna.state", "complete")
        return result["auc"]

    def report(study: Any, trial: Any) -> None:
        if on_trial is not None:
            on_trial(len(study.trials), total_trials, trial.value)

    done = sum(t.state.is_finished() for t in study.trials)
    if done < total_trials:
        study.optimize(objective, n_trials=total_trials - done, timeout=timeout_seconds, callbacks=[report])
    if not any(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials):
        raise RuntimeError("no Optuna trial completed; raise the trial or time budget")
