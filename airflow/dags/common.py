"""What every churnops DAG shares: default retries, the Assets that chain the DAGs, the dataset and run-date
parameters, how a task finds its dataset and run date, the feature job's spark-submit and the data sensor.

Kept free of heavy imports and of configuration: the dag-processor imports this on every parse, and the Settings
are built inside each task, in the worker's own environment.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.sdk import Asset, Param
from airflow.sdk.bases.sensor import BaseSensorOperator
from airflow.sdk.exceptions import AirflowSensorTimeout

# Early enough for any run date a replay or a backfill may ask for (a task never runs for a logical date before its
# start date); `catchup=False` keeps the scheduler from filling the years in between.
START_DATE = dt.datetime(1990, 1, 1, tzinfo=dt.UTC)

DEFAULT_ARGS = {
    "owner": "churnops",
    "retries": 2,
    "retry_delay": dt.timedelta(minutes=1),
    "retry_exponential_backoff": True,
    "execution_timeout": dt.timedelta(hours=2),
}

# feature DAG -> FEATURES -> drift DAG -> RETRAIN_REQUEST (only when a retraining trigger fires) -> training DAG
# -> MODEL -> scoring DAG. Every event's extra names the dataset and the run date, so each DAG downstream works on
# the same data as the run that woke it.
FEATURES = Asset("churnops://features/customer_features")
MODEL = Asset("churnops://models/champion")
RETRAIN_REQUEST = Asset("churnops://drift/retrain-request")
TRAINING_DAG_ID = "churnops_training"

REPO_ROOT = Path(__file__).resolve().parents[2]
FEATURE_JOB = REPO_ROOT / "jobs" / "features.py"
SCORING_JOB = REPO_ROOT / "jobs" / "score_spark.py"


def dataset_param() -> Param:
    return Param(
        None,
        type=["null", "string"],
        title="Dataset",
        description="Built-in dataset name (synthetic, cdnow) or the path of a dataset contract YAML; empty: the "
        "configured default (CHURNOPS_DATASET).",
    )


def run_date_param() -> Param:
    return Param(
        None,
        type=["null", "string"],
        format="date",
        title="Run date",
        description="The date this run acts on (its scoring cutoff; it needs events through the day before). "
        "Empty: from the triggering run or the schedule, or for a run started by hand the day after the latest "
        "day of data.",
    )


def dataset_of_run(params: dict[str, Any], triggering_asset_events: Any, asset: Asset | None) -> str:
    """The dataset of a run: the one named by the newest triggering `asset` event, else the param, else the
    configuration (`CHURNOPS_DATASET`). A contract YAML path travels as given."""
    from churnops.config import Settings

    events = list(triggering_asset_events.get(asset, [])) if (triggering_asset_events and asset) else []
    named = [e for e in events if (e.extra or {}).get("dataset")]
    if named:
        return max(named, key=lambda e: e.timestamp).extra["dataset"]
    return params.get("dataset") or Settings().dataset


def run_target(params: dict[str, Any], dag_run: Any, triggering_asset_events: Any, asset: Asset | None) -> dict:
    """The dataset and run date of a task: `{"dataset": ..., "run_date": "YYYY-MM-DD", "run_date_source": ...}`,
    the run date by `churnops.run_dates.resolve_run_date`."""
    from churnops.bronze import watermark
    from churnops.config import Settings
    from churnops.dataset import load_contract
    from churnops.run_dates import newest_upstream_run_date, resolve_run_date

    settings = Settings()
    dataset = dataset_of_run(params, triggering_asset_events, asset)
    contract = load_contract(dataset, settings)
    events = list(triggering_asset_events.get(asset, [])) if (triggering_asset_events and asset) else []
    run_date = resolve_run_date(
        requested=params.get("run_date"),
        upstream=newest_upstream_run_date(events),
        run_type=str(getattr(dag_run, "run_type", "") or ""),
        data_interval_end=getattr(dag_run, "data_interval_end", None),
        latest_event_day=lambda: watermark(settings, contract.name),
    )
    return {"dataset": dataset, "run_date": run_date.date.isoformat(), "run_date_source": run_date.source}


def is_backfill(dag_run: Any) -> bool:
    return str(getattr(dag_run, "run_type", "")) == "backfill"  # DagRunType's str() is its value


class DataWatermarkSensor(BaseSensorOperator):
    """Waits until the dataset's events reach the run's last data day (ingesting new files at every look), then
    returns the run's target; on timeout, fails naming the last day seen.

    How often it looks, how long it waits and its mode come from `Settings.watermark`, read when it runs.
    """

    def __init__(self, *, asset: Asset | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.asset = asset
        self._last_seen: str | None = None

    def execute(self, context: Any) -> Any:
        from churnops.config import Settings

        watermark = Settings().watermark
        self.poke_interval, self.timeout, self.mode = (
            watermark.poke_interval_seconds,
            watermark.timeout_seconds,
            watermark.sensor_mode,
        )
        try:
            return super().execute(context)
        except AirflowSensorTimeout as timeout:
            raise AirflowSensorTimeout(
                f"{timeout}: the events still end on {self._last_seen or 'no day at all'}; deliver the missing "
                "files, then clear this task to retry"
            ) from timeout

    def poke(self, context: Any) -> Any:
        from airflow.sdk.bases.sensor import PokeReturnValue

        from churnops.bronze import watermark
        from churnops.config import Settings
        from churnops.dataset import load_contract
        from churnops.jobs.ingest import ensure_bronze
        from churnops.jobs.source_check import event_files_not_yet_ingested, require_clean_sources
        from churnops.run_dates import watermark_reached

        params, events = context["params"], context.get("triggering_asset_events")
        settings = Settings()
        contract = load_contract(dataset_of_run(params, events, self.asset), settings)
        if contract.events is not None:
            # The new files' structure first (every problem in one message), then their rows.
            require_clean_sources(contract, event_files_not_yet_ingested(contract, settings))
            ensure_bronze(contract, settings)  # new files first: a run without a date takes it from the data
        target = run_target(params, context["dag_run"], events, self.asset)
        if contract.events is None or contract.cutoffs.as_of is not None:
            return PokeReturnValue(is_done=True, xcom_value=target)  # no event time, or a pinned date: no wait
        latest = watermark(settings, contract.name)
        self._last_seen = latest.isoformat() if latest else None
        run_date = dt.date.fromisoformat(target["run_date"])
        reached = watermark_reached(run_date, latest, settings.watermark.tolerance_days)
        self.log.info(
            "run %s needs events through %s; the last day seen is %s", run_date, run_date - dt.timedelta(days=1), latest
        )
        return PokeReturnValue(is_done=reached, xcom_value={**target, "latest_event_day": self._last_seen})


class FeatureJobOperator(SparkSubmitOperator):
    """spark-submit of the feature job (jobs/features.py) to the `spark_default` master, for the dataset and run date
    that `target_task_id` returned; the Spark settings are read when it runs."""

    def __init__(self, *, target_task_id: str, **kwargs: Any) -> None:
        super().__init__(
            application=str(FEATURE_JOB),
            conn_id="spark_default",
            env_vars={"SPARK_SUBMITTED": "1"},
            **kwargs,
        )
        self.target_task_id = target_task_id

    def execute(self, context: Any) -> None:
        target = context["ti"].xcom_pull(task_ids=self.target_task_id)
        self.application_args = ["--dataset", target["dataset"], "--run-date", target["run_date"]]
        self.conf = {**(self.conf or {}), **spark_submit_conf()}
        return super().execute(context)


def spark_submit_conf() -> dict[str, str]:
    """The Spark settings a submitted churnops job gets (read when a task runs)."""
    from churnops.config import Settings

    spark = Settings().spark
    return {
        "spark.driver.memory": spark.driver_memory,
        "spark.executor.memory": spark.executor_memory,
        **spark.executor_memory_conf(),
        "spark.sql.shuffle.partitions": str(spark.shuffle_partitions),
    }


def submit_spark_job(application: Path, application_args: list[str], name: str) -> None:
    """spark-submit a churnops job to the `spark_default` master from inside a task, as FeatureJobOperator does
    (for a task that decides at run time whether it needs Spark at all)."""
    from airflow.providers.apache.spark.hooks.spark_submit import SparkSubmitHook

    hook = SparkSubmitHook(
        conf=spark_submit_conf(),
        conn_id="spark_default",
        name=name,
        application_args=application_args,
        env_vars={"SPARK_SUBMITTED": "1"},
    )
    hook.submit(application=str(application))


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
