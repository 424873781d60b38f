"""Nothing new to learn: a snapshot whose training rows are those a registered version already learned from is not
trained again, so a scheduled or repeated retraining never registers a duplicate version.

The rows training reads are fingerprinted by the snapshot (`SnapshotMetadata.training_hash`) and the fingerprint is
tagged on every registered version; a skip is recorded as an MLflow run of its own, tagged
`churnops.outcome=skipped`, so a timeline can tell "no training" from "nothing to train on".
"""

from __future__ import annotations

import logging

from churnops.config import Settings
from churnops.dataset import DatasetContract
from churnops.registry import ensure_experiment
from churnops.snapshots import SnapshotMetadata

log = logging.getLogger(__name__)

# The registered version's tag naming the training rows it learned from (SnapshotMetadata.training_hash).
TRAINING_HASH_TAG = "training_hash"


def version_trained_on(model_name: str, training_hash: str) -> str | None:
    """The registered version that learned from exactly these training rows, if any."""
    from mlflow import MlflowClient

    if not training_hash:
        return None
    for version in MlflowClient().search_model_versions(f"name = '{model_name}'"):
        if version.tags.get(TRAINING_HASH_TAG) == training_hash:
            return str(version.version)
    return None


def tag_training_rows(model_name: str, version: str, training_hash: str) -> None:
    from mlflow import MlflowClient

    MlflowClient().set_model_version_tag(model_name, version, TRAINING_HASH_TAG, training_hash)


def record_skip(
    settings: Settings, contract: DatasetContract, metadata: SnapshotMetadata, version: str, reason: str | None
) -> tuple[str, str]:
    """Record the skipped training as an MLflow run (tagged, no model); return (run id, why)."""
    import mlflow

    why = (
        f"no new data: the training rows of snapshot {metadata.snapshot_id} (run date {metadata.run_date}) are "
        f"those v{version} learned from"
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
