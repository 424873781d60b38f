"""The value model in the platform's runs: the training job trains, registers and gates it beside the churn model,
and the scoring job puts expected value and the campaign into the list (Parquet and PostgreSQL) and the export."""

from __future__ import annotations

import datetime as dt
import json
from contextlib import closing
from pathlib import Path

import numpy as np
import pandas as pd
import psycopg2
import pytest

from churnops import db
from churnops.config import Settings
from churnops.dataset import load_contract
from churnops.jobs.export import export_top_k
from churnops.jobs.score import score
from churnops.jobs.value.history import purchase_history
from churnops.jobs.value.pipeline import add_value_columns, purchase_events, train_value_step
from churnops.registry import configure_mlflow
from churnops.value_contract import VALUE_LIST_COLUMNS
from tests.serving.conftest import deployed_copy, platform_database_url  # noqa: F401 - fixtures re-exported

pytestmark = pytest.mark.slow


def test_training_registers_a_gated_value_model_with_nested_trials_and_baselines(trained_platform) -> None:
    import mlflow
    from mlflow import MlflowClient

    configure_mlflow(trained_platform.settings)
    contract = trained_platform.contract
    name = contract.value_model_name
    champion = MlflowClient().get_model_version_by_alias(name, "champion")
    assert champion.tags["promoted"] == "true"
    run = mlflow.get_run(champion.run_id)
    assert run.data.tags["churnops.kind"] == "value_training"
    trials = mlflow.search_runs(
        experiment_ids=[run.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{run.info.run_id}'"
    )
    assert len(trials) == contract.value.n_trials
    metrics = run.data.metrics
    for baseline in ("past_spend_rate", "pareto_nbd_gamma_gamma", "bgnbd_gamma_gamma"):
        assert np.isfinite(metrics[f"{baseline}_spearman"])
    # A first model is promoted only when it ranks customers better than the naive past-spend rate.
    assert metrics["value_model_spearman"] > metrics["past_spend_rate_spearman"]
    # Stored as LightGBM text with its settings as metadata: nothing pickled.
    model_dir = Path(mlflow.artifacts.download_artifacts(f"models:/{name}/{champion.version}"))
    assert not list(model_dir.rglob("*.pkl"))
    assert "value_params" in (mlflow.models.Model.load(model_dir / "MLmodel").metadata or {})


def test_a_rerun_on_the_same_purchases_registers_no_new_value_version(trained_platform) -> None:
    from mlflow import MlflowClient

    configure_mlflow(trained_platform.settings)
    name = trained_platform.contract.value_model_name
    before = MlflowClient().search_model_versions(f"name = '{name}'")
    result = train_value_step(trained_platform.settings, trained_platform.contract)
    assert result is not None and result.skipped
    assert len(MlflowClient().search_model_versions(f"name = '{name}'")) == len(before)


def test_scoring_puts_expected_value_and_the_campaign_into_parquet_postgres_and_the_export(
    deployed_copy: Settings,  # noqa: F811 - the fixture
    tmp_path: Path,
) -> None:
    contract = load_contract("synthetic", deployed_copy)
    run = score(deployed_copy, contract, run_id="valued")
    listed = pd.read_parquet(run.path)
    value = contract.value

    # The saved value is the churn score (a churn label) x expected value x save rate - contact cost, ranked.
    expected_saved = listed["score"] * listed["expected_value"] * value.save_rate - value.contact_cost
    np.testing.assert_allclose(listed["expected_saved_value"], expected_saved)
    by_rank = listed.sort_values("campaign_rank")
    assert by_rank["campaign_rank"].tolist() == list(range(1, len(listed) + 1))
    assert by_rank["expected_saved_value"].is_monotonic_decreasing
    # The campaign: the top of that ranking, positive saved value only, within the 500-customer budget.
    chosen = listed[listed["in_campaign"]]
    assert 0 < len(chosen) <= value.budget.customers
    assert (chosen["expected_saved_value"] > 0).all()
    assert sorted(chosen["campaign_rank"]) == list(range(1, len(chosen) + 1))
    # No purchase before the cutoff, no history to forecast from: an expected value of 0, and only for them.
    buyers = purchase_history(purchase_events(deployed_copy, contract, before=run.cutoff), run.cutoff).index
    never_bought = ~listed["customer_id"].isin(buyers.astype(str))
    assert (listed.loc[never_bought, "expected_value"] == 0).all()
    assert (listed.loc[~never_bought, "expected_value"] > 0).all()

    with closing(psycopg2.connect(deployed_copy.database_url.get_secret_value())) as conn:
        stored = db.latest_scores(conn, contract.name).set_index("customer_id").loc[listed["customer_id"]]
        for column in VALUE_LIST_COLUMNS:
            assert stored[column].tolist() == listed[column].tolist(), column
        export = export_top_k(conn, dataset=contract.name, top_k=50, out_dir=tmp_path / "export")
    exported = pd.read_parquet(export.paths["parquet"])
    assert set(VALUE_LIST_COLUMNS) <= set(exported.columns)
    assert exported["expected_value"].notna().all()


def test_a_dataset_without_a_value_section_trains_and_scores_exactly_as_before(trained_platform) -> None:
    contract = trained_platform.contract.model_copy(update={"value": None})
    listed = pd.DataFrame({"customer_id": ["1"], "score": [0.5]})
    assert train_value_step(trained_platform.settings, contract) is None
    assert add_value_columns(trained_platform.settings, contract, listed, dt.date(2025, 1, 1)) is listed


def test_the_evaluation_report_of_the_value_model_is_logged(trained_platform) -> None:
    import mlflow
    from mlflow import MlflowClient

    configure_mlflow(trained_platform.settings)
    champion = MlflowClient().get_model_version_by_alias(trained_platform.contract.value_model_name, "champion")
    report = json.loads(
        Path(
            mlflow.artifacts.download_artifacts(run_id=champion.run_id, artifact_path="value_evaluation.json")
        ).read_text()
    )
    assert set(report["metrics"]) >= {"value_model", "past_spend_rate", "pareto_nbd_gamma_gamma"}
    assert report["promotion"].startswith("promoted")
