"""The report writes every artifact a reviewer looks at, from a real LightGBM booster."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from churnops.jobs.model_card import CARD_METRICS
from churnops.jobs.report import gain_curve, global_importances, write_report


def test_report_writes_plots_model_card_and_evaluation_json(tmp_path: Path) -> None:
    import lightgbm as lgb

    rng = np.random.default_rng(0)
    x = rng.normal(size=(3000, 4))
    x[rng.random(3000) < 0.1, 2] = np.nan  # missing values reach the SHAP plot too
    labels = (x[:, 0] + 0.5 * x[:, 1] + rng.normal(size=3000) > 1).astype(int)
    booster = lgb.train({"objective": "binary", "verbosity": -1, "num_threads": 1}, lgb.Dataset(x, labels), 30)
    scores = booster.predict(x)
    evaluation = minimal_evaluation()
    path = write_report(
        tmp_path,
        evaluation,
        labels=labels,
        scores={"new model": scores, "recency_rule": x[:, 0]},
        model=booster,
        x_eval=x,
        feature_names=["strong", "medium", "gappy", "noise"],
        seed=0,
    )
    written = json.loads(path.read_text())
    expected = {"roc.png", "precision_recall.png", "calibration.png", "gain_lift.png", "shap_summary.png"}
    assert expected | {"importance_gain.png"} <= set(written["artifacts"])
    for name in written["artifacts"]:
        assert (tmp_path / name).stat().st_size > 5000, name
    assert list(written["global_importances"])[0] == "strong"
    card = (tmp_path / "model_card.md").read_text()
    assert "| new model (LightGBM) | 0.8000" in card
    assert "| baseline: bgnbd | 0.7000" in card
    assert "no champion yet" in card


def test_gain_curve_of_a_perfect_ranking_catches_all_positives_first() -> None:
    labels = np.array([1, 1, 0, 0, 0, 0, 0, 0, 0, 0])
    targeted, caught = gain_curve(labels, -np.arange(10.0))
    assert caught[2] == 1.0 and targeted[2] == 0.2


def test_global_importances_sum_of_contributions_reproduces_the_margin() -> None:
    import lightgbm as lgb

    rng = np.random.default_rng(1)
    x = rng.normal(size=(500, 3))
    booster = lgb.train({"objective": "binary", "verbosity": -1}, lgb.Dataset(x, (x[:, 0] > 0).astype(int)), 10)
    contributions = booster.predict(x, pred_contrib=True)
    assert np.allclose(contributions.sum(axis=1), booster.predict(x, raw_score=True))
    assert set(global_importances(booster, x, ["a", "b", "c"])) == {"a", "b", "c"}


def minimal_evaluation() -> dict:
    metrics = dict.fromkeys(CARD_METRICS, 0.8)
    return {
        "model_name": "churnops-test",
        "model_version": "1",
        "training_run_id": "run",
        "created_at": "2026-01-01T00:00:00+00:00",
        "dataset": "test",
        "snapshot_id": "abc",
        "snapshot_hash": "abc" * 21 + "a",
        "git_commit": "deadbeef",
        "label": {"kind": "churn", "horizon_days": 60},
        "validation": "out_of_time",
        "evaluation_cutoff": "2024-11-01",
        "training_cutoffs": ["2024-06-01", "2024-07-01"],
        "training_rows": 1000,
        "evaluation_rows": 3000,
        "new_model": {"metrics": metrics},
        "champion": None,
        "baselines": {"bgnbd": {**metrics, "roc_auc": 0.7}},
        "leakage_findings": [],
        "selection": {
            "n_trials": 3,
            "feature_set": "all",
            "boosting_rounds": 30,
            "cv_roc_auc": 0.8,
            "family": "lightgbm",
            "family_cv_roc_auc": {"lightgbm": 0.8, "logistic_regression": 0.79},
            "blend_weight_bgnbd": 0.0,
            "calibration": "platt",
            "threshold": 0.3,
            "threshold_objective": "f1",
            "best_params": {"num_leaves": 8},
        },
        "retro_test": {"gini_by_cutoff": {"2024-07-01": 0.6}, "gini_mean": 0.6, "gini_std": 0.0, "gini_spread": 0.0},
        "promotion": {
            "promoted": True,
            "reason": "no champion yet",
            "sanity_checks": {"auc_above_floor": True},
            "margin": 0.002,
            "min_auc": 0.6,
        },
    }


def test_the_card_of_an_entity_level_model_says_holdout_where_there_is_no_time_axis() -> None:
    from churnops.jobs.report import model_card

    holdout = minimal_evaluation() | {"validation": "stratified_holdout", "evaluation_cutoff": None}
    card = model_card(holdout)
    assert "## Evaluation (holdout)" in card
    assert "stratified 20 % holdout" in card and "stratified-fold CV ROC AUC" in card
    assert "out-of-time cutoff" not in card and "evaluation cutoff" not in card and "time-fold" not in card

    out_of_time = model_card(minimal_evaluation())
    assert "## Evaluation (out-of-time)" in out_of_time and "the out-of-time cutoff 2024-11-01" in out_of_time
