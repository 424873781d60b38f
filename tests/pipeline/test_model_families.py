"""Every model family is a candidate for champion, chosen on the validation folds: on a customer table whose signal
is smooth and linear, the logistic regression beats LightGBM there and becomes champion; as entity data it is
refitted on every labelled row after evaluation; and the API scores its customers exactly as the batch job does."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from churnops.config import Settings
from churnops.dataset import DatasetContract, load_contract

CUSTOMERS = 1_600
USAGE_COLUMNS = [f"usage_{i}" for i in range(8)]
CONTRACT = f"""\
name: linear_signal
entities:
  path: accounts.csv
  format: csv
  key: account_id
  categorical: [plan]
  numeric: [{", ".join(USAGE_COLUMNS)}]
label:
  kind: column
  column: churned
"""


def linear_signal_table(customers: int, seed: int) -> pd.DataFrame:
    """Eight heavy-tailed usage totals whose log each moves the log-odds a little, plus a plan: an additive, smooth
    signal a linear model fits exactly and trees can only approximate in steps. Some cells are blank."""
    rng = np.random.default_rng(seed)
    usage = rng.lognormal(mean=1.0, sigma=1.0, size=(customers, len(USAGE_COLUMNS)))
    logs = np.log1p(usage)
    weights = np.array([0.9, -0.8, 0.7, -0.6, 0.6, -0.5, 0.5, -0.4])
    plan = rng.choice(["basic", "pro", "max"], size=customers)
    logit = (logs - logs.mean(axis=0)) @ weights + np.where(plan == "max", -0.6, 0.0)
    table = pd.DataFrame(usage.round(3), columns=USAGE_COLUMNS)
    table.loc[rng.random(customers) < 0.05, "usage_7"] = np.nan
    table.insert(0, "account_id", [f"a{i:05d}" for i in range(customers)])
    table["plan"] = plan
    table["churned"] = (rng.random(customers) < 1.0 / (1.0 + np.exp(-logit))).astype(int)
    return table


@dataclass(frozen=True)
class TrainedLinearSignal:
    settings: Settings
    contract: DatasetContract
    table: pd.DataFrame
    evaluation: dict
    report_dir: Path
    model_version: str


@pytest.fixture(scope="module")
def linear_signal(tmp_path_factory: pytest.TempPathFactory) -> TrainedLinearSignal:
    """The table's features built with Spark and trained (a few Optuna trials) into a registered champion."""
    from churnops.jobs.features import build_feature_snapshot
    from churnops.jobs.spark import spark_session
    from churnops.jobs.training import train

    folder = tmp_path_factory.mktemp("linear-signal")
    table = linear_signal_table(CUSTOMERS, seed=7)
    table.to_csv(folder / "accounts.csv", index=False)
    (folder / "linear_signal.yaml").write_text(CONTRACT)
    settings = Settings(
        home=folder / "home",
        dataset=str(folder / "linear_signal.yaml"),
        training={"n_trials": 4, "seed": 3},
        spark={"master": "local[2]"},
    )
    contract = load_contract(settings.dataset, settings)
    spark = spark_session(settings, "churnops-tests")
    try:
        build_feature_snapshot(spark, contract, settings)
    finally:
        spark.stop()
    result = train(settings, contract)
    evaluation = json.loads(result.evaluation_path.read_text())
    return TrainedLinearSignal(
        settings, contract, table, evaluation, result.evaluation_path.parent, result.model_version
    )


@pytest.mark.slow
def test_a_logistic_regression_that_beats_lightgbm_on_the_folds_becomes_champion(linear_signal) -> None:
    from churnops.registry import configure_mlflow, load_alias

    selection = linear_signal.evaluation["selection"]
    cv = selection["family_cv_roc_auc"]
    assert cv["logistic_regression"] > cv["lightgbm"]
    assert selection["family"] == linear_signal.evaluation["new_model"]["family"] == "logistic_regression"
    assert "lightgbm" in linear_signal.evaluation["baselines"]  # the family not chosen, measured beside it

    configure_mlflow(linear_signal.settings)
    champion = load_alias(linear_signal.contract.model_name)
    assert champion.version == linear_signal.model_version
    assert champion.family == "logistic_regression"
    assert champion.metadata["model_family"] == "logistic_regression"


@pytest.mark.slow
def test_an_entity_data_champion_is_refitted_on_every_labelled_row(linear_signal) -> None:
    """The registered model is the chosen configuration fitted on train + holdout, not the one that was measured on
    the holdout; the model card says so."""
    from churnops.jobs.training.candidates import fit_linear
    from churnops.jobs.training.data import TrainingData
    from churnops.registry import configure_mlflow, load_alias
    from churnops.snapshots import latest_snapshot_dir, load_snapshot

    settings, contract = linear_signal.settings, linear_signal.contract
    configure_mlflow(settings)
    champion = load_alias(contract.model_name)
    assert champion.metadata["refitted_on_all_rows"] == CUSTOMERS
    assert linear_signal.evaluation["new_model"]["refitted_on_all_rows"] == CUSTOMERS

    frame, metadata = load_snapshot(latest_snapshot_dir(settings, contract.name))
    data = TrainingData(frame, metadata, contract, settings.training.cv_folds, settings.training.seed)
    every_row = data.all_rows_view("all")
    refit = fit_linear(every_row, data.y_all, np.ones(len(data.y_all), dtype=bool))
    measured = fit_linear(data.view("all"), data.y_train, np.ones(len(data.y_train), dtype=bool))
    holdout = champion.schema.encode_frame(data.eval)
    assert np.array_equal(champion.booster.predict(holdout), refit.predict(every_row.x_eval))
    assert not np.allclose(champion.booster.predict(holdout), measured.predict(data.view("all").x_eval))
    card = (linear_signal.report_dir / "model_card.md").read_text()
    assert f"Refitted on all {CUSTOMERS:,} labelled rows after evaluation" in card


@pytest.mark.slow
def test_the_api_scores_a_linear_champion_exactly_as_the_batch_job(linear_signal, tmp_path: Path) -> None:
    from churnops.jobs.score_input import score_input
    from churnops.serving.app import create_app

    settings, contract = linear_signal.settings, linear_signal.contract
    new_customers = linear_signal_table(30, seed=99).drop(columns=["churned"])
    new_customers.to_csv(tmp_path / "new.csv", index=False)
    run = score_input(settings, contract, tmp_path / "new.csv", tmp_path / "scores.csv")
    listed = pd.read_csv(run.output_path, dtype={"customer_id": str}, float_precision="round_trip")

    with TestClient(create_app(settings)) as client:
        from_api = {}
        for row in new_customers.to_dict(orient="records"):
            features = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
            customer = features.pop("account_id")
            response = client.post("/predict", json={"customer_id": customer, "features": features})
            assert response.status_code == 200, response.text
            from_api[customer] = response.json()["probability"]
    assert len(listed) == len(new_customers)
    assert listed.set_index("customer_id")["probability"].to_dict() == from_api  # exactly, not approximately
