"""A public-churn-CSV-like file, used as it comes (a Yes/No label, blank " " cells in a numeric column), trains end
to end through the CLI from a contract of under 15 lines (docs/own-data.md walks through the same steps)."""

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
