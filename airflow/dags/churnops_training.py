"""Training DAG: Optuna over LightGBM on the latest feature snapshot, each trial a nested MLflow run; the best model
is evaluated out of time, registered, and promoted to `champion` only if it beats the current one.

Runs when the drift DAG requests a retraining (the `RETRAIN_REQUEST` Asset: drift confirmed, a realized-performance
drop, the schedule, an operator, or no champion yet) — not on every feature snapshot — or when triggered by hand.
The reason is tagged on the MLflow training run. Retries resume the same Optuna study.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from airflow.sdk import Param, dag, task
from common import DEFAULT_ARGS, MODEL, RETRAIN_REQUEST, RUN_CALLBACKS, START_DATE, dataset_of_run, dataset_param

from churnops.config import Settings


@dag(
    dag_id=Path(__file__).stem,
    doc_md=__doc__,
    schedule=RETRAIN_REQUEST,
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    tags=["churnops", "training", "mlflow"],
    default_args=DEFAULT_ARGS,
    **RUN_CALLBACKS,
    params={
        "dataset": dataset_param(Settings().dataset),
        "retrain_reason": Param(
            "manual",
            enum=["manual", "drift_detected", "performance_drop", "scheduled"],
            title="Retraining reason",
            description="Why this run trains, when started by hand; asset-triggered runs take it from the request.",
        ),
    },
)
def churnops_training() -> None:
    @task(outlets=[MODEL])
    def train_and_gate(
        params: dict[str, Any] | None = None, outlet_events: Any = None, triggering_asset_events: Any = None
    ) -> dict[str, Any]:
        from churnops.dataset import load_contract
        from jobs.training import train

        settings = Settings()
        dataset = dataset_of_run(params, triggering_asset_events, RETRAIN_REQUEST)
        result = train(settings, load_contract(dataset, settings))
        summary = {
            "dataset": dataset,
            "model_name": result.model_name,
            "model_version": result.model_version,
            "promoted": result.decision.promoted,
            "reason": result.decision.reason,
            "out_of_time_roc_auc": result.out_of_time_metrics["roc_auc"],
            "run_id": result.run_id,
        }
        outlet_events[MODEL].extra = summary
        return summary

    @task
    def record_retrain_reason(
        summary: dict[str, Any], params: dict[str, Any] | None = None, triggering_asset_events: Any = None
    ) -> dict[str, Any]:
        from churnops.registry import configure_mlflow
        from monitoring.retrain import record_training_reason

        requests = list(triggering_asset_events[RETRAIN_REQUEST]) if triggering_asset_events else []
        request = dict(requests[-1].extra) if requests else {}
        reason = request.get("reason", params["retrain_reason"])
        configure_mlflow(Settings())
        record_training_reason(summary["run_id"], reason, request)
        return {**summary, "retrain_reason": reason}

    record_retrain_reason(train_and_gate())


churnops_training()
