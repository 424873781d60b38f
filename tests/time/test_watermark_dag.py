"""The feature DAG waits for its data: with a day's file missing the run waits, then fails naming the last day
seen; once the file is delivered the retry passes and the snapshot is the run date's. Missing data is never labelled
as churn."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from churnops.config import Settings
from churnops.dataset import load_contract
from churnops.jobs.feeder import EventFeeder
from churnops.jobs.generate import generate, write_generated

RUN_DATE = dt.date(2024, 12, 2)
MISSING_DAY = RUN_DATE - dt.timedelta(days=1)


def airflow(settings: Settings, *args: str, extra_env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "CHURNOPS_", "MLFLOW_"))}
    env = {**inherited, **settings.airflow_environment(), **extra_env}
    command = [str(Path(sys.executable).parent / "airflow"), *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_a_missing_day_makes_the_run_wait_then_fail_and_delivering_it_lets_the_retry_pass(tmp_path):
    source = tmp_path / "source"
    write_generated(generate(150, seed=3), source / "events.parquet", source / "customers.parquet")
    raw = yaml.safe_load((Path(__file__).resolve().parents[2] / "churnops/datasets/synthetic.yaml").read_text())
    raw["events"]["path"], raw["entities"]["path"] = str(source / "events.parquet"), str(source / "customers.parquet")
    (tmp_path / "recorded.yaml").write_text(yaml.safe_dump(raw))
    settings = Settings(home=tmp_path / "home", spark={"master": "local[2]"})
    recorded = load_contract(str(tmp_path / "recorded.yaml"), settings)

    feeder = EventFeeder.for_contract(recorded, tmp_path / "landing")
    feeder.release_history(dt.date(2024, 11, 1))
    feeder.release_until(RUN_DATE, skip_days=frozenset({MISSING_DAY}))
    raw["events"] = {**raw["events"], "path": str(tmp_path / "landing")}
    contract_path = tmp_path / "landed.yaml"
    contract_path.write_text(yaml.safe_dump(raw))

    env = {
        "CHURNOPS_HOME": str(settings.home),
        "CHURNOPS_SPARK__MASTER": "local[2]",
        "CHURNOPS_WATERMARK__POKE_INTERVAL_SECONDS": "1",
        "CHURNOPS_WATERMARK__TIMEOUT_SECONDS": "3",
    }
    settings.airflow_home.mkdir(parents=True)
    assert airflow(settings, "db", "migrate", extra_env=env).returncode == 0
    conf = json.dumps({"dataset": str(contract_path), "run_date": RUN_DATE.isoformat()})
    test_run = ("dags", "test", "churnops_features", RUN_DATE.isoformat(), "-c", conf)

    waited = airflow(settings, *test_run, extra_env=env)
    output = waited.stdout + waited.stderr
    assert waited.returncode != 0
    assert f"the events still end on {(MISSING_DAY - dt.timedelta(days=1)).isoformat()}" in output, output[-3000:]
    assert not (settings.features_dir / raw["name"] / "runs" / f"{RUN_DATE}.json").exists()

    assert feeder.release_until(RUN_DATE) == [MISSING_DAY]
    retried = airflow(settings, *test_run, extra_env=env)
    assert retried.returncode == 0, (retried.stdout + retried.stderr)[-3000:]

    from churnops.snapshots import load_snapshot, snapshot_dir_for

    frame, metadata = load_snapshot(snapshot_dir_for(settings, raw["name"], RUN_DATE))
    assert metadata.run_date == RUN_DATE.isoformat() and metadata.cutoffs["scoring"] == [RUN_DATE.isoformat()]
    # Labels are observed only where the horizon (60 days) ends by the run date: never on data not there yet.
    observed = frame[frame["label_available"]]
    assert (observed["cutoff"] + dt.timedelta(days=60) <= str(RUN_DATE)).all()
