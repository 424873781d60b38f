"""Feature DAG: submits the PySpark feature job (jobs/features.py) to the configured Spark master.

The job writes a content-hashed feature snapshot; its scoring-cutoff rows are then published to the online feature
table (PostgreSQL, full deployment) for `/predict` by customer_id, and the `FEATURES` Asset (its extra names
the dataset) wakes the drift DAG.
Locally the Spark connection is `local[*]`; in the full deployment it is the standalone master.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from airflow.sdk import dag, task
from common import DEFAULT_ARGS, FEATURES, RUN_CALLBACKS, START_DATE, dataset_param, feature_job

from churnops.config import Settings

_settings = Settings()


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
    params={"dataset": dataset_param(_settings.dataset)},
)
def churnops_features() -> None:
    build_snapshot = feature_job("build_feature_snapshot", "churnops-features")

    @task(outlets=[FEATURES])
    def publish_online_features(params: dict[str, Any] | None = None, outlet_events: Any = None) -> int | None:
        """Per-file ingestion counts and the scoring cutoff's features into PostgreSQL (skipped when embedded)."""
        # The drift DAG this event starts works on the same dataset (a contract YAML path travels as given).
        outlet_events[FEATURES].extra = {"dataset": params["dataset"]}
        settings = Settings()
        if settings.database_url is None:
            return None
        from churnops.bronze import read_manifest
        from churnops.dataset import load_contract
        from churnops.online_store import publish_latest_snapshot
        from jobs.ingest import record_ingestion_reports

        contract = load_contract(params["dataset"], settings)
        manifest = read_manifest(settings, contract.name) if contract.events is not None else None
        if manifest is not None:
            # One row per source file version, keyed by its fingerprint: recording them again changes nothing.
            record_ingestion_reports(settings, manifest)
        return publish_latest_snapshot(settings, contract.name)

    build_snapshot >> publish_online_features()


churnops_features()
