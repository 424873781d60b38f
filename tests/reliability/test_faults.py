"""Injected faults the other suites do not cover: PostgreSQL unreachable during scoring (refused, then silent),
and the MLflow registry unreachable when the API starts. Each fault is injected for real (a closed port, a socket
that never answers, no tracking server) and each recovery is checked on the real service."""

from __future__ import annotations

import datetime as dt
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import httpx
import psycopg2
import pytest
from pydantic import SecretStr

from churnops import db
from churnops.jobs.score import score
from churnops.snapshots import latest_snapshot_dir, read_metadata
from tests.reliability.figures import record
from tests.serving.conftest import REPO, unused_port

# A scoring task must give up on a database that does not answer well before Airflow's retry would help.
DATABASE_GIVE_UP_SECONDS = 15.0
# The API must answer /health and /ready (503) this soon after start, registry or not: a liveness probe that gets
# no answer restarts the container, which meets the same registry and never becomes ready. The start-up waits
# serving.startup_load_timeout_seconds (10) for the first load; the rest of the ceiling is for a loaded machine's
# imports. A start-up blocked by MLflow's own retries (minutes, with backoff) still fails it.
API_ANSWERS_WITHIN_SECONDS = 60.0
POLL_SECONDS = 1.0


def scores_of(database_url: str, dataset: str, logical_date: dt.date) -> tuple[int, int]:
    """(rows, distinct customers) of one logical date's list."""
    with closing(psycopg2.connect(database_url)) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT count(*), count(DISTINCT customer_id) FROM churnops.scores"
            " WHERE dataset = %s AND logical_date = %s",
            (dataset, logical_date),
        )
        return cur.fetchone()


def test_scoring_with_postgresql_down_fails_cleanly_and_the_retry_writes_each_customer_once(
    trained_platform, platform_database_url
) -> None:
    settings, contract = trained_platform.settings, trained_platform.contract
    # A backtest of the snapshot's earliest training cutoff: a list (dated by that cutoff) no other test writes.
    metadata = read_metadata(latest_snapshot_dir(settings, contract.name))
    logical_date = min(dt.date.fromisoformat(day) for day in metadata.cutoffs["train"])
    password = "do-not-print-this-password"
    down = settings.model_copy(
        update={"database_url": SecretStr(f"postgresql://churnops:{password}@127.0.0.1:{unused_port()}/churnops")}
    )
    up = settings.model_copy(update={"database_url": SecretStr(platform_database_url)})

    with pytest.raises(psycopg2.OperationalError) as failure:
        score(down, contract, run_id="attempt-1", cutoff=logical_date)
    message = str(failure.value)
    assert "Connection refused" in message or "could not connect" in message, message
    assert password not in message, "the error message shows the database password"
    assert scores_of(platform_database_url, contract.name, logical_date) == (0, 0)

    retry = score(up, contract, run_id="attempt-2", cutoff=logical_date)
    after_retry = scores_of(platform_database_url, contract.name, logical_date)
    again = score(up, contract, run_id="attempt-3", cutoff=logical_date)
    after_rerun = scores_of(platform_database_url, contract.name, logical_date)

    record(
        "scoring_postgresql_down",
        faults_injected=1,
        recovered=int(after_retry == (retry.rows, retry.rows)),
        customers_scored=retry.rows,
        rows_after_retry=after_retry[0],
        rows_after_rerun=after_rerun[0],
        duplicate_rows=after_rerun[0] - after_rerun[1],
    )
    assert retry.rows_in_database == retry.rows > 0
    assert after_retry == (retry.rows, retry.rows), "the retry must write every customer exactly once"
    assert after_rerun == after_retry and again.rows == retry.rows


@pytest.fixture
def silent_database() -> Iterator[str]:
    """A PostgreSQL URL whose port accepts TCP connections but never says a word (a hung server or a stuck
    proxy). Closing the listener at the end resets the connections still waiting on it."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    try:
        yield f"postgresql://churnops:secret@127.0.0.1:{listener.getsockname()[1]}/churnops"
    finally:
        listener.close()


def test_connecting_to_a_database_that_never_answers_gives_up_with_a_clear_error(
    trained_platform, silent_database
) -> None:
    """`db.connect` is what every writer (scores, metrics, drift) opens: a hung server must not hang the task until
    Airflow's execution timeout (two hours); it must fail fast enough for the task's retries to matter."""
    settings = trained_platform.settings.model_copy(update={"database_url": SecretStr(silent_database)})
    outcome: list[BaseException | str] = []

    def connect() -> None:
        try:
            db.connect(settings).close()
            outcome.append("connected")
        except BaseException as error:  # noqa: BLE001 - whatever it raises is the outcome under test
            outcome.append(error)

    started = time.monotonic()
    attempt = threading.Thread(target=connect, daemon=True)
    attempt.start()
    attempt.join(DATABASE_GIVE_UP_SECONDS)
    waited = time.monotonic() - started
    assert not attempt.is_alive(), (
        f"db.connect is still waiting on a silent PostgreSQL after {waited:.0f} s: it sets no connect_timeout "
        "(churnops/db/connection.py connect), so a hung database hangs scoring until the task's execution_timeout"
    )
    assert isinstance(outcome[0], psycopg2.OperationalError), outcome


def start_api_without_registry(home: Path, tmp_path: Path, tracking_port: int) -> tuple[subprocess.Popen, str, Path]:
    """`churnops serve` pointed at an MLflow tracking server that is not there (nothing listens on the port)."""
    port = unused_port()
    log_path = tmp_path / "serve-no-registry.log"
    env = {
        **os.environ,
        "CHURNOPS_HOME": str(home),
        "CHURNOPS_DATASET": "synthetic",
        "CHURNOPS_MLFLOW_TRACKING_URI": f"http://127.0.0.1:{tracking_port}",
        "CHURNOPS_SERVING__RELOAD_INTERVAL_SECONDS": str(POLL_SECONDS),
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    command = [str(Path(sys.executable).parent / "churnops"), "serve", "--host", "127.0.0.1", "--port", str(port)]
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True
        )
    return process, f"http://127.0.0.1:{port}", log_path


def start_tracking_server(settings, port: int, log_path: Path) -> subprocess.Popen:
    """An MLflow tracking server over the trained platform's own store (the registry comes back)."""
    command = [
        str(Path(sys.executable).parent / "mlflow"),
        "server",
        "--backend-store-uri",
        settings.tracking_uri,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    with log_path.open("wb") as log:
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)


def poll(url: str, timeout: float) -> httpx.Response | None:
    try:
        return httpx.get(url, timeout=timeout)
    except httpx.HTTPError:
        return None


@pytest.mark.slow
def test_api_started_without_the_registry_reports_not_ready_then_serves_once_it_is_back(
    trained_platform, tmp_path
) -> None:
    tracking_port = unused_port()
    api, base_url, log_path = start_api_without_registry(trained_platform.settings.home, tmp_path, tracking_port)
    tracking = None
    try:
        # 1. No registry: the process stays up and says so, instead of refusing connections or exiting.
        started = time.monotonic()
        health = ready = None
        while time.monotonic() - started < API_ANSWERS_WITHIN_SECONDS and api.poll() is None:
            health, ready = poll(f"{base_url}/health", 2), poll(f"{base_url}/ready", 2)
            if health is not None and ready is not None:
                break
            time.sleep(0.5)
        answered_after = time.monotonic() - started
        assert api.poll() is None, f"the API exited ({api.returncode}) without a registry:\n{log_path.read_text()}"
        assert health is not None and ready is not None, (
            f"no answer on /health or /ready {answered_after:.0f} s after start with the registry down: the first "
            "model load blocks the lifespan start-up (serving/app.py) while MLflow retries, so uvicorn refuses "
            "connections and a liveness probe would restart the container in a loop"
        )
        assert health.status_code == 200
        assert ready.status_code == 503 and ready.json()["ready"] is False
        assert poll(f"{base_url}/model", 5).status_code == 503

        # 2. The registry comes back: the poller loads the champion, no restart needed.
        tracking = start_tracking_server(trained_platform.settings, tracking_port, tmp_path / "mlflow.log")
        back_at = time.monotonic()
        while time.monotonic() - back_at < 90:
            ready = poll(f"{base_url}/ready", 2)
            if ready is not None and ready.status_code == 200:
                break
            time.sleep(0.5)
        recovered_after = time.monotonic() - back_at
        assert ready is not None and ready.status_code == 200, f"still not ready:\n{log_path.read_text()[-3000:]}"
        assert ready.json()["model_version"] == trained_platform.model_version
        record(
            "api_start_without_registry",
            faults_injected=1,
            recovered=1,
            first_answer_seconds=round(answered_after, 1),
            ready_after_registry_back_seconds=round(recovered_after, 1),
        )
    finally:
        stop(api)
        if tracking is not None:
            stop(tracking)
