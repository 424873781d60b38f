"""One run date's retraining decision, with the platform around it: the champion as the registry knows it (and
the data time it was trained at), the run's snapshot, the monitoring store, and the training run's MLflow tags.
The control itself is `churnops.monitoring.retrain` (pure over its inputs)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from churnops.config import Settings
from churnops.dataset import DatasetContract
from churnops.monitoring.retrain import TRIGGERS, ChampionState, decide_and_record
from churnops.monitoring.store import RetrainDecision


def champion_state(settings: Settings, model_name: str, dataset: str) -> ChampionState:
    """The registry's champion: version, evaluation ROC AUC (out of time, or holdout) and the data time it was
    trained at (the run date of its training snapshot; the registration time for models that record none)."""
    import mlflow

    from churnops.registry import champion_or_none

    version = champion_or_none(model_name)
    if version is None:
        return ChampionState(version=None)
    metadata = mlflow.models.get_model_info(f"models:/{model_name}/{version.version}").metadata or {}
    auc = metadata.get("out_of_time_metrics", {}).get("roc_auc")
    run_date = _training_run_date(settings, dataset, metadata)
    trained_at = (
        dt.datetime.combine(run_date, dt.time(), tzinfo=dt.UTC)
        if run_date is not None
        else dt.datetime.fromtimestamp(version.creation_timestamp / 1000, tz=dt.UTC)
    )
    return ChampionState(
        version=str(version.version),
        evaluation_roc_auc=auc,
        trained_at=trained_at,
        validation=metadata.get("validation", "out_of_time"),
    )


def _training_run_date(settings: Settings, dataset: str, metadata: dict[str, Any]) -> dt.date | None:
    """The run date of the snapshot a model was trained on, from its metadata or the snapshot it names."""
    from churnops.snapshots import METADATA_FILE, dataset_dir, read_metadata

    if metadata.get("run_date"):
        return dt.date.fromisoformat(metadata["run_date"])
    snapshot_hash = metadata.get("snapshot_hash")
    folder = dataset_dir(settings, dataset) / str(snapshot_hash)[:16] if snapshot_hash else None
    if folder is None or not (folder / METADATA_FILE).exists():
        return None
    run_date = read_metadata(folder).run_date
    return dt.date.fromisoformat(run_date) if run_date else None


def record_training_reason(training_run_id: str, reason: str, request: dict[str, Any] | None = None) -> None:
    """Tag a training run in MLflow with why it ran (`drift_detected`, `performance_drop`, `scheduled`, `manual`)."""
    from mlflow import MlflowClient

    if reason not in TRIGGERS:
        raise ValueError(f"unknown retraining reason {reason!r}; expected one of {TRIGGERS}")
    client = MlflowClient()
    client.set_tag(training_run_id, "churnops.retrain_reason", reason)
    if request and request.get("detail"):
        client.set_tag(training_run_id, "churnops.retrain_detail", str(request["detail"])[:5000])


def decide_for_run(
    settings: Settings,
    contract: DatasetContract,
    run_date: str | dt.date,
    *,
    retrain_running: bool,
    manual: bool = False,
    advisory: bool = False,
) -> list[RetrainDecision]:
    """The retraining decision of one run date of a dataset, at that date's midnight (UTC).

    Records every decision that did not fire (and, when `advisory`, the fired one as advice); a fired decision is
    left to whoever emits the request, through `record_decision`.
    """
    from churnops.monitoring.store import open_store
    from churnops.registry import configure_mlflow
    from churnops.snapshots import read_metadata, snapshot_dir_for

    day = run_date if isinstance(run_date, dt.date) else dt.date.fromisoformat(run_date)
    snapshot = read_metadata(snapshot_dir_for(settings, contract.name, day))
    newest_training_cutoff = max((dt.date.fromisoformat(c) for c in snapshot.cutoffs.get("train", [])), default=None)
    configure_mlflow(settings)
    return decide_and_record(
        open_store(settings),
        dataset=contract.name,
        champion=champion_state(settings, contract.model_name, contract.name),
        now=dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC),
        retrain_running=retrain_running,
        monitoring=settings.monitoring,
        manual=manual,
        run_date=day,
        advisory=advisory,
        record_fired=advisory,
        newest_training_cutoff=newest_training_cutoff,
    )
