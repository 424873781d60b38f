"""What every churnops DAG shares: default retries, the Assets that chain the DAGs, and the dataset parameter.

Kept free of heavy imports: the dag-processor imports this on every parse.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.sdk import Asset, Param

START_DATE = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)

DEFAULT_ARGS = {
    "owner": "churnops",
    "retries": 2,
    "retry_delay": dt.timedelta(minutes=1),
    "retry_exponential_backoff": True,
    "execution_timeout": dt.timedelta(hours=2),
}

# feature DAG -> FEATURES -> drift DAG -> RETRAIN_REQUEST (only when a retraining trigger fires) -> training DAG
# -> MODEL -> scoring DAG. The drift DAG also runs daily on its own.
FEATURES = Asset("churnops://features/customer_features")
MODEL = Asset("churnops://models/champion")
RETRAIN_REQUEST = Asset("churnops://drift/retrain-request")
TRAINING_DAG_ID = "churnops_training"

REPO_ROOT = Path(__file__).resolve().parents[2]
FEATURE_JOB = REPO_ROOT / "jobs" / "features.py"


def feature_job(task_id: str, app_name: str, dataset: str = "{{ params.dataset }}") -> SparkSubmitOperator:
    """spark-submit of the feature job (jobs/features.py) to the `spark_default` master, for `dataset` (a template;
    by default the run's dataset param)."""
    from churnops.config import Settings

    spark = Settings().spark
    return SparkSubmitOperator(
        task_id=task_id,
        application=str(FEATURE_JOB),
        application_args=["--dataset", dataset],
        conn_id="spark_default",
        name=app_name,
        conf={
            "spark.driver.memory": spark.driver_memory,
            "spark.sql.shuffle.partitions": str(spark.shuffle_partitions),
        },
        env_vars={"SPARK_SUBMITTED": "1"},
    )


def dataset_param(default: str) -> Param:
    return Param(
        default,
        type="string",
        title="Dataset",
        description="Built-in dataset name (synthetic, cdnow) or the path of a dataset contract YAML.",
    )


def dataset_of_run(params: dict[str, Any], triggering_asset_events: Any, asset: Asset) -> str:
    """The dataset a run works on: the one named by the newest `asset` event that triggered it, else its param.

    An asset-triggered run gets no conf, so its param is the default: the dataset chosen upstream (e.g. a drifted
    copy's contract YAML given to the feature DAG) travels in the events' `extra` instead.
    """
    events = list(triggering_asset_events.get(asset, [])) if triggering_asset_events else []
    named = [e for e in events if (e.extra or {}).get("dataset")]
    return max(named, key=lambda e: e.timestamp).extra["dataset"] if named else params["dataset"]


def record_run_outcome(context: dict) -> None:
    """DAG-level callback: the run's state and duration into the platform database, for the Pipelines dashboard.

    Does nothing in the embedded default (no database configured); a failure here is logged, never raised, so
    bookkeeping cannot fail a pipeline.
    """
    import contextlib
    import logging

    from churnops.config import Settings

    settings = Settings()
    if settings.database_url is None:
        return
    try:
        from churnops import db

        run = context["dag_run"]
        with contextlib.closing(db.connect(settings)) as conn:
            db.migrate(conn)
            db.record_dag_run(
                conn,
                dag_id=run.dag_id,
                run_id=run.run_id,
                state=str(run.state),
                start_date=run.start_date,
                end_date=run.end_date or dt.datetime.now(dt.UTC),
                run_type=str(run.run_type),
                logical_date=run.logical_date,
            )
    except Exception:  # noqa: BLE001 - bookkeeping must not fail the pipeline
        logging.getLogger(__name__).exception("could not record the outcome of the DAG run")


RUN_CALLBACKS = {"on_success_callback": record_run_outcome, "on_failure_callback": record_run_outcome}
