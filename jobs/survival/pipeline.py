"""The survival model inside the training job: frames from the churn training's rows, the Optuna search in nested
MLflow runs, out-of-time evaluation beside Cox PH, registration without pickle, and the champion gate.

Called by one line of `churnops.jobs.training.job.train`; does nothing for a dataset without a `survival:` section.
The rows are the churn training's own: its training cutoffs (follow-up censored the day before the out-of-time
cutoff, `out_of_time_targets`) to learn from, its out-of-time cutoff (followed up to the snapshot's last observed
day) to evaluate on. A customer without a purchase by the end of the follow-up is censored there, never a non-buyer.
The registered model is `<churn model name>-survival`; `champion` moves only when the new version's C-index on the
evaluation cutoff beats the current champion's on the same rows.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from churnops.bronze import BronzeMissingError, read_bronze_events
from churnops.config import Settings
from churnops.dataset import DatasetContract
from churnops.features import CUTOFF, ENTITY_ID
from churnops.jobs.survival.boosting import HazardBoostingModel
from churnops.jobs.survival.data import (
    DURATION,
    EVENT,
    EVENT_DAY,
    EVENT_TYPE,
    out_of_time_targets,
    survival_frame,
    survival_targets,
)
from churnops.jobs.survival.metrics import SurvivalPredictions, restricted_mean_days, survival_metrics
from churnops.jobs.survival.model_store import load_survival_version, log_survival_model
from churnops.jobs.survival.tune import fit_setup, search, split_params, time_folds
from churnops.registry import CHALLENGER_ALIAS, CHAMPION_ALIAS, champion_or_none, ensure_experiment
from churnops.schema import FeatureSchema
from churnops.snapshots import SnapshotMetadata

if TYPE_CHECKING:  # the training job imports this module: a run-time import back would be circular
    from churnops.jobs.training.data import TrainingData

log = logging.getLogger(__name__)

# Validation cutoffs of the time folds: the last training cutoffs (each fold learns from the ones before it).
FOLD_COUNT = 2
SURVIVAL_KEY_TAG = "churnops.survival_learning_key"
BOOSTED, COX = "LightGBM hazard", "Cox PH (6 RFM covariates)"


@dataclass(frozen=True)
class SurvivalFrames:
    training: pd.DataFrame
    evaluated: pd.DataFrame
    schema: FeatureSchema
    evaluation_cutoff: dt.date
    data_end: dt.date


@dataclass(frozen=True)
class SurvivalTrainingResult:
    model_name: str
    model_version: str
    run_id: str
    metrics: dict[str, float] = field(default_factory=dict)
    baseline_metrics: dict[str, float] = field(default_factory=dict)
    promoted: bool = False
    reason: str = ""
    skipped: bool = False


class SurvivalDataUnavailableError(ValueError):
    """The snapshot does not carry what a survival target needs (the survival step is skipped, not failed)."""


def survival_frames(
    settings: Settings, contract: DatasetContract, data: TrainingData, metadata: SnapshotMetadata
) -> SurvivalFrames:
    """The churn training's rows with survival targets: training cutoffs censored before the evaluation cutoff,
    the evaluation cutoff followed up to the snapshot's last observed day."""
    if data.eval_cutoff is None or not metadata.observed_until:
        raise SurvivalDataUnavailableError(
            f"dataset {contract.name!r}: the survival model needs out-of-time event data (an evaluation cutoff and "
            f"the snapshot's last observed day; snapshot {metadata.snapshot_id} has "
            f"{'no evaluation cutoff' if data.eval_cutoff is None else 'no observed_until'})"
        )
    evaluation_cutoff = dt.date.fromisoformat(data.eval_cutoff)
    data_end = dt.date.fromisoformat(metadata.observed_until) - dt.timedelta(days=1)
    event_type = contract.survival_event_type
    columns = [ENTITY_ID, EVENT_DAY, *([EVENT_TYPE] if event_type else [])]
    events = read_bronze_events(settings, contract.name, columns=columns, last_day=data_end)
    train_cutoffs = [pd.Timestamp(c).date() for c in data.train_cutoffs]
    targets = pd.concat(
        [
            out_of_time_targets(events, train_cutoffs, evaluation_cutoff, event_type),
            survival_targets(events, [evaluation_cutoff], data_end, event_type),
        ],
        ignore_index=True,
    )
    features = pd.concat([data.train, data.eval], ignore_index=True)
    # A customer known from the entity table but without any event before the cutoff has no "next" event to time.
    keys = pd.MultiIndex.from_arrays([targets[ENTITY_ID].astype(str), pd.to_datetime(targets[CUTOFF])])
    rows = pd.MultiIndex.from_arrays([features[ENTITY_ID].astype(str), pd.to_datetime(features[CUTOFF])])
    frame = survival_frame(features[rows.isin(keys)], targets)
    at_evaluation = pd.to_datetime(frame[CUTOFF]) == pd.Timestamp(evaluation_cutoff)
    training = frame[~at_evaluation].reset_index(drop=True)
    evaluated = frame[at_evaluation].reset_index(drop=True)
    if training[EVENT].sum() == 0 or evaluated.empty:
        raise ValueError(
            f"dataset {contract.name!r}: the survival model needs observed events in the training rows "
            f"({int(training[EVENT].sum())}) and evaluation rows ({len(evaluated)}); check survival.event_type"
        )
    schema = FeatureSchema.fit(training, data.numeric, data.categorical)
    return SurvivalFrames(training, evaluated, schema, evaluation_cutoff, data_end)


def curves(model: HazardBoostingModel, frame: pd.DataFrame, days: np.ndarray) -> SurvivalPredictions:
    survival = model.survival(frame, days)
    return SurvivalPredictions(days=days, survival=survival, risk=-restricted_mean_days(survival, days))


def learning_key(metadata: SnapshotMetadata, contract: DatasetContract, frames: SurvivalFrames, seed: int) -> str:
    """What a survival version learned from: the training rows, the evaluation cutoff, the section, the seed."""
    assert contract.survival is not None
    section = contract.survival.model_dump_json()
    text = f"{metadata.training_hash}|{frames.evaluation_cutoff}|{section}|{seed}"
    return hashlib.sha256(text.encode()).hexdigest() if metadata.training_hash else ""


def _version_with_key(name: str, key: str) -> str | None:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    if not key:
        return None
    try:
        versions = MlflowClient().search_model_versions(f"name = '{name}'")
    except MlflowException:
        return None
    return next((str(v.version) for v in versions if v.tags.get(SURVIVAL_KEY_TAG) == key), None)


def champion_c_index(name: str, evaluated: pd.DataFrame, days: np.ndarray) -> tuple[str | None, float | None, str]:
    """(version, C-index on the evaluated rows, note) of the current survival champion; (None, None, why) when
    there is none or it cannot be scored."""
    from churnops.jobs.survival.metrics import harrell_c_index

    current = champion_or_none(name)
    if current is None:
        return None, None, "no survival champion yet"
    try:
        model, _ = load_survival_version(name, str(current.version))
        risk = curves(model, evaluated, days).risk
    except (ValueError, KeyError, OSError) as error:
        return str(current.version), None, f"champion v{current.version} could not be scored: {error}"
    score = harrell_c_index(evaluated[DURATION].to_numpy(), evaluated[EVENT].to_numpy(), risk)
    return str(current.version), score, f"champion v{current.version} C-index {score:.4f}"


def promote_survival(c_index: float, champion_version: str | None, champion_c_index: float | None) -> bool:
    """The survival gate: promote when there is no champion, or when the new C-index beats the champion's on the
    same evaluation rows; a champion that could not be scored (`champion_c_index` None) is never replaced blind."""
    if champion_version is None:
        return True
    return champion_c_index is not None and c_index > champion_c_index


def _log_trial(experiment_id: str, number: int, params: dict[str, Any], result: dict[str, Any]) -> None:
    import mlflow

    # The experiment named: a nested run otherwise goes to the active experiment, not its parent's.
    with mlflow.start_run(nested=True, run_name=f"survival-trial-{number}", experiment_id=experiment_id):
        mlflow.set_tag("churnops.kind", "survival_trial")
        mlflow.log_params(params)
        metrics = {f"fold_{i}_c_index": v for i, v in enumerate(result["c_index"])}
        mlflow.log_metrics({**metrics, "cv_c_index": float(np.mean(result["c_index"]))})
        mlflow.log_metric("rounds", float(np.mean(result["rounds"])))


def _baseline(frames: SurvivalFrames, days: np.ndarray) -> SurvivalPredictions | None:
    from churnops.jobs.survival.classical import fit_lifelines_baseline

    try:
        return fit_lifelines_baseline(frames.training, "cox").predict(frames.evaluated, days)
    except ValueError as error:  # no RFM columns (a contract without amounts), or a degenerate fit
        log.warning("Cox PH baseline skipped: %s", error)
        return None


def train_survival_model(
    settings: Settings, contract: DatasetContract, data: TrainingData, metadata: SnapshotMetadata
) -> SurvivalTrainingResult | None:
    """Train, evaluate, register and gate the dataset's survival model; None when its contract has no `survival`."""
    if contract.survival is None or data.validation != "out_of_time":
        return None
    import mlflow

    try:
        frames = survival_frames(settings, contract, data, metadata)
    except (BronzeMissingError, SurvivalDataUnavailableError) as error:
        # A snapshot trained away from its event log (a copied features folder), or one without the out-of-time
        # follow-up a survival target needs: the churn model is trained all the same.
        log.warning("survival model of %s not trained: %s", contract.name, error)
        return None
    name, seed = contract.survival_model_name, settings.training.seed
    key = learning_key(metadata, contract, frames, seed)
    same = _version_with_key(name, key)
    if same is not None:
        log.info("survival training of %s skipped: v%s learned from the same rows", contract.name, same)
        return SurvivalTrainingResult(name, same, "", skipped=True, reason=f"v{same} learned from the same rows")
    cutoffs = sorted(pd.to_datetime(frames.training[CUTOFF]).dt.date.unique())
    if len(cutoffs) < 2:
        raise ValueError(f"dataset {contract.name!r}: the survival search needs two training cutoffs, has {cutoffs}")
    folds = time_folds(frames.training, cutoffs[-min(FOLD_COUNT, len(cutoffs) - 1) :])
    last_bin_start = int(frames.training[DURATION].max())
    days = np.arange(1, int(frames.evaluated[DURATION].max()) + 1)
    horizons = contract.survival.horizons
    experiment_id = ensure_experiment(settings, contract)
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"train-{contract.name}-survival") as run:
        mlflow.set_tags(
            {
                "churnops.dataset": contract.name,
                "churnops.kind": "survival_training",
                "churnops.training_hash": metadata.training_hash,
                "churnops.evaluation_cutoff": str(frames.evaluation_cutoff),
                "churnops.data_end": str(frames.data_end),
            }
        )
        found = search(
            folds,
            frames.schema,
            contract.survival.trials,
            seed,
            last_bin_start,
            on_trial=partial(_log_trial, experiment_id),
        )
        setup = split_params(found.best_params, seed, last_bin_start)
        model, _ = fit_setup(setup, frames.training, frames.schema, found.best_rounds)
        predicted = curves(model, frames.evaluated, days)
        metrics = survival_metrics(frames.evaluated, predicted, horizons)
        cox = _baseline(frames, days)
        cox_metrics = survival_metrics(frames.evaluated, cox, horizons) if cox is not None else {}
        mlflow.log_params({f"best_{k}": v for k, v in found.best_params.items()} | {"rounds": found.best_rounds})
        mlflow.log_metrics({f"survival_{k}": v for k, v in metrics.items()} | {"cv_c_index": found.best_cv_c_index})
        mlflow.log_metrics({f"cox_{k}": v for k, v in cox_metrics.items()})
        _log_report(settings, contract, run.info.run_id, frames, {BOOSTED: predicted, COX: cox}, metrics, cox_metrics)
        champion_version, champion_score, note = champion_c_index(name, frames.evaluated, days)
        promoted = promote_survival(metrics["c_index"], champion_version, champion_score)
        reason = f"C-index {metrics['c_index']:.4f} on {frames.evaluation_cutoff}; {note}"
        version = log_survival_model(
            model, registered_model_name=name, metadata=_metadata(contract, frames, metrics, cox_metrics, run, key)
        )
        _apply_aliases(name, version, promoted, reason, key)
        mlflow.set_tags({"churnops.model_version": version, "churnops.promoted": str(promoted).lower()})
        mlflow.set_tag("churnops.promotion_reason", reason)
    log.info("trained %s v%s: %s; promoted: %s", name, version, reason, promoted)
    return SurvivalTrainingResult(name, version, run.info.run_id, metrics, cox_metrics, promoted, reason)


def _metadata(
    contract: DatasetContract,
    frames: SurvivalFrames,
    metrics: dict[str, float],
    cox_metrics: dict[str, float],
    run: Any,
    key: str,
) -> dict[str, Any]:
    assert contract.survival is not None
    return {
        "dataset": contract.name,
        "horizons_days": list(contract.survival.horizons),
        "event_type": contract.survival_event_type,
        "evaluation_cutoff": str(frames.evaluation_cutoff),
        "data_end": str(frames.data_end),
        "evaluation_metrics": metrics,
        "cox_metrics": cox_metrics,
        "training_run_id": run.info.run_id,
        "learning_key": key,
    }


def _apply_aliases(name: str, version: str, promoted: bool, reason: str, key: str) -> None:
    from mlflow import MlflowClient

    client = MlflowClient()
    client.set_model_version_tag(name, version, SURVIVAL_KEY_TAG, key)
    client.set_model_version_tag(name, version, "churnops.promotion_reason", reason)
    client.set_registered_model_alias(name, CHALLENGER_ALIAS, version)
    if promoted:
        client.set_registered_model_alias(name, CHAMPION_ALIAS, version)


def _log_report(
    settings: Settings,
    contract: DatasetContract,
    run_id: str,
    frames: SurvivalFrames,
    predictions: dict[str, SurvivalPredictions | None],
    metrics: dict[str, float],
    cox_metrics: dict[str, float],
) -> None:
    """Kaplan-Meier by risk band against the predicted curves and the metrics table, as MLflow artifacts."""
    import mlflow

    from churnops.jobs.survival.report import metrics_markdown, plot_km_by_band

    folder = report_folder(settings, contract.name, run_id)
    folder.mkdir(parents=True, exist_ok=True)
    shown = {k: v for k, v in predictions.items() if v is not None}
    title = f"{contract.name}: evaluation cutoff {frames.evaluation_cutoff}, follow-up to {frames.data_end}"
    plot_km_by_band(frames.evaluated, shown, folder / "km_by_band.png", title)
    table = {BOOSTED: metrics, **({COX: cox_metrics} if cox_metrics else {})}
    columns = tuple(k for k in metrics if not k.startswith("calibration"))
    lines = [f"# Survival model, {title}", "", *metrics_markdown(table, columns), ""]
    (folder / "metrics.md").write_text("\n".join(lines))
    mlflow.log_artifacts(str(folder), artifact_path="survival_report")


def report_folder(settings: Settings, dataset: str, run_id: str) -> Path:
    """Where a survival training's report is written before it is logged to its MLflow run."""
    return settings.home / "reports" / dataset / "survival" / run_id
