"""The survival model inside the platform: the real training job trains, tracks and registers it (no pickle), the
real scoring job puts its outputs in the list (Parquet and PostgreSQL) and the export, and censoring stays
censoring. Runs on the session's trained synthetic platform (its contract enables `survival:`)."""

from __future__ import annotations

import datetime as dt
from contextlib import closing
from pathlib import Path

import numpy as np
import pandas as pd
import psycopg2
import pytest

from churnops.config import Settings
from churnops.dataset import load_contract
from churnops.features import CUTOFF, ENTITY_ID
from churnops.jobs.survival.data import DURATION, EVENT
from churnops.jobs.survival.pipeline import promote_survival, survival_frames
from churnops.jobs.training.data import TrainingData
from churnops.snapshots import latest_snapshot_dir, load_snapshot
from tests.serving.conftest import deployed_copy, platform_database_url  # noqa: F401 - fixtures re-exported

SURVIVAL_COLUMNS = ["p_buy_30d", "p_buy_90d", "p_buy_180d", "median_days_to_next_purchase", "median_beyond_horizon"]


def test_the_gate_promotes_only_a_better_c_index_or_the_first_model() -> None:
    assert promote_survival(0.70, None, None)
    assert promote_survival(0.71, "3", 0.70)
    assert not promote_survival(0.70, "3", 0.70)
    assert not promote_survival(0.69, "3", 0.70)
    assert not promote_survival(0.99, "3", None)  # a champion that cannot be scored is not replaced blind


@pytest.fixture(scope="module")
def frames(trained_platform):
    settings, contract = trained_platform.settings, trained_platform.contract
    frame, metadata = load_snapshot(latest_snapshot_dir(settings, contract.name))
    data = TrainingData(frame, metadata, contract, settings.training.cv_folds, settings.training.seed)
    return survival_frames(settings, contract, data, metadata), settings, contract


@pytest.mark.slow
def test_a_customer_without_a_purchase_by_the_end_of_the_data_is_censored_not_a_non_buyer(frames) -> None:
    from churnops.bronze import read_bronze_events

    built, settings, contract = frames
    events = read_bronze_events(settings, contract.name, columns=[ENTITY_ID, "event_day", "event_type"])
    purchases = events[events["event_type"] == "purchase"]
    purchase_days = pd.to_datetime(purchases["event_day"])
    evaluation = pd.Timestamp(built.evaluation_cutoff)
    # Evaluation rows: no purchase from the cutoff to the end of the data -> censored at the whole follow-up.
    bought_after = set(purchases.loc[purchase_days >= evaluation, ENTITY_ID].astype(str))
    quiet = ~built.evaluated[ENTITY_ID].astype(str).isin(bought_after)
    assert quiet.any() and (~quiet).any()
    follow_up = (built.data_end - built.evaluation_cutoff).days + 1
    assert (built.evaluated.loc[quiet, EVENT] == 0).all()
    assert (built.evaluated.loc[quiet, DURATION] == follow_up).all()
    assert (built.evaluated.loc[~quiet, EVENT] == 1).all()
    assert (built.evaluated.loc[~quiet, DURATION] <= follow_up).all()
    # Training rows: a purchase on or after the evaluation cutoff is never seen; those customers are censored on
    # the day before it.
    last_seen_day = pd.to_datetime(built.training[CUTOFF]) + pd.to_timedelta(built.training[DURATION] - 1, unit="D")
    assert (last_seen_day < evaluation).all()
    censored = built.training[EVENT] == 0
    assert censored.any()
    assert (last_seen_day[censored] == evaluation - pd.Timedelta(days=1)).all()


@pytest.mark.slow
def test_training_registers_a_survival_champion_without_pickle_tracked_beside_cox(trained_platform) -> None:
    import mlflow
    from mlflow import MlflowClient

    from churnops.registry import configure_mlflow

    settings, contract = trained_platform.settings, trained_platform.contract
    configure_mlflow(settings)
    client = MlflowClient()
    name = contract.survival_model_name
    assert name == "churnops-synthetic-survival"
    champion = client.get_model_version_by_alias(name, "champion")
    run = mlflow.get_run(champion.run_id)
    assert run.data.tags["churnops.kind"] == "survival_training"
    for metric in ("survival_c_index", "survival_auc_30d", "survival_integrated_brier", "cox_c_index", "cv_c_index"):
        assert np.isfinite(run.data.metrics[metric]), metric
    assert 0.5 < run.data.metrics["survival_c_index"] <= 1.0
    trials = mlflow.search_runs(
        experiment_ids=[run.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{run.info.run_id}'"
    )
    assert len(trials) == contract.survival.trials
    assert set(trials["tags.churnops.kind"]) == {"survival_trial"}
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "survival_report")}
    assert artifacts == {"survival_report/km_by_band.png", "survival_report/metrics.md"}
    folder = Path(mlflow.artifacts.download_artifacts(f"models:/{name}/{champion.version}"))
    files = {p.name for p in folder.iterdir()}
    assert {"MLmodel", "hazard_booster.lgb", "survival_model.json"} <= files
    assert not [f for f in files if f.endswith((".pkl", ".pickle", ".cloudpickle"))]


@pytest.mark.slow
def test_the_scoring_job_adds_the_survival_columns_to_parquet_postgres_the_export_and_predict(
    deployed_copy: Settings,  # noqa: F811 - the fixture
    tmp_path: Path,
) -> None:
    from churnops.jobs.export import export_top_k
    from churnops.jobs.score import score

    contract = load_contract("synthetic", deployed_copy)
    run = score(deployed_copy, contract, run_id="survival-list")
    listed = pd.read_parquet(run.path)
    assert listed.columns[-5:].tolist() == SURVIVAL_COLUMNS
    p30, p90, p180 = (listed[c].to_numpy() for c in SURVIVAL_COLUMNS[:3])
    assert ((0 <= p30) & (p30 <= p90) & (p90 <= p180) & (p180 <= 1)).all()
    median, beyond = listed["median_days_to_next_purchase"], listed["median_beyond_horizon"]
    assert (median.isna() == beyond).all()
    assert (median.dropna() > 0).all()
    # A reported median is where P(buy) crosses 1/2: a customer whose median is inside 30 days has p_buy_30d >= 1/2.
    assert (listed.loc[median <= 30, "p_buy_30d"] >= 0.5 - 1e-9).all()

    with closing(psycopg2.connect(deployed_copy.database_url.get_secret_value())) as conn:
        from churnops import db

        stored = db.latest_scores(conn, contract.name).set_index(ENTITY_ID).loc[listed[ENTITY_ID].astype(str)]
        np.testing.assert_array_equal(stored["p_buy_90d"].to_numpy(dtype=float), listed["p_buy_90d"].to_numpy())
        assert stored["median_beyond_horizon"].tolist() == beyond.tolist()
        exported = export_top_k(conn, dataset=contract.name, top_k=20, out_dir=tmp_path / "out", formats=("csv",))
    header = exported.paths["csv"].read_text(encoding="utf-8-sig").splitlines()[0].split(",")
    assert header[-5:] == SURVIVAL_COLUMNS
    _predict_returns_the_stored_survival_columns(deployed_copy, listed)


def _predict_returns_the_stored_survival_columns(settings: Settings, listed: pd.DataFrame) -> None:
    """/predict by customer_id answers with the stored list's survival columns for that customer."""
    from fastapi.testclient import TestClient

    from churnops import online_store
    from churnops.serving.app import create_app

    frame, metadata = load_snapshot(latest_snapshot_dir(settings, "synthetic"))
    cutoff = dt.date.fromisoformat(metadata.cutoffs["scoring"][0])
    online_store.publish_online_features(
        settings,
        frame[frame[CUTOFF] == pd.Timestamp(cutoff)],
        "synthetic",
        cutoff,
        feature_columns=metadata.feature_columns,
        snapshot_hash=metadata.content_hash,
    )
    serving = settings.serving.model_copy(update={"prediction_log_enabled": False})
    with TestClient(create_app(settings.model_copy(update={"serving": serving}))) as client:
        for _, row in listed.iloc[[0, len(listed) // 2, -1]].iterrows():
            response = client.post("/predict", json={"customer_id": str(row[ENTITY_ID])})
            assert response.status_code == 200, response.text
            survival = response.json()["survival"]
            assert survival["list_date"] == cutoff.isoformat()
            for column in SURVIVAL_COLUMNS[:3]:
                assert survival[column] == row[column]
            assert survival["median_beyond_horizon"] == bool(row["median_beyond_horizon"])
            median = row["median_days_to_next_purchase"]
            assert survival["median_days_to_next_purchase"] == (None if np.isnan(median) else median)


@pytest.mark.slow
def test_a_dataset_without_survival_scores_exactly_as_before(deployed_copy: Settings) -> None:  # noqa: F811
    from churnops.jobs.score import score

    contract = load_contract("synthetic", deployed_copy).model_copy(update={"survival": None})
    run = score(deployed_copy, contract, run_id="plain-list", cutoff=None)
    listed = pd.read_parquet(run.path)
    assert not [c for c in listed.columns if c in SURVIVAL_COLUMNS]
    assert (pd.to_datetime(listed["cutoff"]) == pd.Timestamp(run.cutoff)).all()


@pytest.mark.slow
def test_every_customer_of_the_list_gets_the_survival_prediction_of_their_own_snapshot_row(
    deployed_copy: Settings,  # noqa: F811 - the fixture
) -> None:
    """The list is ranked by churn score, the survival model predicts the snapshot's rows in their order: each list
    row must carry, bit for bit, what the survival champion predicts from that customer's own row."""
    from churnops.jobs.score import score
    from churnops.jobs.survival.model_store import load_survival_version
    from churnops.registry import champion_or_none

    contract = load_contract("synthetic", deployed_copy)
    run = score(deployed_copy, contract, run_id="survival-alignment")
    listed = pd.read_parquet(run.path)
    champion = champion_or_none(contract.survival_model_name)
    assert champion is not None
    model, _ = load_survival_version(contract.survival_model_name, str(champion.version))
    frame, _ = load_snapshot(latest_snapshot_dir(deployed_copy, "synthetic"), cutoffs=[run.cutoff])
    expected = model.predict_customers(frame, contract.survival.horizons)
    expected.index = frame[ENTITY_ID].astype(str).to_numpy()
    expected = expected.loc[listed[ENTITY_ID].astype(str)]
    assert listed[ENTITY_ID].tolist() != frame[ENTITY_ID].tolist()  # the orders differ: alignment is exercised
    for column in SURVIVAL_COLUMNS:
        np.testing.assert_array_equal(listed[column].to_numpy(), expected[column].to_numpy(), err_msg=column)
