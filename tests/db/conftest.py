"""Fixtures for the PostgreSQL store: a fresh set of databases per test session, built by postgres-init/.

The server is the machine's PostgreSQL (CHURNOPS_TEST_POSTGRES_URL, default
postgresql://root@127.0.0.1:5432/test, a superuser). Tests FAIL when it is unreachable: the store cannot be
tested without it. Every database and role created here has a random prefix and is dropped at the end; the
`test` database itself is never touched.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import psycopg2
import psycopg2.sql
import pytest

from churnops.db import MIGRATIONS_DIR

REPO = Path(__file__).resolve().parents[2]
# The tables the API's pages read (serving/pages/store.py), granted to the API's role by postgres-init.
API_PAGE_TABLES = (
    "scores",
    "score_runs",
    "online_feature_sets",
    "realized_performance",
    "model_evaluations",
    "promotion_decisions",
    "drift_runs",
    "drift_metrics",
    "retrain_decisions",
    "replay_timeline",
    "realized_outcomes",
)
INIT_SCRIPT = REPO / "postgres-init" / "10-churnops-databases.sh"
from tests.deploy.support import POSTGRES_ADMIN_URL as ADMIN_URL  # noqa: E402
from tests.deploy.support import admin_connection  # noqa: E402, F401

SECRET_FILES = (
    "airflow_db_password",
    "mlflow_db_password",
    "churnops_db_password",
    "churnops_api_db_password",
    "grafana_db_password",
)


@dataclass(frozen=True)
class PlatformDatabases:
    """What one run of the init script created."""

    airflow: str
    mlflow: str
    mlflow_auth: str
    churnops: str
    api: str
    grafana: str
    churnops_password: str
    api_password: str
    secrets_dir: Path

    def churnops_url(self) -> str:
        return self.url_as(self.churnops, self.churnops_password)

    def api_url(self) -> str:
        """The platform database as the API's least-privilege role."""
        return self.url_as(self.api, self.api_password)

    def url_as(self, role: str, password: str, database: str | None = None) -> str:
        admin = psycopg2.extensions.parse_dsn(ADMIN_URL)
        return (
            f"postgresql://{role}:{quote(password, safe='')}@{admin.get('host', '127.0.0.1')}:"
            f"{admin.get('port', '5432')}/{database or self.churnops}"
        )


def run_init_script(names: dict[str, str], secrets_dir: Path) -> subprocess.CompletedProcess[str]:
    """Run postgres-init/ as the postgres image would, but against the test server and with test names."""
    admin = psycopg2.extensions.parse_dsn(ADMIN_URL)
    env = {
        **os.environ,
        "PGHOST": admin.get("host", "127.0.0.1"),
        "PGPORT": admin.get("port", "5432"),
        "POSTGRES_USER": admin.get("user", "root"),
        "POSTGRES_DB": admin.get("dbname", "test"),
        "SECRETS_DIR": str(secrets_dir),
        "CHURNOPS_MIGRATIONS_DIR": str(MIGRATIONS_DIR),
        "AIRFLOW_DB": names["airflow"],
        "MLFLOW_DB": names["mlflow"],
        "MLFLOW_AUTH_DB": names["mlflow_auth"],
        "CHURNOPS_DB": names["churnops"],
        "API_DB_ROLE": names["api"],
        "GRAFANA_DB_ROLE": names["grafana"],
    }
    if "password" in admin:
        env["PGPASSWORD"] = admin["password"]
    return subprocess.run(["bash", str(INIT_SCRIPT)], env=env, capture_output=True, text=True, timeout=120, check=False)


def drop_databases_and_roles(names: list[str]) -> None:
    with closing(admin_connection()) as conn, conn.cursor() as cur:
        for name in names:
            identifier = psycopg2.sql.Identifier(name)
            cur.execute(psycopg2.sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(identifier))
            cur.execute(psycopg2.sql.SQL("DROP ROLE IF EXISTS {}").format(identifier))


# In the order they can be dropped: a database before the role owning it, the churnops database before the roles
# granted privileges in it.
KINDS = ("airflow", "mlflow_auth", "mlflow", "churnops", "api", "grafana")


def unique_names() -> dict[str, str]:
    prefix = f"churnops_t{uuid.uuid4().hex[:8]}"
    return {kind: f"{prefix}_{kind}" for kind in KINDS}


def write_secrets(directory: Path) -> dict[str, str]:
    directory.mkdir(parents=True, exist_ok=True)
    values = {}
    for name in SECRET_FILES:
        # Quotes and backslashes on purpose: the script must pass passwords through without shell/SQL
        # mangling.
        values[name] = f"p'w\"\\{secrets.token_hex(8)}"
        (directory / name).write_text(values[name] + "\n")
    return values


@pytest.fixture(scope="session")
def platform_databases(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PlatformDatabases]:
    """The airflow, mlflow and churnops roles and databases created by postgres-init/ on this server."""
    admin_connection().close()
    names = unique_names()
    secrets_dir = tmp_path_factory.mktemp("secrets")
    passwords = write_secrets(secrets_dir)
    try:
        result = run_init_script(names, secrets_dir)
        assert result.returncode == 0, f"postgres-init failed:\n{result.stdout}\n{result.stderr}"
        yield PlatformDatabases(
            **names,
            churnops_password=passwords["churnops_db_password"],
            api_password=passwords["churnops_api_db_password"],
            secrets_dir=secrets_dir,
        )
    finally:
        drop_databases_and_roles(list(names.values()))


@pytest.fixture
def conn(platform_databases: PlatformDatabases) -> Iterator[psycopg2.extensions.connection]:
    """A connection to the platform database as its own role (the owner of the churnops schema)."""
    connection = psycopg2.connect(platform_databases.churnops_url())
    yield connection
    connection.close()


@pytest.fixture
def empty_database() -> Iterator[psycopg2.extensions.connection]:
    """A brand-new database with no churnops schema in it, dropped after the test."""
    name = f"churnops_t{uuid.uuid4().hex[:8]}_empty"
    with closing(admin_connection()) as admin, admin.cursor() as cur:
        cur.execute(psycopg2.sql.SQL("CREATE DATABASE {}").format(psycopg2.sql.Identifier(name)))
    dsn = psycopg2.extensions.make_dsn(ADMIN_URL, dbname=name)
    connection = psycopg2.connect(dsn)
    try:
        yield connection
    finally:
        connection.close()
        drop_databases_and_roles([name])
