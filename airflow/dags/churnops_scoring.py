"""Scoring DAG: scores every active customer at the run date's cutoff with the champion, daily and after each
training.

After a training it scores the dataset and run date named in the MODEL event; otherwise the params, the schedule
(a daily 06:00 run scores that day's snapshot), or for a run started by hand the newest data.

Writes the risk-banded list to Parquet and, when the platform database is configured, to PostgreSQL, replacing
the same date's list of the same kind in one transaction (safe to retry). A backfill run writes a `backfill` list,
which never replaces the regular list of its date.

With `CHURNOPS_SCORING__ENGINE=spark` (or `auto` above `spark_min_rows` customers) the task spark-submits
jobs/score_spark.py to the `spark_default` master instead: the same list, scored on the executors.

Backtest: trigger it by hand with `cutoff` = a past cutoff of the run date's snapshot; the list is dated by that
cutoff, kept as a `backfill` list, and once its label horizon has passed the drift DAG evaluates it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable, Param, dag, task
from common import (
    DEFAULT_ARGS,
    MODEL,
    RUN_CALLBACKS,
    SCORING_JOB,
    START_DATE,
    dataset_param,
    is_backfill,
    run_date_param,
    run_target,
    submit_spark_job,
)


@dag(
    dag_id=Path(__file__).stem,
    doc_md=__doc__,
    schedule=AssetOrTimeSchedule(timetable=CronTriggerTimetable("0 6 * * *", timezone="UTC"), assets=MODEL),
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    tags=["churnops", "scoring"],
    default_args=DEFAULT_ARGS,
    **RUN_CALLBACKS,
    params={
        "dataset": dataset_param(),
        "run_date": run_date_param(),
        "cutoff": Param(
            None,
            type=["null", "string"],
            format="date",
            title="Backtest cutoff",
            description="Empty: score the run date's scoring cutoff. A past cutoff of the run date's snapshot "
            "(YYYY-MM-DD): score that one instead, as a backtest whose realized performance can be measured.",
        ),
    },
)
def churnops_scoring() -> None:
    @task
    def score_customers(
        params: dict[str, Any] | None = None,
        run_id: str | None = None,
        dag_run: Any = None,
        triggering_asset_events: Any = None,
    ) -> dict[str, Any]:
        import datetime as dt

        from airflow.sdk.exceptions import AirflowSkipException

        from churnops.config import Settings
        from churnops.dataset import load_contract
        from churnops.jobs.score import planned_engine, score
        from churnops.registry import champion_or_none, configure_mlflow

        target = run_target(params, dag_run, triggering_asset_events, MODEL)
        settings = Settings()
        contract = load_contract(target["dataset"], settings)
        configure_mlflow(settings)
        if champion_or_none(contract.model_name) is None:
            raise AirflowSkipException(f"{contract.model_name} has no champion yet: nothing scores the list")
        run_date = dt.date.fromisoformat(target["run_date"])
        cutoff = dt.date.fromisoformat(params["cutoff"]) if params["cutoff"] else None
        list_kind = "backfill" if is_backfill(dag_run) else "regular"
        if planned_engine(settings, contract, run_date, cutoff) == "spark":
            run = score_on_spark(target["dataset"], run_date, cutoff, list_kind, run_id or "manual")
        else:
            run = score(
                settings, contract, run_id=run_id or "manual", run_date=run_date, cutoff=cutoff, list_kind=list_kind
            )
        return {
            **target,
            "path": str(run.path),
            "rows": run.rows,
            "cutoff": run.cutoff.isoformat(),
            "list_kind": run.list_kind,
            "model_version": run.model_version,
            "rows_in_database": run.rows_in_database,
        }

    score_customers()


def score_on_spark(dataset: str, run_date: Any, cutoff: Any, list_kind: str, run_id: str) -> Any:
    """spark-submit of jobs/score_spark.py (Settings.scoring.engine chose Spark); its summary comes back as JSON."""
    import tempfile
    from pathlib import Path

    from churnops.jobs.score_spark import read_result

    with tempfile.TemporaryDirectory(prefix="churnops-score-") as folder:
        result = Path(folder) / "run.json"
        arguments = ["--dataset", dataset, "--run-date", run_date.isoformat(), "--list-kind", list_kind]
        arguments += ["--run-id", run_id, "--result-json", str(result)]
        arguments += ["--cutoff", cutoff.isoformat()] if cutoff else []
        submit_spark_job(SCORING_JOB, arguments, name=f"churnops-score-{Path(dataset).stem}")
        return read_result(result)


churnops_scoring()
