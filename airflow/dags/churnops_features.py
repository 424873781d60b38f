"""Feature DAG: submits the PySpark feature job (jobs/features.py) to the configured Spark master.

The job writes a content-hashed feature snapshot; the `FEATURES` Asset it updates schedules the training DAG.
Locally the Spark connection is `local[*]`; in the full deployment it is the standalone master.
"""

from __future__ import annotations

from pathlib import Path

from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.sdk import dag
from common import DEFAULT_ARGS, FEATURE_JOB, FEATURES, RUN_CALLBACKS, START_DATE, dataset_param

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
    SparkSubmitOperator(
        task_id="build_feature_snapshot",
        application=str(FEATURE_JOB),
        application_args=["--dataset", "{{ params.dataset }}"],
        conn_id="spark_default",
        name="churnops-features",
        conf={
            "spark.driver.memory": _settings.spark.driver_memory,
            "spark.sql.shuffle.partitions": str(_settings.spark.shuffle_partitions),
        },
        env_vars={"SPARK_SUBMITTED": "1"},
        outlets=[FEATURES],
    )


churnops_features()
