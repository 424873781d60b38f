"""Training is honest (time folds never look ahead) and leaves a registered, aliased, fully tracked model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from churnops.jobs.evaluate import binary_metrics, f1_threshold
from churnops.jobs.training.data import time_folds
from churnops.metrics import precision_at_top


def test_time_folds_fit_only_on_cutoffs_whose_labels_ended_before_validation() -> None:
    cutoffs = [pd.Timestamp(f"2024-{m:02d}-01") for m in range(1, 10)]
    folds = time_folds(cutoffs, horizon_days=60, n_folds=2)
    assert [f.valid_cutoff for f in folds] == cutoffs[-2:]
    for fold in folds:
        assert all(c + pd.Timedelta(days=60) <= fold.valid_cutoff for c in fold.fit_cutoffs)
        assert fold.valid_cutoff not in fold.fit_cutoffs


def test_time_folds_refuse_cutoffs_closer_than_the_horizon() -> None:
    with pytest.raises(ValueError, match="closer together than the 90-day horizon"):
        time_folds([pd.Timestamp("2024-01-01"), pd.Timestamp("2024-02-01")], horizon_days=90, n_folds=1)


def test_binary_metrics_agree_with_sklearn_and_rank_the_top_decile() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 1000)
    scores = np.clip(labels * 0.3 + rng.random(1000) * 0.7, 0, 1)
    metrics = binary_metrics(labels, scores)
    assert metrics["roc_auc"] == pytest.approx(roc_auc_score(labels, scores))
    assert metrics["gini"] == pytest.approx(2 * metrics["roc_auc"] - 1)
    top = np.argsort(-scores)[:100]
    assert metrics["precision_at_10"] == pytest.approx(labels[top].mean())
    assert precision_at_top(labels, scores, 0.10) == metrics["precision_at_10"]


def test_f1_threshold_separates_perfectly_separable_scores() -> None:
    labels = np.array([0, 0, 0, 1, 1])
    scores = np.array([0.1, 0.2, 0.3, 0.8, 0.9])
    assert f1_threshold(labels, scores) == 0.8


def test_trained_model_is_champion_with_nested_trials_and_lineage(trained_platform) -> None:
    import mlflow
    from mlflow import MlflowClient

    from churnops.registry import configure_mlflow

    configure_mlflow(trained_platform.settings)
    client = MlflowClient()
    name = trained_platform.contract.model_name
    champion = client.get_model_version_by_alias(name, "champion")
    assert str(champion.version) == trained_platform.model_version
    assert champion.tags["promoted"] == "true"
    parent = mlflow.get_run(mlflow.models.get_model_info(f"models:/{name}/{champion.version}").run_id)
    children = mlflow.search_runs(
        experiment_ids=[parent.info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'",
    )
    assert len(children) >= 10
    assert parent.data.metrics["oot_roc_auc"] > 0.75
    assert len(parent.data.tags["churnops.snapshot_hash"]) == 64


def test_the_registered_model_scores_the_evaluation_customers_exactly_as_training_evaluated_them(
    trained_platform,
) -> None:
    """What serving and batch scoring load (booster + schema + post-processing from the registry) is what was
    measured: same out-of-time ROC AUC to the last digit (a schema whose columns come back in another order would
    feed categories into the wrong columns)."""
    import mlflow

    from churnops.features import CUTOFF, LABEL, LABEL_AVAILABLE
    from churnops.registry import configure_mlflow, load_model_version
    from churnops.snapshots import latest_snapshot_dir, load_snapshot

    settings, contract = trained_platform.settings, trained_platform.contract
    configure_mlflow(settings)
    model = load_model_version(contract.model_name, trained_platform.model_version)
    assert model.schema.columns == model.booster.feature_name()
    frame, metadata = load_snapshot(latest_snapshot_dir(settings, contract.name))
    evaluated = frame[frame[LABEL_AVAILABLE] & frame[CUTOFF].isin(pd.to_datetime(metadata.cutoffs["out_of_time"]))]
    scores = model.predict_matrix(model.schema.encode_frame(evaluated))
    run = mlflow.get_run(mlflow.models.get_model_info(f"models:/{contract.model_name}/{model.version}").run_id)
    assert binary_metrics(evaluated[LABEL].to_numpy(), scores)["roc_auc"] == pytest.approx(
        run.data.metrics["oot_roc_auc"], abs=1e-12
    )


def test_retraining_an_unchanged_snapshot_is_skipped_and_registers_no_version(trained_platform) -> None:
    """The training rows are those the champion learned from: nothing runs, the skip is recorded in MLflow."""
    import mlflow
    from mlflow import MlflowClient

    from churnops.jobs.training import train
    from churnops.registry import configure_mlflow

    settings, contract = trained_platform.settings, trained_platform.contract
    configure_mlflow(settings)
    before = MlflowClient().search_model_versions(f"name = '{contract.model_name}'")
    result = train(settings, contract, reason="drift_detected")

    assert result.skipped and "no new data" in result.skip_reason
    assert result.model_version == trained_platform.model_version
    assert len(MlflowClient().search_model_versions(f"name = '{contract.model_name}'")) == len(before)
    skip = mlflow.get_run(result.run_id).data.tags
    assert skip["churnops.outcome"] == "skipped" and skip["churnops.retrain_reason"] == "drift_detected"


@pytest.mark.slow
def test_the_same_training_rows_and_seed_reproduce_the_model(trained_platform, tmp_path) -> None:
    """A fresh registry trained on a copy of the same snapshot gets the same out-of-time ROC AUC to the last digit."""
    import shutil

    import mlflow

    from churnops.config import Settings
    from churnops.jobs.training import train
    from churnops.registry import configure_mlflow

    original = trained_platform.settings
    copy = Settings(home=tmp_path / "home", training=original.training, spark=original.spark)
    shutil.copytree(original.features_dir, copy.features_dir)
    result = train(copy, trained_platform.contract)

    configure_mlflow(original)
    name = trained_platform.contract.model_name
    logged = mlflow.get_run(mlflow.models.get_model_info(f"models:/{name}/{trained_platform.model_version}").run_id)
    assert not result.skipped
    assert result.evaluation_metrics["roc_auc"] == pytest.approx(logged.data.metrics["oot_roc_auc"], abs=1e-12)


def test_training_run_logs_every_report_artifact_and_compares_with_baselines(trained_platform) -> None:
    """The parent run carries the plots, the model card and evaluation.json; the report names the baselines."""
    import json

    import mlflow
    from mlflow import MlflowClient

    from churnops.registry import configure_mlflow

    configure_mlflow(trained_platform.settings)
    name = trained_platform.contract.model_name
    run_id = mlflow.models.get_model_info(f"models:/{name}/{trained_platform.model_version}").run_id
    artifacts = {Path(a.path).name for a in MlflowClient().list_artifacts(run_id, "report")}
    assert {
        "roc.png",
        "precision_recall.png",
        "calibration.png",
        "gain_lift.png",
        "shap_summary.png",
        "importance_gain.png",
        "model_card.md",
        "evaluation.json",
    } <= artifacts
    evaluation = json.loads(
        Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="report/evaluation.json")).read_text()
    )
    assert set(evaluation["baselines"]) >= {"logistic_regression", "recency_rule", "bgnbd"}
    assert evaluation["snapshot_hash"] == mlflow.get_run(run_id).data.tags["churnops.snapshot_hash"]
    assert len(evaluation["retro_test"]["gini_by_cutoff"]) >= 3
