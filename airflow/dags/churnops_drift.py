"""Drift DAG: is the data the champion sees still like the data it learned from — and should it retrain?

Daily, and after every new feature snapshot (the `FEATURES` Asset), and by hand with params:
1. realized performance of past scoring lists whose horizon has passed (ROC AUC, precision@10 %, calibration);
2. per-feature PSI with Evidently, reference = the champion's training snapshot, current = the latest snapshot's
   scoring cutoff and the recent prediction log; missing-share drift, score PSI, drifted shares; HTML report on
   disk and in MLflow;
3. the retraining control (confirmation, cooldown, running guard) records every trigger, fired or suppressed;
4. only if one fired: re-cut the feature snapshot at the newest matured cutoff (the Spark feature job), then
   publish `RETRAIN_REQUEST` with the reason, which starts the training DAG (and its champion gate).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable, Param, dag, task
from common import (
    DEFAULT_ARGS,
    FEATURES,
    RETRAIN_REQUEST,
    RUN_CALLBACKS,
    START_DATE,
    TRAINING_DAG_ID,
    dataset_of_run,
    dataset_param,
    feature_job,
)

from churnops.config import Settings

_settings = Settings()


@dag(
    dag_id=Path(__file__).stem,
    doc_md=__doc__,
    schedule=AssetOrTimeSchedule(timetable=CronTriggerTimetable("0 4 * * *", timezone="UTC"), assets=FEATURES),
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    tags=["churnops", "drift", "monitoring"],
    default_args=DEFAULT_ARGS,
    **RUN_CALLBACKS,
    params={
        "dataset": dataset_param(_settings.dataset),
        "force_retrain": Param(
            False,
            type="boolean",
            title="Force retraining",
            description="Request a retraining with reason `manual` (skips the cooldown, not the running guard).",
        ),
    },
)
def churnops_drift() -> None:
    @task
    def realized_performance(
        params: dict[str, Any] | None = None, triggering_asset_events: Any = None
    ) -> list[dict[str, Any]]:
        from churnops.dataset import load_contract
        from monitoring.realized import compute_realized_performance

        settings = Settings()
        dataset = dataset_of_run(params, triggering_asset_events, FEATURES)
        rows = compute_realized_performance(settings, load_contract(dataset, settings))
        return [
            {
                "logical_date": r.logical_date.isoformat(),
                "model_version": r.model_version,
                "roc_auc": r.roc_auc,
                "precision_at_10": r.precision_at_10,
                "calibration_error": r.calibration_error,
            }
            for r in rows
        ]

    @task
    def check_drift(params: dict[str, Any] | None = None, triggering_asset_events: Any = None) -> dict[str, Any]:
        from churnops.dataset import load_contract
        from monitoring.drift import NoChampionError, drift_summary, run_drift_check

        settings = Settings()
        contract = load_contract(dataset_of_run(params, triggering_asset_events, FEATURES), settings)
        try:
            runs = run_drift_check(settings, contract)
        except NoChampionError as error:
            return {"dataset": contract.name, "champion": None, "message": str(error)}
        return {
            "dataset": contract.name,
            "champion": runs[0].model_version,
            "runs": [drift_summary(r) for r in runs],
        }

    @task.short_circuit
    def decide_retraining(
        drift: dict[str, Any], params: dict[str, Any] | None = None, ti: Any = None, triggering_asset_events: Any = None
    ) -> dict[str, Any] | bool:
        import datetime as dt

        from churnops.dataset import load_contract
        from churnops.registry import configure_mlflow
        from monitoring.retrain import champion_state, decide_and_record
        from monitoring.store import open_store

        settings = Settings()
        dataset = dataset_of_run(params, triggering_asset_events, FEATURES)
        contract = load_contract(dataset, settings)
        # The drift runs themselves are read back from the store; the summary only says what this run saw.
        print(f"drift check: {drift}")  # noqa: T201
        configure_mlflow(settings)
        active = ti.get_dr_count(dag_id=TRAINING_DAG_ID, states=["queued", "running"])
        decisions = decide_and_record(
            open_store(settings),
            dataset=contract.name,
            champion=champion_state(contract.model_name),
            now=dt.datetime.now(dt.UTC),
            retrain_running=active > 0,
            manual=bool(params["force_retrain"]),
        )
        for decision in decisions:
            print(f"{decision.trigger}: {'FIRED' if decision.fired else 'suppressed'} - {decision.reason}")  # noqa: T201
        fired = [d for d in decisions if d.fired]
        if not fired:
            return False
        # `dataset` as given (a drifted copy's YAML path stays a path): the re-cut and the training read it.
        return {
            "dataset": dataset,
            "reason": fired[0].trigger,
            "detail": fired[0].reason,
            "drift_run_id": fired[0].drift_run_id,
        }

    recut = feature_job(
        "recut_training_snapshot",
        "churnops-features-recut",
        dataset="{{ ti.xcom_pull(task_ids='decide_retraining')['dataset'] }}",
    )

    @task(outlets=[RETRAIN_REQUEST])
    def request_retraining(request: dict[str, Any], outlet_events: Any = None) -> dict[str, Any]:
        outlet_events[RETRAIN_REQUEST].extra = request
        return request

    decision = decide_retraining(check_drift())
    realized_performance() >> decision
    decision >> recut >> request_retraining(decision)


churnops_drift()
