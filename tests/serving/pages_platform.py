"""The platform the page tests read: the trained champion's list scored into a fresh database, the customers'
features published, and a drift check and a retraining decision recorded, all by the platform's own jobs."""

from __future__ import annotations

import datetime as dt

from pydantic import SecretStr

from churnops.config import Settings

PAGES_API_KEY = "pages-test-key"


def platform_with_records(trained_platform, database_url: str) -> Settings:
    """Settings of the trained platform on `database_url`, with the API key set, after scoring, publishing and
    monitoring ran once against that database."""
    from churnops.jobs.score import score
    from churnops.monitoring.drift import run_drift_check
    from churnops.monitoring.retrain_run import decide_for_run
    from churnops.online_store import publish_latest_snapshot
    from churnops.snapshots import RUNS_DIR, dataset_dir

    base = trained_platform.settings
    settings = base.model_copy(
        update={
            "database_url": SecretStr(database_url),
            "serving": base.serving.model_copy(update={"api_key": SecretStr(PAGES_API_KEY)}),
        }
    )
    contract = trained_platform.contract
    score(settings, contract, run_id="pages-test")
    publish_latest_snapshot(settings, contract.name)
    # The run date the feature job recorded for the snapshot (runs/<date>.json): the drift run and the retraining
    # decision belong to it, as in the monitoring DAG.
    run_dates = sorted((dataset_dir(settings, contract.name) / RUNS_DIR).glob("*.json"))
    run_date = dt.date.fromisoformat(run_dates[-1].stem)
    run_drift_check(settings, contract, run_date=run_date)
    decide_for_run(settings, contract, run_date, retrain_running=False, manual=True, advisory=True)
    return settings
