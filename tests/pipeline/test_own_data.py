"""A public-churn-CSV-like file, used as it comes (a Yes/No label, blank " " cells in a numeric column), trains end
to end through the CLI from a contract of under 15 lines, and a second file of new customers is scored with
`churnops score --input` (docs/own-data.md and docs/scoring-new-files.md walk through the same steps)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

CONTRACT = """\
name: telco
entities:
  path: accounts.csv
  format: csv
  key: account_id
  categorical: [plan, region, channel]
  numeric: [age, tenure_days, visits_90d, support_calls_90d, spend_90d]
label:
  kind: column
  column: churned
  positive: "Yes"
"""


def churnops(*args: str, home: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "CHURNOPS_HOME": str(home), "CHURNOPS_SPARK__MASTER": "local[2]"}
    command = [str(Path(sys.executable).parent / "churnops"), *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_a_telco_like_csv_trains_from_a_short_contract_with_no_edits_of_the_file(tmp_path: Path) -> None:
    from churnops.jobs.crm_example import build_crm_export

    export = build_crm_export(quirks=True)
    export.to_csv(tmp_path / "accounts.csv", index=False)
    (tmp_path / "telco.yaml").write_text(CONTRACT)
    assert len(CONTRACT.splitlines()) < 15
    blank_spend = int((export["spend_90d"] == " ").sum())
    assert blank_spend > 0 and set(export["churned"]) == {"Yes", "No"}
    contract, home = str(tmp_path / "telco.yaml"), tmp_path / "home"

    checked = churnops("check", "--dataset", contract, home=home)
    assert checked.returncode == 0, checked.stderr[-3000:]
    assert f"{blank_spend} blank cell(s) read as missing values" in " ".join(checked.stderr.split())

    features = churnops("features", "--dataset", contract, home=home)
    assert features.returncode == 0, features.stderr[-3000:]
    [snapshot] = (home / "features" / "telco").glob("*/data")
    rows = pd.read_parquet(snapshot).set_index("customer_id")
    expected = export.set_index(export["account_id"].astype(str))
    assert (rows["label"] == (expected.loc[rows.index, "churned"] == "Yes").astype(int)).all()
    assert rows["spend_90d"].isna().sum() == blank_spend

    trained = churnops("train", "--dataset", contract, "--trials", "2", home=home)
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert "churnops-telco v1" in trained.stderr and "promoted=True" in trained.stderr
    # No time axis: the evaluation is a holdout, and every name says so (the output, MLflow, the model card).
    assert "holdout ROC AUC" in trained.stderr and "out-of-time ROC AUC" not in trained.stderr
    metrics = _champion_run_metrics(home)
    assert 0.5 < metrics["holdout_roc_auc"] <= 1 and not [name for name in metrics if name.startswith("oot_")]
    [card] = (home / "reports" / "telco").glob("*/model_card.md")
    assert "## Evaluation (holdout)" in card.read_text()

    new_customers = build_crm_export(n_customers=400, seed=99, quirks=True).drop(columns=["churned"])
    new_customers.loc[new_customers.index[:2], "region"] = " "  # a blank category: a missing value, as in training
    new_customers.to_csv(tmp_path / "new_accounts.csv", index=False)
    scored = churnops("score", "--dataset", contract, "--input", str(tmp_path / "new_accounts.csv"), home=home)
    assert scored.returncode == 0, scored.stderr[-3000:]
    listed = pd.read_csv(tmp_path / "new_accounts.scores.csv", dtype={"customer_id": str})
    assert sorted(listed["customer_id"]) == sorted(new_customers["account_id"].astype(str))
    assert listed["probability"].between(0, 1).all() and (listed["model_name"] == "churnops-telco").all()


def _champion_run_metrics(home: Path) -> dict[str, float]:
    """The MLflow metrics of the training run that made the telco champion."""
    import mlflow

    from churnops.config import Settings
    from churnops.registry import configure_mlflow

    configure_mlflow(Settings(home=home))
    model = mlflow.models.get_model_info("models:/churnops-telco@champion")
    return mlflow.get_run(model.run_id).data.metrics
