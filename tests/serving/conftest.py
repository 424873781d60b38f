"""Fixtures of the API tests: a request body from the trained snapshot, a throwaway PostgreSQL database, and real
uvicorn servers on loopback for the tests that need several processes or a live load."""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg2
import psycopg2.sql
import pytest
from pydantic import SecretStr

from churnops import db
from churnops.config import Settings
from churnops.snapshots import latest_snapshot_dir

REPO = Path(__file__).resolve().parents[2]
from tests.deploy.support import POSTGRES_ADMIN_URL as ADMIN_URL  # noqa: E402
from tests.deploy.support import admin_connection  # noqa: E402, F401


def _load_example_module() -> Any:
    spec = importlib.util.spec_from_file_location("make_predict_request", REPO / "examples" / "make_predict_request.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def example_request(trained_platform) -> dict[str, Any]:
    """A /predict body made from a real row of the trained platform's snapshot (same script as the example)."""
    return _load_example_module().predict_request(latest_snapshot_dir(trained_platform.settings, "synthetic"))


@contextmanager
def fresh_platform_database(purpose: str) -> Iterator[str]:
    """A brand-new database migrated to the platform schema (every migration), dropped on exit: its URL."""
    name = f"churnops_t{uuid.uuid4().hex[:8]}_{purpose}"
    with closing(admin_connection()) as admin, admin.cursor() as cur:
        cur.execute(psycopg2.sql.SQL("CREATE DATABASE {}").format(psycopg2.sql.Identifier(name)))
    url = psycopg2.extensions.make_dsn(ADMIN_URL, dbname=name)
    parsed = psycopg2.extensions.parse_dsn(url)
    host, port = parsed.get("host", "127.0.0.1"), parsed.get("port", "5432")
    uri = f"postgresql://{parsed.get('user', 'root')}@{host}:{port}/{name}"
    try:
        with closing(psycopg2.connect(url)) as conn:
            db.migrate(conn)
        yield uri
    finally:
        with closing(admin_connection()) as admin, admin.cursor() as cur:
            cur.execute(
                psycopg2.sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(psycopg2.sql.Identifier(name))
            )


@pytest.fixture(scope="session")
def platform_database_url() -> Iterator[str]:
    """A migrated platform database shared by the session's tests (each writes under names of its own)."""
    with fresh_platform_database("serving") as uri:
        yield uri


@pytest.fixture
def deployed_copy(trained_platform, platform_database_url: str, tmp_path: Path) -> Settings:
    """A private copy of the session's trained platform writing its lists to a migrated PostgreSQL database."""
    home = tmp_path / "home"
    shutil.copytree(trained_platform.settings.home, home)
    original = trained_platform.settings
    return Settings(
        home=home, training=original.training, spark=original.spark, database_url=SecretStr(platform_database_url)
    )


def unused_port() -> int:
    with closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def unreachable_database_url() -> str:
    """A PostgreSQL URL on a loopback port where nothing listens (connection refused at once)."""
    return f"postgresql://root@127.0.0.1:{unused_port()}/churnops"


@dataclass
class Server:
    """A `churnops serve` process on loopback."""

    process: subprocess.Popen[bytes]
    base_url: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        if self.process.poll() is None:
            # The CLI runs uvicorn as its child: signal the whole process group we created.
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)


def start_server(
    settings: Settings,
    tmp_path: Path,
    workers: int = 1,
    env: dict[str, str] | None = None,
    dataset: str | None = None,
) -> Server:
    """Start `churnops serve` for the trained platform (or `--dataset`) and wait until /ready answers 200."""
    port = unused_port()
    log_path = tmp_path / f"serve-{port}.log"
    environment = {
        **os.environ,
        "CHURNOPS_HOME": str(settings.home),
        "CHURNOPS_DATASET": "synthetic",
    }
    environment.pop("PROMETHEUS_MULTIPROC_DIR", None)  # the CLI creates a fresh one for several workers
    environment.update(env or {})
    command = [
        str(Path(sys.executable).parent / "churnops"),
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
        *(["--dataset", dataset] if dataset else []),
    ]
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            command, env=environment, stdout=log_file, stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True
        )
    server = Server(process=process, base_url=f"http://127.0.0.1:{port}", log_path=log_path)
    # Every worker loads its own model and /ready reaches whichever worker accepts the connection: with several,
    # the server is ready once many answers in a row (each a new connection) say so.
    needed_in_a_row = 1 if workers == 1 else 10 * workers
    in_a_row = 0
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"server exited with {process.returncode}:\n{server.log()}")
        try:
            ready = httpx.get(f"{server.base_url}/ready", timeout=2).status_code == 200
        except httpx.HTTPError:
            ready = False
        in_a_row = in_a_row + 1 if ready else 0
        if in_a_row >= needed_in_a_row:
            return server
        time.sleep(0.05 if ready else 0.5)
    server.stop()
    raise AssertionError(f"server not ready within 120 s:\n{server.log()}")


def metric_value(exposition: str, name: str, labels: dict[str, str] | None = None) -> float:
    """The value of one sample in a Prometheus exposition (0 when absent), matched on name and labels."""
    from prometheus_client.parser import text_string_to_metric_families

    total = 0.0
    found = False
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in (labels or {}).items()):
                total += sample.value
                found = True
    return total if found else 0.0
