"""Nothing new to learn: a training whose rows and search are those a registered version already came from is not
run again, so a scheduled or repeated retraining never registers a duplicate version.

The rows training reads are fingerprinted by the snapshot (`SnapshotMetadata.training_hash`); with the search
settings (seed, trials, folds, threshold rule: a different search on the same rows is a new model, an operator's
deliberate choice) they make the learning key tagged on every registered version. A skip is recorded as an MLflow
run of its own, tagged `churnops.outcome=skipped`, so a timeline can tell "no training" from "nothing to train on".
"""

from __future__ import annotations

import hashlib
import logging

from churnops.config import Settings, TrainingSettings
from churnops.dataset import DatasetContract
from churnops.registry import ensure_experiment
from churnops.snapshots import SnapshotMetadata

log = logging.getLogger(__name__)

# The registered version's tag holding its learning key (`learning_key`).
LEARNING_KEY_TAG = "learned_from"
# Settings that decide whether a model is promoted, not what it learns: changing them does not retrain.
_GATE_SETTINGS = frozenset(
    {
        "promotion_margin",
        "promotion_significance_level",
        "promotion_brier_tolerance",
        "promotion_log_loss_tolerance",
        "min_auc",
    }
)


def learning_key(training_hash: str, training: TrainingSettings) -> str:
    """What a registered version learned from: the training rows' fingerprint and the search settings ("" when the
    snapshot has no training fingerprint: always train)."""
    if not training_hash:
        return ""
    # An unset row budget leaves the key as it was before the budget existed (no retraining after an upgrade).
    unset = {"max_rows_per_cutoff"} if training.max_rows_per_cutoff is None else set()
    search = training.model_dump_json(exclude=set(_GATE_SETTINGS) | unset)
    return hashlib.sha256(f"{training_hash}|{search}".encode()).hexdigest()


def version_trained_on(model_name: str, key: str) -> str | None:
    """The registered version with this learning key, if any."""
    from mlflow import MlflowClient

    if not key:
        return None
    for version in MlflowClient().search_model_versions(f"name = '{model_name}'"):
        if version.tags.get(LEARNING_KEY_TAG) == key:
            return str(version.version)
    return None


def tag_learning_key(model_name: str, version: str, key: str) -> None:
    from mlflow import MlflowClient

    MlflowClient().set_model_version_tag(model_name, version, LEARNING_KEY_TAG, key)


def record_skip(
    settings: Settings, contract: DatasetContract, metadata: SnapshotMetadata, version: str, reason: str | None
) -> tuple[str, str]:
    """Record the skipped training as an MLflow run (tagged, no model); return (run id, why)."""
    import mlflow

    why = (
        f"no new data: the training rows of snapshot {metadata.snapshot_id} (run date {metadata.run_date}) are "
        f"those v{version} learned from, with the same search settings"
    )
    experiment_id = ensure_experiment(settings, contract)
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"skip-{contract.name}") as run:
        mlflow.set_tags(
            {
                "churnops.dataset": contract.name,
                "churnops.kind": "training",
                "churnops.outcome": "skipped",
                "churnops.skip_reason": why,
                "churnops.model_version": version,
                "churnops.training_hash": metadata.training_hash,
                "churnops.run_date": metadata.run_date or "",
                "churnops.retrain_reason": reason or "",
            }
        )
    log.info("training of %s skipped: %s", contract.name, why)
    return run.info.run_id, why
