"""Training DAG: Optuna over LightGBM on the run date's feature snapshot, each trial a nested MLflow run; the best
model is evaluated out of time, registered, and promoted to `champion` only if it beats the current one.

Runs when the drift DAG requests a retraining (the `RETRAIN_REQUEST` Asset: its extra names the dataset, the run
date and the reason — drift confirmed, a realized-performance drop, the schedule, an operator, or no champion yet)
— not on every feature snapshot — or when triggered by hand. A snapshot whose training rows are the ones a
registered version already learned from is not trained again: the run records "no new data" and emits no MODEL
event. The reason is tagged on the MLflow training run. Retries resume the same Optuna study.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from airflow.sdk import Param, dag, task
from common import (
    DEFAULT_ARGS,
    MODEL,
    RETRAIN_REQUEST,
    RUN_CALLBACKS,
    START_DATE,
    dataset_param,
    run_date_param,
    run_target,
)


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
        "dataset": dataset_param(),
        "run_date": run_date_param(),
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
        params: dict[str, Any] | None = None,
        dag_run: Any = None,
        outlet_events: Any = None,
        triggering_asset_events: Any = None,
    ) -> dict[str, Any]:
        import datetime as dt

        from airflow.sdk.exceptions import AirflowSkipException

        from churnops.config import Settings
        from churnops.dataset import load_contract
        from churnops.jobs.training import train
        from churnops.metrics import evaluation_prefix
        from churnops.snapshots import snapshot_dir_for

        target = run_target(params, dag_run, triggering_asset_events, RETRAIN_REQUEST)
        requests = list(triggering_asset_events[RETRAIN_REQUEST]) if triggering_asset_events else []
        request = dict(requests[-1].extra) if requests else {}
        settings = Settings()
        contract = load_contract(target["dataset"], settings)
        snapshot = snapshot_dir_for(settings, contract.name, dt.date.fromisoformat(target["run_date"]))
        result = train(
            settings, contract, snapshot_dir=snapshot, reason=request.get("reason", params["retrain_reason"])
        )
        if result.skipped:
            # Nothing new to learn: no version, no MODEL event (scoring keeps its own schedule).
            raise AirflowSkipException(result.skip_reason)
        summary = {
            **target,
            "model_name": result.model_name,
            "model_version": result.model_version,
            "promoted": result.decision.promoted,
            "reason": result.decision.reason,
            # `oot_roc_auc` or `holdout_roc_auc`, as in MLflow.
            f"{evaluation_prefix(result.validation)}_roc_auc": result.evaluation_metrics["roc_auc"],
            "run_id": result.run_id,
            "retrain_reason": request.get("reason", params["retrain_reason"]),
            "retrain_detail": request.get("detail"),
        }
        outlet_events[MODEL].extra = summary
        return summary

    @task
    def record_retrain_reason(summary: dict[str, Any]) -> dict[str, Any]:
        from churnops.config import Settings
        from churnops.monitoring.retrain_run import record_training_reason
        from churnops.registry import configure_mlflow

        configure_mlflow(Settings())
        record_training_reason(summary["run_id"], summary["retrain_reason"], {"detail": summary["retrain_detail"]})
        return summary

    record_retrain_reason(train_and_gate())


churnops_training()
