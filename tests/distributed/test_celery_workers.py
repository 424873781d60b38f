"""Airflow on the CeleryExecutor as the native stack runs it: the tasks of one DAG run execute on both workers.

Only what that needs is started, with the native stack's own service definitions (scripts/native_stack_services.py)
on free ports: api-server, scheduler, dag-processor and the two Celery workers, on the machine's Redis (under a key
prefix of this run's own) and a fresh Airflow database on the machine's PostgreSQL. The DAG
(tests/distributed/dags/two_workers_meet.py) has two tasks that can finish only together; each worker runs one task
at a time, so a successful run is one whose tasks ran at once on two workers, and each task's recorded host says
which.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg2
import pytest
import redis
from cryptography.fernet import Fernet
from psycopg2 import sql

from tests.deploy.support import native_stack
from tests.stack.support import STARTUP_CEILING_S, airflow_client, log_tails, succeeded, trigger, wait

pytestmark = pytest.mark.slow

DAG_ID = "churnops_test_two_workers_meet"
DAGS = Path(__file__).resolve().parent / "dags"
POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/postgres"  # the machine's server, trust authentication
RUN_CEILING_S = 900
STARTED = ("airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-worker-1", "airflow-worker-2")


def _admin(statement: sql.Composable) -> None:
    connection = psycopg2.connect(POSTGRES_URL, connect_timeout=10)
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute(statement)
    connection.close()


def _write_secrets(paths: Any, database: str) -> None:
    """The secrets the Airflow components read (the rest of the stack's are not needed here)."""
    paths.secrets.mkdir(parents=True, mode=0o700)
    values = {
        "airflow_db_url": f"postgresql+psycopg2://postgres@127.0.0.1:5432/{database}",
        "airflow_fernet_key": Fernet.generate_key().decode(),
        "airflow_jwt_secret": secrets.token_urlsafe(32),
        "airflow_api_secret_key": secrets.token_urlsafe(32),
        "airflow_admin_password": secrets.token_urlsafe(16),
    }
    for name, value in values.items():
        (paths.secrets / name).write_text(value)  # no newline: Airflow keeps a *_CMD output as it is


@pytest.fixture
def celery_airflow(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, str]]:
    """The Airflow components on free ports; yields the stack folder and this run's Redis key prefix."""
    stack = native_stack()
    # Unreachable prerequisites fail here, loudly: this test is the evidence that the distributed executor works.
    broker = redis.Redis.from_url(stack.REDIS_BROKER_URL, socket_connect_timeout=5)
    assert broker.ping(), f"Redis at {stack.REDIS_BROKER_URL} does not answer (start it: redis-server --daemonize yes)"
    suffix = f"_celerytest_{os.getpid()}"
    monkeypatch.setenv("CHURNOPS_STACK_DB_SUFFIX", suffix)  # the stack's own way to keep its Redis keys apart
    prefix, database = stack.redis_key_prefix(), f"airflow{suffix}"
    _admin(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))

    # Not under pytest's basetemp: other pytest sessions on the machine rotate those folders away mid-run.
    paths = stack.StackPaths(Path(tempfile.mkdtemp(prefix="churnops-celery-")))
    started: list[Any] = []
    try:
        paths.ports_file.write_text(json.dumps(stack.choose_free_ports()))
        _write_secrets(paths, database)
        for folder in (paths.logs, paths.pids, paths.airflow_home):
            folder.mkdir(parents=True)
        (paths.airflow_home / "passwords.json").write_text(
            json.dumps({"admin": paths.secret("airflow_admin_password")})
        )
        env = {**stack.stack_environment(paths), "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS)}
        migrated = subprocess.run(["airflow", "db", "migrate"], env=env, capture_output=True, text=True)
        assert migrated.returncode == 0, migrated.stdout + migrated.stderr
        for service in [s for s in stack.services(paths) if s.name in STARTED]:
            stack.start(paths, env, service)
            started.append(service)
        yield paths, prefix
    finally:
        for service in reversed(started):
            stack.stop(paths, service)
        _admin(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database)))
        for key in broker.scan_iter(match=f"{prefix}*"):
            broker.delete(key)
        kept_logs = Path(tempfile.gettempdir()) / "churnops-celery-last-logs"
        shutil.rmtree(kept_logs, ignore_errors=True)
        shutil.copytree(paths.logs, kept_logs, dirs_exist_ok=True)
        shutil.rmtree(paths.root, ignore_errors=True)


def test_the_tasks_of_one_run_execute_on_both_celery_workers(celery_airflow) -> None:
    paths, prefix = celery_airflow
    client = airflow_client(paths)
    wait(lambda: client.get(f"/api/v2/dags/{DAG_ID}").status_code == 200, STARTUP_CEILING_S, "the DAG to be parsed")
    unpaused = client.patch(f"/api/v2/dags/{DAG_ID}", json={"is_paused": False})
    assert unpaused.status_code == 200, unpaused.text
    rendezvous = Path(tempfile.mkdtemp(prefix="churnops-rendezvous-"))
    try:
        run_id = trigger(client, DAG_ID, {"rendezvous": str(rendezvous)})
        try:
            wait(lambda: succeeded(client, DAG_ID, run_id), RUN_CEILING_S, "the run to succeed", interval_s=2)
        except AssertionError as failure:
            raise AssertionError(f"{failure}\n{log_tails(paths)}") from failure
    finally:
        shutil.rmtree(rendezvous, ignore_errors=True)

    tasks = client.get(f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances").json()["task_instances"]
    workers = {task["task_id"]: task["hostname"].split("@")[0] for task in tasks}
    assert set(workers) == {"left", "right"}
    assert sorted(workers.values()) == ["airflow-worker-1", "airflow-worker-2"], workers
    # The queue lived on the machine's Redis under this run's prefix, apart from any other stack's.
    assert any(redis.Redis.from_url(native_stack().REDIS_BROKER_URL).scan_iter(match=f"{prefix}*"))
