"""Feature snapshots: reproducible hashes, tamper detection, and atomic publication under a killed job."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from churnops.bronze import read_manifest
from churnops.jobs.features import PROBES_DIR, build_feature_snapshot
from churnops.jobs.generate import generate, write_generated
from churnops.snapshots import (
    DATA_DIR,
    INPUTS_DIR,
    LATEST_FILE,
    RUNS_DIR,
    SnapshotIntegrityError,
    dataset_dir,
    latest_snapshot_dir,
    load_snapshot,
)
from tests.features.conftest import make_settings, synthetic_contract_yaml, write_contract

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A 60-customer synthetic dataset, its contract, and a private working home."""
    folder = tmp_path_factory.mktemp("tiny")
    data = generate(60, seed=5)
    write_generated(data, folder / "events.parquet", folder / "customers.parquet")
    contract = write_contract(folder, synthetic_contract_yaml(folder, name="tiny"))
    return folder, contract, make_settings(folder / "home")


def visible_snapshots(settings, dataset: str) -> set[str]:
    root = dataset_dir(settings, dataset)
    pointers = {RUNS_DIR, INPUTS_DIR, PROBES_DIR}
    if not root.exists():
        return set()
    return {p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".") and p.name not in pointers}


@pytest.mark.slow
def test_same_input_twice_gives_the_same_snapshot_hash(spark, tiny):
    _, contract, settings = tiny
    first = build_feature_snapshot(spark, contract, settings)
    second = build_feature_snapshot(spark, contract, settings)

    assert first.metadata.content_hash == second.metadata.content_hash
    assert first.snapshot_dir == second.snapshot_dir == latest_snapshot_dir(settings, contract.name)
    frame, metadata = load_snapshot(second.snapshot_dir)
    assert metadata.ingestion["rows_read"] == metadata.ingestion["rows_accepted"] > 0
    # The events' fingerprint is the bronze manifest's (path, SHA-256) list, not a re-read of the source bytes.
    assert metadata.source_fingerprints["events"] == read_manifest(settings, contract.name).fingerprint()
    assert sum(metadata.rows_per_cutoff.values()) == len(frame)


@pytest.mark.slow
def test_a_modified_snapshot_refuses_to_load(spark, tiny, tmp_path):
    _, contract, settings = tiny
    run = build_feature_snapshot(spark, contract, settings)
    copy = tmp_path / "copy"
    subprocess.run(["cp", "-r", str(run.snapshot_dir), str(copy)], check=True)
    part = sorted((copy / DATA_DIR).rglob("*.parquet"))[0]
    table = pq.read_table(part).to_pandas()
    table.loc[0, "amount_sum_all"] = table.loc[0, "amount_sum_all"] + 1.0  # one value changed
    table.to_parquet(part, index=False)

    load_snapshot(run.snapshot_dir)  # the original still loads
    with pytest.raises(SnapshotIntegrityError, match="modified after it was written"):
        load_snapshot(copy)


@pytest.mark.slow
def test_a_job_killed_mid_write_publishes_nothing(spark, tiny, tmp_path):
    folder, contract, settings = tiny
    before = build_feature_snapshot(spark, contract, settings)
    pointer = dataset_dir(settings, contract.name) / LATEST_FILE
    pointer_before, snapshots_before = pointer.read_text(), visible_snapshots(settings, contract.name)

    # New input, so a finished run would publish a new snapshot and move latest.json.
    write_generated(generate(60, seed=6), folder / "events.parquet", folder / "customers.parquet")
    env = {
        **os.environ,
        "CHURNOPS_HOME": str(settings.home),
        "CHURNOPS_SPARK__MASTER": "local[1]",
        "CHURNOPS_SPARK__DRIVER_MEMORY": "1g",
        "PYTHONPATH": str(REPO),
    }
    job = subprocess.Popen(
        [sys.executable, "-m", "churnops.jobs.features", "--dataset", str(folder / "tiny.yaml")],
        cwd=REPO,
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    root = dataset_dir(settings, contract.name)
    # A loaded machine may take minutes to start Spark: wait for the job's staging folder, not for a fixed time.
    deadline, staging = time.monotonic() + 900, None
    try:
        while staging is None and time.monotonic() < deadline and job.poll() is None:
            staging = next(iter(root.glob(".incoming.staging-*")), None)
            time.sleep(0.02)
        assert staging is not None, "the job never started writing its staging folder"
        os.killpg(job.pid, signal.SIGKILL)  # the driver and its JVM, mid-write
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
        job.wait(timeout=60)

    assert job.returncode == -signal.SIGKILL
    assert pointer.read_text() == pointer_before
    assert visible_snapshots(settings, contract.name) == snapshots_before
    frame, _ = load_snapshot(latest_snapshot_dir(settings, contract.name))
    assert len(frame) == sum(before.metadata.rows_per_cutoff.values())

    # The retry succeeds and publishes the new snapshot.
    retried = build_feature_snapshot(spark, contract, settings)
    assert retried.metadata.content_hash != before.metadata.content_hash
    assert latest_snapshot_dir(settings, contract.name) == retried.snapshot_dir
    assert json.loads(pointer.read_text())["snapshot_id"] == retried.metadata.snapshot_id
    assert isinstance(load_snapshot(retried.snapshot_dir)[0], pd.DataFrame)
