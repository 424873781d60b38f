"""Feature DAG: daily, the features of the run's date — once the data has arrived.

1. `wait_for_data` ingests any new source files and waits until the events reach the day before the run date
   (`Settings.watermark`: tolerance, poke interval, timeout); on timeout it fails naming the last day seen.
2. `build_feature_snapshot` submits the PySpark feature job (jobs/features.py) for that date to the configured
   Spark master; unchanged data and definitions reuse the published snapshot without starting Spark.
3. `publish_online_features` records the ingestion counts and the scoring cutoff's features in PostgreSQL (full
   deployment) for `/predict` by customer_id, and emits the `FEATURES` Asset (its extra names the dataset and the
   run date), which wakes the drift DAG.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from airflow.sdk import dag, task
from common import (
    DEFAULT_ARGS,
    FEATURES,
    RUN_CALLBACKS,
    START_DATE,
    DataWatermarkSensor,
    FeatureJobOperator,
    dataset_param,
    run_date_param,
)


@dag(
    dag_id=Path(__file__).stem,
    doc_md=__doc__,
    schedule="@daily",
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    tags=["churnops", "features", "spark"],
    default_args=DEFAULT_ARGS,
    **RUN_CALLBACKS,
    params={"dataset": dataset_param(), "run_date": run_date_param()},
)
def churnops_features() -> None:
    wait_for_data = DataWatermarkSensor(task_id="wait_for_data")
    build_snapshot = FeatureJobOperator(
        task_id="build_feature_snapshot", target_task_id="wait_for_data", name="churnops-features"
    )

    @task(outlets=[FEATURES])
    def publish_online_features(target: dict[str, Any], outlet_events: Any = None) -> dict[str, Any]:
        """Per-file ingestion counts and the scoring cutoff's features into PostgreSQL (skipped when embedded)."""
        import datetime as dt

        from churnops.config import Settings
        from churnops.dataset import load_contract
        from churnops.snapshots import read_metadata, snapshot_dir_for

        settings = Settings()
        contract = load_contract(target["dataset"], settings)
        snapshot = read_metadata(snapshot_dir_for(settings, contract.name, dt.date.fromisoformat(target["run_date"])))
        # The drift DAG this event starts works on the same dataset (a contract YAML path travels as given) and date.
        outlet_events[FEATURES].extra = {**target, "snapshot_id": snapshot.snapshot_id}
        if settings.database_url is None:
            return {**target, "snapshot_id": snapshot.snapshot_id, "online_rows": None}
        from churnops.bronze import read_manifest
        from churnops.jobs.ingest import record_ingestion_reports
        from churnops.online_store import publish_latest_snapshot

        manifest = read_manifest(settings, contract.name) if contract.events is not None else None
        if manifest is not None:
            # One row per source file version, keyed by its fingerprint: recording them again changes nothing.
            record_ingestion_reports(settings, manifest)
        rows = publish_latest_snapshot(settings, contract.name)
        return {**target, "snapshot_id": snapshot.snapshot_id, "online_rows": rows}

    wait_for_data >> build_snapshot
    build_snapshot >> publish_online_features(wait_for_data.output)


churnops_features()
