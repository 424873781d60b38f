"""The stack the tests in this folder share (one per session: it takes minutes to start and to run the pipeline)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from churnops.config import Settings
from churnops.snapshots import METADATA_FILE, latest_snapshot_dir
from tests.deploy.support import native_stack
from tests.stack.support import (
    DAG_RUN_CEILING_S,
    PIPELINE,
    REPO,
    STARTUP_CEILING_S,
    airflow_client,
    drop_databases,
    finished_run,
    log_tails,
    succeeded,
    trigger,
    wait,
)


@pytest.fixture(scope="session")
def stack() -> Iterator[Any]:
    # Not under pytest's basetemp: other pytest sessions on the machine rotate those folders away mid-run.
    stack_module = native_stack()
    paths = stack_module.StackPaths(Path(tempfile.mkdtemp(prefix="churnops-native-stack-")))
    # Databases of its own on the machine's server, so a developer's `make stack-up` data is never touched and
    # every run starts empty (no champion left over from an earlier run).
    suffix = f"_stacktest_{os.getpid()}"
    settings = {
        "CHURNOPS_TRAINING__N_TRIALS": "10",
        "CHURNOPS_SERVING__RELOAD_INTERVAL_SECONDS": "3",
        "CHURNOPS_STACK_DB_SUFFIX": suffix,
    }
    up = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "native_stack.py"), "up", "--free-ports", "--dir", str(paths.root)],
        env={**os.environ, **settings},
        capture_output=True,
        text=True,
        timeout=STARTUP_CEILING_S,
    )
    try:
        assert up.returncode == 0, up.stdout + up.stderr + log_tails(paths)
        # The data the feature DAG reads, in place before anyone switches the DAGs on (they start paused), written
        # by the CLI from a shell set up like `native_stack.py env` (the stack's ports, its secrets).
        generated = subprocess.run(
            [sys.executable, "-m", "churnops.cli", "generate", "--customers", "1500"],
            env={**stack_module.stack_environment(paths), **settings},
            capture_output=True,
            text=True,
        )
        assert generated.returncode == 0, generated.stdout + generated.stderr
        yield paths
    finally:
        subprocess.run(
            [sys.executable, str(REPO / "scripts" / "native_stack.py"), "down", "--dir", str(paths.root)],
            env={**os.environ, **settings},
            capture_output=True,
            timeout=600,
        )
        drop_databases(suffix)
        # The logs outlive the run (the newest run's only), for whoever reads a failure.
        kept_logs = Path(tempfile.gettempdir()) / "churnops-native-stack-last-logs"
        shutil.rmtree(kept_logs, ignore_errors=True)
        shutil.copytree(paths.logs, kept_logs, dirs_exist_ok=True)
        shutil.rmtree(paths.root, ignore_errors=True)


@pytest.fixture(scope="session")
def pipeline_ran(stack: Any) -> Any:
    """Switch the DAGs on and trigger the feature DAG over REST; the drift DAG follows the new snapshot and, with
    no champion yet, requests the first training; scoring follows the new model (all through Assets)."""
    with airflow_client(stack) as client:
        wait(
            lambda: all(client.get(f"/api/v2/dags/{d}").status_code == 200 for d in PIPELINE),
            STARTUP_CEILING_S,
            "the dag-processor to parse the DAGs",
        )
        for dag_id in PIPELINE:
            assert client.patch(f"/api/v2/dags/{dag_id}", json={"is_paused": False}).status_code == 200
        triggered = client.post(
            "/api/v2/dags/churnops_features/dagRuns", json={"logical_date": None, "conf": {"dataset": "synthetic"}}
        )
        assert triggered.status_code == 200, triggered.text
        try:
            for dag_id in PIPELINE:
                wait(lambda dag_id=dag_id: finished_run(client, dag_id), DAG_RUN_CEILING_S, f"{dag_id} to succeed")
        except AssertionError as error:
            raise AssertionError(f"{error}\n{log_tails(stack)}") from error
    return stack


@pytest.fixture(scope="session")
def backtested(pipeline_ran: Any) -> str:
    """A backfill, as a user backtests: the scoring DAG triggered over REST for the snapshot's out-of-time cutoff,
    whose label horizon has passed; then a manual drift run, whose realized-performance task evaluates that list
    (the rest of the drift run, and any retraining it requests, is not waited for). Returns the cutoff."""
    snapshot = latest_snapshot_dir(Settings(home=pipeline_ran.home), "synthetic")
    cutoff = json.loads((snapshot / METADATA_FILE).read_text())["cutoffs"]["out_of_time"][0]
    with airflow_client(pipeline_ran) as client:
        try:
            scoring = trigger(client, "churnops_scoring", {"dataset": "synthetic", "cutoff": cutoff})
            wait(lambda: succeeded(client, "churnops_scoring", scoring), DAG_RUN_CEILING_S, f"the backfill of {cutoff}")
            drift = trigger(client, "churnops_drift", {"dataset": "synthetic"})
            wait(
                lambda: succeeded(client, "churnops_drift", drift, "realized_performance"),
                DAG_RUN_CEILING_S,
                "the drift DAG's realized performance",
            )
        except AssertionError as error:
            raise AssertionError(f"{error}\n{log_tails(pipeline_ran)}") from error
    return cutoff
