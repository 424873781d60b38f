"""Training DAG: Optuna over LightGBM on the latest feature snapshot, each trial a nested MLflow run; the best model
is evaluated out of time, registered, and promoted to `champion` only if it beats the current one.

Runs whenever the feature DAG publishes a snapshot (the `FEATURES` Asset). Retries resume the same Optuna study.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from airflow.sdk import dag, task
from common import DEFAULT_ARGS, FEATURES, MODEL, RUN_CALLBACKS, START_DATE, dataset_param

from churnops.config import Settings


@dag(
    dag_id=Path(__file__).stem,
    doc_md=__doc__,
    schedule=FEATURES,
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    tags=["churnops", "training", "mlflow"],
    default_args=DEFAULT_ARGS,
    **RUN_CALLBACKS,
    params={"dataset": dataset_param(Settings().dataset)},
)
def churnops_training() -> None:
    @task(outlets=[MODEL])
    def train_and_gate(params: dict[str, Any] | None = None, outlet_events: Any = None) -> dict[str, Any]:
        from churnops.dataset import load_contract
        from jobs.train import train

        settings = Settings()
        result = train(settings, load_contract(params["dataset"], settings))
        summary = {
            "dataset": params["dataset"],
            "model_name": result.model_name,
            "model_version": result.model_version,
            "promoted": result.decision.promoted,
            "reason": result.decision.reason,
            "out_of_time_roc_auc": result.out_of_time_metrics["roc_auc"],
            "run_id": result.run_id,
        }
        outlet_events[MODEL].extra = summary
        return summary

    train_and_gate()


churnops_training()
