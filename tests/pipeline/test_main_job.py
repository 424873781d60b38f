"""The README's first command, end to end: `churnops run` drives the three DAGs on the embedded Airflow."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest


@pytest.mark.slow
def test_main_job_runs_every_dag_and_prints_the_summary(tmp_path: Path) -> None:
    env = {**os.environ, "CHURNOPS_HOME": str(tmp_path), "CHURNOPS_SPARK__MASTER": "local[2]"}
    churnops = Path(sys.executable).parent / "churnops"
    completed = subprocess.run(
        [str(churnops), "run", "--customers", "1200", "--trials", "10"],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    summary = completed.stdout
    assert "churnops main job finished" in summary
    assert "Champion: churnops-synthetic v1" in summary
    for dag_id in ("churnops_features", "churnops_training", "churnops_scoring"):
        assert dag_id in summary

    scores = pd.read_parquet(tmp_path / "scores" / "synthetic" / "scores_2025-01-01.parquet")
    assert len(scores) > 100
    assert scores["customer_id"].is_unique
    assert scores["score"].between(0, 1).all()
    # Deciles rank the list (1 = highest risk); equal scores (a calibrated model has steps) share a decile.
    assert set(scores["risk_decile"]) <= set(range(1, 11)) and 1 in set(scores["risk_decile"])
    by_score = scores.sort_values("score", ascending=False)
    assert by_score["risk_decile"].is_monotonic_increasing
    assert (scores["model_version"] == "1").all()

    # `--trials 10` reached the training task in the Airflow child (the default is 20). A client of its own: this
    # process's MLflow must keep pointing at the session's store for the other tests.
    from mlflow import MlflowClient

    from churnops.config import Settings

    client = MlflowClient(tracking_uri=Settings(home=tmp_path).tracking_uri)
    version = client.get_model_version("churnops-synthetic", "1")
    assert client.get_run(version.run_id).data.metrics["n_trials"] == 10
