"""Scoring DAG: scores every active customer at the latest cutoff with the champion, daily and after each training.

After a training it scores the dataset that training named in its MODEL event (a training of another dataset than
the default, or of a drifted copy's contract, is scored as that dataset); otherwise the `dataset` param.

Writes the risk-banded list to Parquet and, when the platform database is configured, to PostgreSQL, replacing
the same logical date's rows in one transaction (safe to retry).

Backfill (backtest): trigger it by hand with `cutoff` = a past cutoff of the latest snapshot; the list is dated by
that cutoff, and once its label horizon has passed the drift DAG's realized-performance task evaluates it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable, Param, dag, task
from common import DEFAULT_ARGS, MODEL, RUN_CALLBACKS, START_DATE, dataset_of_run, dataset_param

from churnops.config import Settings


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
        "dataset": dataset_param(Settings().dataset),
        "cutoff": Param(
            None,
            type=["null", "string"],
            format="date",
            title="Backfill cutoff",
            description="Empty: score the scoring cutoff. A past cutoff of the latest snapshot (YYYY-MM-DD): "
            "score that one instead, as a backtest whose realized performance can be measured.",
        ),
    },
)
def churnops_scoring() -> None:
    @task
    def score_customers(
        params: dict[str, Any] | None = None,
        run_id: str | None = None,
        logical_date: Any = None,
        triggering_asset_events: Any = None,
    ) -> dict[str, Any]:
        import datetime as dt

        from churnops.dataset import load_contract
        from jobs.score import score

        settings = Settings()
        dataset = dataset_of_run(params, triggering_asset_events, MODEL)
        run = score(
            settings,
            load_contract(dataset, settings),
            run_id=run_id or "manual",
            logical_date=logical_date.date() if logical_date else None,
            cutoff=dt.date.fromisoformat(params["cutoff"]) if params["cutoff"] else None,
        )
        return {
            "dataset": dataset,
            "path": str(run.path),
            "rows": run.rows,
            "cutoff": run.cutoff.isoformat(),
            "model_version": run.model_version,
            "rows_in_database": run.rows_in_database,
        }

    score_customers()


churnops_scoring()
