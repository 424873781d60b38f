"""Drift monitoring against a real trained champion (Spark snapshot, Optuna/MLflow model): no injected drift gives
no retraining; injected drift in the raw data is flagged on the shifted features after the feature job re-cuts the
snapshot; the report is logged to the champion's training run; realized outcomes equal the feature job's labels."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import pandas as pd
import pytest

from churnops.config import MonitoringSettings, Settings
from churnops.dataset import load_contract
from churnops.monitoring.drift import run_drift_check
from churnops.monitoring.retrain import decide_and_record
from churnops.monitoring.retrain_run import champion_state
from churnops.monitoring.store import LocalStore
from churnops.snapshots import latest_snapshot_dir, read_metadata

pytestmark = pytest.mark.slow


@pytest.fixture
def platform_copy(trained_platform, tmp_path: Path):
    """A private copy of the session's trained platform, so re-cut snapshots do not leak into other tests."""
    home = tmp_path / "home"
    shutil.copytree(trained_platform.settings.home, home)
    # A fresh Settings (not model_copy, which would keep the cached paths of the original home).
    original = trained_platform.settings
    settings = Settings(home=home, training=original.training, spark=original.spark)
    return settings, load_contract("synthetic", settings)


def test_unchanged_data_shows_no_important_drift_and_starts_no_retraining(platform_copy) -> None:
    settings, contract = platform_copy
    store = LocalStore(settings.home / "monitoring")
    (run,) = run_drift_check(settings, contract, store=store)
    snapshot_run_date = read_metadata(latest_snapshot_dir(settings, contract.name)).run_date

    assert run.important_drifted == [], [(f.feature, f.psi) for f in run.features if f.drifted]
    assert Path(run.report_path).exists()
    decisions = decide_and_record(
        store,
        dataset=contract.name,
        champion=champion_state(settings, contract.model_name, contract.name),
        # Data time, as the drift DAG decides: the run's own date, not the wall clock (years after the data).
        now=dt.datetime.combine(dt.date.fromisoformat(snapshot_run_date), dt.time(), dt.UTC),
        retrain_running=False,
        monitoring=settings.monitoring,
    )
    assert decisions == []

    from mlflow import MlflowClient

    from churnops.registry import load_alias

    training_run = load_alias(contract.model_name).metadata["training_run_id"]
    logged = [a.path for a in MlflowClient().list_artifacts(training_run, f"drift/{run.drift_run_id}")]
    assert logged == [f"drift/{run.drift_run_id}/{run.drift_run_id}.html"]


def test_injected_drift_is_flagged_on_the_shifted_features_of_the_new_snapshot(platform_copy, tmp_path: Path) -> None:
    from churnops.jobs.features import build_feature_snapshot
    from churnops.jobs.inject_drift import write_drifted_dataset
    from churnops.jobs.spark import spark_session

    settings, contract = platform_copy
    drifted = write_drifted_dataset(
        contract, tmp_path / "drifted", shifts={"age": 15.0}, new_categories={"region": "offshore"}
    )
    drifted_contract = load_contract(str(drifted.contract_path), settings)
    spark = spark_session(settings, "churnops-tests-drift")
    try:
        build_feature_snapshot(spark, drifted_contract, settings)
    finally:
        spark.stop()

    store = LocalStore(settings.home / "monitoring")
    (run,) = run_drift_check(settings, drifted_contract, store=store, monitoring=MonitoringSettings())
    flagged = set(run.drifted_features)
    assert {"age", "region"} <= flagged
    untouched = {"plan", "channel", "days_since_last_event"} & {f.feature for f in run.features}
    assert untouched and not (untouched & flagged)


def test_realized_performance_of_a_matured_list_matches_the_feature_jobs_labels(platform_copy) -> None:
    from churnops.features import CUTOFF
    from churnops.jobs.score import score_frame
    from churnops.monitoring.realized import compute_realized_performance
    from churnops.paths import scores_path
    from churnops.registry import configure_mlflow, load_alias
    from churnops.snapshots import latest_snapshot_dir, load_snapshot
    from churnops.storage import write_parquet_atomically

    settings, contract = platform_copy
    configure_mlflow(settings)
    champion = load_alias(contract.model_name)
    frame, _ = load_snapshot(latest_snapshot_dir(settings, contract.name))
    cutoff = dt.date.fromisoformat(champion.metadata["out_of_time_cutoff"])
    rows = frame[(frame[CUTOFF] == pd.Timestamp(cutoff)) & frame["label_available"]]
    scored = score_frame(champion, rows, cutoff, settings.scoring.risk_bands)
    write_parquet_atomically(scored, scores_path(settings, contract.name, cutoff))

    store = LocalStore(settings.home / "monitoring")
    (realized,) = compute_realized_performance(settings, contract, store=store)

    # Independent: the Spark feature job's own labels for the same customers, joined to the listed scores.
    from sklearn.metrics import roc_auc_score

    from churnops.bronze import read_bronze_events
    from churnops.monitoring.realized import realized_outcomes

    joined = scored.merge(rows[["customer_id", "label"]], on="customer_id", validate="one_to_one")
    events = read_bronze_events(settings, contract.name)
    outcomes = realized_outcomes(events, contract, joined["customer_id"], cutoff)
    assert outcomes.tolist() == joined["label"].astype(int).tolist()
    assert realized.logical_date == cutoff and realized.n_scored == len(rows)
    assert realized.n_positive == int(rows["label"].sum())
    assert realized.roc_auc == pytest.approx(roc_auc_score(joined["label"], joined["score"]), abs=1e-12)
    assert realized.roc_auc > 0.7
    assert store.realized(contract.name)[0].roc_auc == realized.roc_auc
