"""Drift DAG: is the data the champion sees still like the data it learned from — and should it retrain?

Daily, after every new feature snapshot (the `FEATURES` Asset: its extra names the dataset and run date), and by
hand with params:
1. realized performance of every past scoring list whose horizon has passed by the run date (once per list);
2. per-feature PSI with Evidently, reference = the champion's training snapshot, current = the run date's snapshot
   and the recent prediction log; missing-share drift, score PSI, drifted shares; HTML report on disk and in MLflow;
3. the retraining control (policy, confirmation over different snapshots, cooldown, running guard) records every
   trigger that did not fire, with its reason;
4. only if one fired: publish `RETRAIN_REQUEST` with the dataset, run date and reason (which starts the training DAG
   and its champion gate), and only then record the fired decision — a request that never went out starts no
   cooldown.
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
    dataset_param,
    run_date_param,
    run_target,
)


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
        "dataset": dataset_param(),
        "run_date": run_date_param(),
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
    def resolve_run(params: dict[str, Any] | None = None, dag_run: Any = None, triggering_asset_events: Any = None):
        return run_target(params, dag_run, triggering_asset_events, FEATURES)

    @task
    def realized_performance(target: dict[str, Any]) -> list[dict[str, Any]]:
        import datetime as dt

        from churnops.config import Settings
        from churnops.dataset import load_contract
        from churnops.monitoring.realized import compute_realized_performance

        settings = Settings()
        contract = load_contract(target["dataset"], settings)
        rows = compute_realized_performance(settings, contract, dt.date.fromisoformat(target["run_date"]))
        return [
            {
                "logical_date": r.logical_date.isoformat(),
                "list_kind": r.list_kind,
                "model_version": r.model_version,
                "roc_auc": r.roc_auc,
                "precision_at_10": r.precision_at_10,
            }
            for r in rows
        ]

    @task
    def check_drift(target: dict[str, Any]) -> dict[str, Any]:
        import datetime as dt

        from churnops.config import Settings
        from churnops.dataset import load_contract
        from churnops.monitoring.drift import NoChampionError, drift_summary, run_drift_check

        settings = Settings()
        contract = load_contract(target["dataset"], settings)
        run_date = dt.date.fromisoformat(target["run_date"])
        try:
            runs = run_drift_check(settings, contract, run_date=run_date)
        except NoChampionError as error:
            return {**target, "champion": None, "message": str(error)}
        return {**target, "champion": runs[0].model_version, "runs": [drift_summary(r) for r in runs]}

    @task.short_circuit
    def decide_retraining(drift: dict[str, Any], params: dict[str, Any] | None = None, ti: Any = None) -> Any:
        from churnops.config import Settings
        from churnops.dataset import load_contract
        from churnops.monitoring.retrain import decision_to_dict
        from churnops.monitoring.retrain_run import decide_for_run

        print(f"drift check: {drift}")  # noqa: T201
        settings = Settings()
        contract = load_contract(drift["dataset"], settings)
        active = ti.get_dr_count(dag_id=TRAINING_DAG_ID, states=["queued", "running"])
        decisions = decide_for_run(
            settings, contract, drift["run_date"], retrain_running=active > 0, manual=bool(params["force_retrain"])
        )
        for decision in decisions:
            print(f"{decision.trigger}: {'FIRES' if decision.fired else 'suppressed'} - {decision.reason}")  # noqa: T201
        fired = [d for d in decisions if d.fired]
        return (
            {"dataset": drift["dataset"], "run_date": drift["run_date"], "decision": decision_to_dict(fired[0])}
            if fired
            else False
        )

    @task(outlets=[RETRAIN_REQUEST])
    def request_retraining(request: dict[str, Any], outlet_events: Any = None) -> dict[str, Any]:
        from churnops.config import Settings
        from churnops.monitoring.retrain import decision_from_dict, record_decision
        from churnops.monitoring.store import open_store

        decision = decision_from_dict(request["decision"])
        extra = {
            "dataset": request["dataset"],
            "run_date": request["run_date"],
            "reason": decision.trigger,
            "detail": decision.reason,
            "drift_run_id": decision.drift_run_id,
        }
        outlet_events[RETRAIN_REQUEST].extra = extra
        record_decision(open_store(Settings()), decision)
        return extra

    target = resolve_run()
    decision = decide_retraining(check_drift(target))
    realized_performance(target) >> decision
    request_retraining(decision)


churnops_drift()
