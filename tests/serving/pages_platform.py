"""The platform the page tests read: the trained champion's list scored into a fresh database, the customers'
features published, a drift check and a retraining decision recorded, and a past cutoff backfilled and judged by
realized performance, all by the platform's own jobs."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

from pydantic import SecretStr

from churnops.config import Settings

PAGES_API_KEY = "pages-test-key"


def platform_with_records(trained_platform, database_url: str, home: Path) -> Settings:
    """Settings of a private copy (at `home`) of the trained platform on `database_url`, with the API key set, after
    scoring, publishing and monitoring ran once against that database. The copy keeps the backfilled list's Parquet
    file away from the other tests of the session's platform."""
    from churnops.dataset import load_contract
    from churnops.jobs.score import score
    from churnops.monitoring.drift import run_drift_check
    from churnops.monitoring.realized import compute_realized_performance
    from churnops.monitoring.retrain_run import decide_for_run
    from churnops.online_store import publish_latest_snapshot
    from churnops.snapshots import RUNS_DIR, dataset_dir, latest_snapshot_dir, read_metadata

    base = trained_platform.settings
    if not home.exists():
        shutil.copytree(base.home, home)
    # A fresh Settings (not model_copy, which would keep the cached paths of the original home).
    settings = Settings(
        home=home,
        training=base.training,
        spark=base.spark,
        database_url=SecretStr(database_url),
        serving=base.serving.model_copy(update={"api_key": SecretStr(PAGES_API_KEY)}),
    )
    contract = load_contract(trained_platform.contract.name, settings)
    score(settings, contract, run_id="pages-test")
    publish_latest_snapshot(settings, contract.name)
    # The run date the feature job recorded for the snapshot (runs/<date>.json): the drift run and the retraining
    # decision belong to it, as in the monitoring DAG.
    run_dates = sorted((dataset_dir(settings, contract.name) / RUNS_DIR).glob("*.json"))
    run_date = dt.date.fromisoformat(run_dates[-1].stem)
    run_drift_check(settings, contract, run_date=run_date)
    decide_for_run(settings, contract, run_date, retrain_running=False, manual=True, advisory=True)
    # A backtest of the out-of-time cutoff, whose horizon the data covers: realized performance judges it, so the
    # customer page has an outcome to show per customer.
    metadata = read_metadata(latest_snapshot_dir(settings, contract.name))
    score(settings, contract, run_id="pages-backfill", cutoff=dt.date.fromisoformat(metadata.cutoffs["out_of_time"][0]))
    compute_realized_performance(settings, contract, run_date)
    return settings
