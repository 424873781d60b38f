"""Connecting to the platform database and applying its versioned migrations (`churnops/migrations/`)."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg2
import psycopg2.extras

if TYPE_CHECKING:
    from psycopg2.extensions import connection as Connection

    from churnops.config import Settings

SCHEMA = "churnops"
MIGRATIONS_DIR = Path(__file__).resolve().parents[1] / "migrations"
BOOTSTRAP_FILE = "bootstrap.sql"
_MIGRATION_FILE = re.compile(r"^(?P<version>\d{4})_(?P<name>[a-z0-9_]+)\.sql$")
# One key for every migration runner (the shell script uses the same expression), so two never interleave.
_MIGRATION_LOCK_SQL = "SELECT pg_advisory_xact_lock(hashtext('churnops.schema_migrations'))"


class MigrationError(RuntimeError):
    """The database's schema history does not match the migration files (e.g. an applied file was edited)."""


# ----------------------------------------------------------------------------------------------------
# Connection and migrations
# ----------------------------------------------------------------------------------------------------


CONNECT_TIMEOUT_SECONDS = 10


def connect(settings: Settings, *, application_name: str = "churnops") -> Connection:
    """Open a connection to the platform database named by `Settings.database_url`.

    Accepts SQLAlchemy-style URLs too (`postgresql+psycopg2://...`): one secret serves both kinds of client.
    """
    if settings.database_url is None:
        raise RuntimeError(
            "no platform database configured: set CHURNOPS_DATABASE_URL (or the secret file churnops_database_url), "
            "e.g. postgresql://churnops:<password>@127.0.0.1:5432/churnops"
        )
    url = settings.database_url.get_secret_value()
    url = re.sub(r"^postgres(ql)?\+\w+://", "postgresql://", url)
    # A server that accepts the connection and then says nothing must not hang a task until Airflow's execution
    # timeout: give up on connecting after CONNECT_TIMEOUT_SECONDS, and notice a dead peer through keepalives.
    return psycopg2.connect(
        url,
        application_name=application_name,
        connect_timeout=CONNECT_TIMEOUT_SECONDS,
        keepalives=1,
        keepalives_idle=30,
        keepalives_interval=10,
        keepalives_count=3,
    )


@dataclass(frozen=True)
class Migration:
    version: str
    name: str
    path: Path

    @property
    def sql(self) -> str:
        return self.path.read_text(encoding="utf-8")

    @property
    def checksum(self) -> str:
        # Of the bytes on disk, as `sha256sum` computes it in the init script.
        return hashlib.sha256(self.path.read_bytes()).hexdigest()


def discover_migrations(migrations_dir: Path = MIGRATIONS_DIR) -> list[Migration]:
    """The versioned migrations in `migrations_dir`, oldest first."""
    migrations = []
    for path in sorted(migrations_dir.glob("[0-9][0-9][0-9][0-9]_*.sql")):
        match = _MIGRATION_FILE.match(path.name)
        if match is None:
            raise MigrationError(f"{path}: migration files are named NNNN_lowercase_name.sql")
        migrations.append(Migration(match["version"], match["name"], path))
    versions = [m.version for m in migrations]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"{migrations_dir}: two migration files share a version number: {versions}")
    return migrations


def migrate(conn: Connection, migrations_dir: Path = MIGRATIONS_DIR) -> list[str]:
    """Apply every pending migration in one transaction; return the versions applied (empty if up to date).

    Idempotent and safe to run concurrently (an advisory lock serialises runners). Refuses to run if a
    migration already applied has a different checksum than its file today: released migrations are never
    edited.
    """
    migrations = discover_migrations(migrations_dir)
    applied_now: list[str] = []
    with conn, conn.cursor() as cur:
        cur.execute(_MIGRATION_LOCK_SQL)
        cur.execute("SET LOCAL client_min_messages = warning")
        cur.execute((migrations_dir / BOOTSTRAP_FILE).read_text(encoding="utf-8"))
        cur.execute("SELECT version, checksum FROM churnops.schema_migrations")
        recorded = dict(cur.fetchall())
        for migration in migrations:
            if migration.version in recorded:
                if recorded[migration.version] != migration.checksum:
                    raise MigrationError(
                        f"migration {migration.version} ({migration.path.name}) was applied with checksum "
                        f"{recorded[migration.version][:12]}... but the file now hashes to "
                        f"{migration.checksum[:12]}...: never edit an applied migration, add a new one"
                    )
                continue
            cur.execute(migration.sql)
            cur.execute(
                "INSERT INTO churnops.schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                (migration.version, migration.name, migration.checksum),
            )
            applied_now.append(migration.version)
    return applied_now


def applied_migrations(conn: Connection) -> list[str]:
    """Versions recorded in churnops.schema_migrations (empty if the schema was never created)."""
    with conn, conn.cursor() as cur:
        cur.execute("SELECT to_regclass('churnops.schema_migrations') IS NOT NULL")
        if not cur.fetchone()[0]:
            return []
        cur.execute("SELECT version FROM churnops.schema_migrations ORDER BY version")
        return [row[0] for row in cur.fetchall()]


# ----------------------------------------------------------------------------------------------------
