"""The training job: an Optuna study over LightGBM, every trial a nested MLflow run, the best model evaluated out of
time, registered, and promoted to `champion` only if it beats the current one.

Honest by construction: cross-validation folds are split by cutoff and each fold trains only on cutoffs whose
labels were fully known before its validation cutoff; the out-of-time cutoff is never seen during the search.
The study lives in an RDB keyed by snapshot and seed, so a killed task resumes it on retry.
"""

from __future__ import annotations

import datetime as dt
import logging
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from churnops.config import Settings
from churnops.dataset import DatasetContract
from churnops.features import CUTOFF, LABEL, model_feature_columns
from churnops.registry import (
    CHALLENGER_ALIAS,
    CHAMPION_ALIAS,
    LoadedModel,
    configure_mlflow,
    ensure_experiment,
    load_model_version,
)
from churnops.schema import FeatureSchema
from churnops.snapshots import SnapshotMetadata, latest_snapshot_dir, load_snapshot
from jobs.evaluate import binary_metrics, f1_threshold

log = logging.getLogger(__name__)

TrialCallback = Callable[[int, int, float | None], None]


@dataclass(frozen=True)
class Fold:
    fit_cutoffs: tuple[pd.Timestamp, ...]
    valid_cutoff: pd.Timestamp


@dataclass(frozen=True)
class PromotionDecision:
    promoted: bool
    reason: str
    champion_version: str | None
    champion_auc: float | None


@dataclass(frozen=True)
class TrainingResult:
    model_name: str
    model_version: str
    run_id: str
    best_params: dict[str, Any]
    out_of_time_metrics: dict[str, float]
    threshold: float
    n_trials: int
    decision: PromotionDecision
    snapshot_id: str


def time_folds(train_cutoffs: list[pd.Timestamp], horizon_days: int, n_folds: int) -> list[Fold]:
    """Expanding-window folds: validate on each of the last `n_folds` cutoffs, fit on cutoffs whose labels ended
    before it (cutoff + horizon <= validation cutoff), so no fold learns from the future it is scored on."""
    horizon = pd.Timedelta(days=horizon_days)
    folds = []
    for valid in sorted(train_cutoffs)[-n_folds:]:
        fit = tuple(c for c in sorted(train_cutoffs) if c + horizon <= valid)
        if fit:
            folds.append(Fold(fit_cutoffs=fit, valid_cutoff=valid))
    if not folds:
        raise ValueError(
            f"no time fold possible: the training cutoffs {[c.date() for c in train_cutoffs]} are closer together "
            f"than the {horizon_days}-day horizon; add earlier cutoffs to the dataset contract"
        )
    return folds


def _base_params(seed: int) -> dict[str, Any]:
    return {
        "objective": "binary",
        "metric": "auc",
        "verbosity": -1,
        "seed": seed,
        "deterministic": True,
        "force_col_wise": True,
        "num_threads": 2,
    }


def _suggest_params(trial: Any) -> dict[str, Any]:
    return {
        "learning_rate": trial.suggest_float("learning_rate", 0.01, 0.2, log=True),
        "num_leaves": trial.suggest_int("num_leaves", 4, 64, log=True),
        "min_child_samples": trial.suggest_int("min_child_samples", 10, 200, log=True),
        "feature_fraction": trial.suggest_float("feature_fraction", 0.4, 1.0),
        "bagging_fraction": trial.suggest_float("bagging_fraction", 0.5, 1.0),
        "bagging_freq": 1,
        "lambda_l2": trial.suggest_float("lambda_l2", 1e-3, 10.0, log=True),
        "scale_pos_weight": trial.suggest_float("scale_pos_weight", 1.0, 10.0, log=True),
    }


def _git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            cwd=Path(__file__).parent,
            check=True,
        )
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


class _Data:
    """The snapshot split by cutoff role and encoded once."""

    def __init__(self, frame: pd.DataFrame, metadata: SnapshotMetadata, contract: DatasetContract) -> None:
        numeric, categorical = model_feature_columns(contract)
        cutoffs = {role: [pd.Timestamp(d) for d in dates] for role, dates in metadata.cutoffs.items()}
        labelled = frame[frame["label_available"]]
        self.train = labelled[labelled[CUTOFF].isin(cutoffs["train"])].reset_index(drop=True)
        self.oot = labelled[labelled[CUTOFF].isin(cutoffs["out_of_time"])].reset_index(drop=True)
        if self.train.empty or self.oot.empty:
            raise ValueError(
                f"snapshot {metadata.snapshot_id} has no labelled rows for training ({len(self.train)}) or for the "
                f"out-of-time cutoff ({len(self.oot)})"
            )
        self.train_cutoffs = cutoffs["train"]
        self.oot_cutoff = cutoffs["out_of_time"][0]
        self.schema = FeatureSchema.fit(self.train, numeric, categorical)
        self.x_train = self.schema.encode_frame(self.train)
        self.y_train = self.train[LABEL].to_numpy(dtype=np.int64)
        self.x_oot = self.schema.encode_frame(self.oot)
        self.y_oot = self.oot[LABEL].to_numpy(dtype=np.int64)

    def rows(self, cutoffs: tuple[pd.Timestamp, ...] | list[pd.Timestamp]) -> np.ndarray:
        return self.train[CUTOFF].isin(list(cutoffs)).to_numpy()


def _fit(
    data: _Data, params: dict[str, Any], mask: np.ndarray, valid_mask: np.ndarray | None, rounds: int
) -> Any:
    import lightgbm as lgb

    cat = data.schema.categorical_indices
    train_set = lgb.Dataset(
        data.x_train[mask],
        data.y_train[mask],
        feature_name=data.schema.columns,
        categorical_feature=cat,
        free_raw_data=False,
    )
    if valid_mask is None:
        return lgb.train(params, train_set, num_boost_round=rounds)
    valid_set = lgb.Dataset(data.x_train[valid_mask], data.y_train[valid_mask], reference=train_set)
    return lgb.train(
        params,
        train_set,
        num_boost_round=rounds,
        valid_sets=[valid_set],
        callbacks=[lgb.early_stopping(stopping_rounds=50, verbose=False)],
    )


def _cross_validate(
    data: _Data, folds: list[Fold], params: dict[str, Any], trial: Any = None
) -> dict[str, Any]:
    import optuna
    from sklearn.metrics import roc_auc_score

    aucs, rounds, last_scores, last_labels = [], [], None, None
    for step, fold in enumerate(folds):
        fit_mask, valid_mask = data.rows(fold.fit_cutoffs), data.rows([fold.valid_cutoff])
        booster = _fit(data, params, fit_mask, valid_mask, rounds=1000)
        scores = booster.predict(data.x_train[valid_mask], num_iteration=booster.best_iteration)
        aucs.append(float(roc_auc_score(data.y_train[valid_mask], scores)))
        rounds.append(int(booster.best_iteration or booster.current_iteration()))
        last_scores, last_labels = scores, data.y_train[valid_mask]
        if trial is not None:
            trial.report(float(np.mean(aucs)), step)
            if trial.should_prune():
                raise optuna.TrialPruned()
    return {
        "auc": float(np.mean(aucs)),
        "fold_aucs": aucs,
        "rounds": int(np.mean(rounds)),
        "last_scores": last_scores,
        "last_labels": last_labels,
    }


def train(
    settings: Settings,
    contract: DatasetContract,
    snapshot_dir: Path | None = None,
    n_trials: int | None = None,
    on_trial: TrialCallback | None = None,
) -> TrainingResult:
    """Search, fit, evaluate out of time, register, and run the champion gate for one dataset."""
    import mlflow
    import optuna
    from mlflow.models import infer_signature

    snapshot_dir = snapshot_dir or latest_snapshot_dir(settings, contract.name)
    frame, metadata = load_snapshot(snapshot_dir)
    data = _Data(frame, metadata, contract)
    folds = time_folds(data.train_cutoffs, contract.label.horizon_days, settings.training.cv_folds)
    seed = settings.training.seed
    total_trials = n_trials or settings.training.n_trials

    configure_mlflow(settings)
    experiment_id = ensure_experiment(settings, contract)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    settings.home.mkdir(parents=True, exist_ok=True)
    study = optuna.create_study(
        study_name=f"{contract.name}-{metadata.snapshot_id}-seed{seed}",
        storage=settings.optuna_storage,
        load_if_exists=True,
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=0),
    )
    # A retried task re-enters the same parent run, so its trials stay under one training in MLflow.
    parent_run_id = study.user_attrs.get("mlflow_parent_run_id")
    parent = mlflow.start_run(
        run_id=parent_run_id,
        experiment_id=experiment_id,
        run_name=None if parent_run_id else f"train-{contract.name}",
    )
    with parent:
        study.set_user_attr("mlflow_parent_run_id", parent.info.run_id)
        mlflow.set_tags(
            {
                "churnops.dataset": contract.name,
                "churnops.snapshot_hash": metadata.content_hash,
                "churnops.git_commit": _git_commit(),
                "churnops.kind": "training",
            }
        )

        def objective(trial: Any) -> float:
            params = {**_base_params(seed), **_suggest_params(trial)}
            with mlflow.start_run(run_name=f"trial-{trial.number}", nested=True, experiment_id=experiment_id):
                mlflow.log_params(trial.params)
                try:
                    result = _cross_validate(data, folds, params, trial)
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

        remaining = total_trials - sum(t.state.is_finished() for t in study.trials)
        if remaining > 0:
            study.optimize(
                objective, n_trials=remaining, timeout=settings.training.timeout_seconds, callbacks=[report]
            )

        best = study.best_trial
        params = {**_base_params(seed), **best.params, "bagging_freq": 1}
        rounds = int(best.user_attrs["rounds"])
        # The threshold comes from the last validation fold, never from the out-of-time data.
        last_fold = _cross_validate(data, folds[-1:], params)
        threshold = f1_threshold(last_fold["last_labels"], last_fold["last_scores"])
        booster = _fit(data, params, np.ones(len(data.y_train), dtype=bool), None, rounds=rounds)
        oot_scores = booster.predict(data.x_oot)
        oot_metrics = binary_metrics(data.y_oot, oot_scores)

        mlflow.log_params({f"best_{k}": v for k, v in best.params.items()} | {"best_rounds": rounds})
        mlflow.log_metrics(
            {f"oot_{k}": v for k, v in oot_metrics.items()}
            | {"best_cv_roc_auc": best.value, "threshold": threshold, "n_trials": len(study.trials)}
        )
        example = pd.DataFrame(data.x_oot[:5], columns=data.schema.columns)
        model_metadata = {
            "feature_schema": data.schema.to_dict(),
            "threshold": threshold,
            "dataset": contract.name,
            "snapshot_hash": metadata.content_hash,
            "out_of_time_cutoff": data.oot_cutoff.date().isoformat(),
            "out_of_time_metrics": oot_metrics,
            "training_run_id": parent.info.run_id,
            "git_commit": _git_commit(),
        }
        info = mlflow.lightgbm.log_model(
            booster,
            name="model",
            signature=infer_signature(example, oot_scores[:5]),
            input_example=example,
            registered_model_name=contract.model_name,
            metadata=model_metadata,
            pip_requirements=[f"lightgbm=={__import__('lightgbm').__version__}"],
        )
        version = str(info.registered_model_version)
        decision = _champion_gate(settings, contract, data, version, oot_metrics)
        mlflow.set_tags(
            {
                "churnops.promoted": str(decision.promoted).lower(),
                "churnops.promotion_reason": decision.reason,
                "churnops.model_version": version,
            }
        )
        run_id = parent.info.run_id

    log.info(
        "trained %s v%s: out-of-time ROC AUC %.4f; %s",
        contract.model_name,
        version,
        oot_metrics["roc_auc"],
        decision.reason,
    )
    return TrainingResult(
        model_name=contract.model_name,
        model_version=version,
        run_id=run_id,
        best_params=dict(best.params),
        out_of_time_metrics=oot_metrics,
        threshold=threshold,
        n_trials=len(study.trials),
        decision=decision,
        snapshot_id=metadata.snapshot_id,
    )


def _champion_gate(
    settings: Settings, contract: DatasetContract, data: _Data, version: str, metrics: dict[str, float]
) -> PromotionDecision:
    """Mark the new version `challenger`; move `champion` to it only if it beats the champion on the same data."""
    from mlflow import MlflowClient

    client = MlflowClient()
    name = contract.model_name
    client.set_registered_model_alias(name, CHALLENGER_ALIAS, version)
    new_auc = metrics["roc_auc"]
    champion: LoadedModel | None = None
    try:
        champion_version = client.get_model_version_by_alias(name, CHAMPION_ALIAS).version
        champion = load_model_version(name, str(champion_version))
    except Exception as error:  # no champion yet, or its artifact is unreadable
        if "not found" not in str(error).lower() and "RESOURCE_DOES_NOT_EXIST" not in str(error):
            log.warning("current champion of %s cannot be loaded (%s); treating as absent", name, error)

    champion_auc = None
    if new_auc < settings.training.min_auc:
        decision = PromotionDecision(
            False,
            f"out-of-time ROC AUC {new_auc:.4f} is below the floor {settings.training.min_auc}",
            champion and champion.version,
            None,
        )
    elif champion is None:
        decision = PromotionDecision(True, "no champion yet", None, None)
    else:
        missing = set(champion.schema.columns) - set(data.oot.columns)
        if missing:
            decision = PromotionDecision(
                True,
                f"champion v{champion.version} needs features the data no longer has: {sorted(missing)}",
                champion.version,
                None,
            )
        else:
            champion_scores = champion.predict_matrix(champion.schema.encode_frame(data.oot))
            champion_auc = binary_metrics(data.y_oot, champion_scores)["roc_auc"]
            margin = settings.training.promotion_margin
            beats = new_auc > champion_auc + margin
            verdict = "beats" if beats else "does not beat"
            decision = PromotionDecision(
                beats,
                f"out-of-time ROC AUC {new_auc:.4f} {verdict} champion v{champion.version}'s {champion_auc:.4f} "
                f"on the same customers by more than {margin}",
                champion.version,
                champion_auc,
            )
    if decision.promoted:
        client.set_registered_model_alias(name, CHAMPION_ALIAS, version)
    for key, value in {
        "promoted": str(decision.promoted).lower(),
        "promotion_reason": decision.reason,
        "decided_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }.items():
        client.set_model_version_tag(name, version, key, value)
    return decision
