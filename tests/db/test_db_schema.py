"""The platform schema: created by postgres-init/ and by churnops.db.migrate, the same way, idempotently."""

from __future__ import annotations

import hashlib
import shutil
from contextlib import closing
from pathlib import Path

import psycopg2
import pytest

from churnops import db
from tests.db.conftest import (
    API_PAGE_TABLES,
    KINDS,
    MIGRATIONS_DIR,
    PlatformDatabases,
    admin_connection,
    drop_databases_and_roles,
    run_init_script,
    unique_names,
    write_secrets,
)

# Every migration shipped in churnops/migrations, in order (a new migration must not break these tests).
SHIPPED = [migration.version for migration in db.discover_migrations()]

PLATFORM_TABLES = {
    "schema_migrations",
    "score_runs",
    "scores",
    "prediction_log_batches",
    "prediction_log_requests",
    "prediction_log_per_prediction",
    "drift_runs",
    "drift_metrics",
    "retrain_decisions",
    "realized_performance",
    "model_evaluations",
    "promotion_decisions",
    "ingestion_reports",
    "dag_runs",
    "online_feature_sets",
    "online_features",
    "replay_timeline",
    "realized_outcomes",
}


def tables_with_comments(conn: psycopg2.extensions.connection) -> dict[str, str | None]:
    with conn, conn.cursor() as cur:
        cur.execute(
            """
            SELECT c.relname, obj_description(c.oid, 'pg_class')
            FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = 'churnops' AND c.relkind IN ('r', 'p')
            """
        )
        return dict(cur.fetchall())


def test_init_script_creates_a_login_role_owning_a_database_for_each_service(
    platform_databases: PlatformDatabases,
) -> None:
    with closing(admin_connection()) as admin, admin.cursor() as cur:
        for name in (platform_databases.airflow, platform_databases.mlflow, platform_databases.churnops):
            cur.execute(
                """
                SELECT r.rolcanlogin, a.rolpassword IS NOT NULL, pg_get_userbyid(d.datdba)
                FROM pg_roles r JOIN pg_authid a ON a.oid = r.oid, pg_database d
                WHERE r.rolname = %s AND d.datname = %s
                """,
                (name, name),
            )
            assert cur.fetchone() == (True, True, name), f"role/database {name}"


def test_init_script_creates_every_platform_table_with_a_comment(
    conn: psycopg2.extensions.connection,
) -> None:
    comments = tables_with_comments(conn)
    assert set(comments) == PLATFORM_TABLES
    assert all(comment and len(comment) > 20 for comment in comments.values()), comments


def test_init_script_schema_is_owned_by_the_churnops_role(
    conn: psycopg2.extensions.connection, platform_databases: PlatformDatabases
) -> None:
    with conn, conn.cursor() as cur:
        cur.execute("SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = 'churnops'")
        assert cur.fetchall() == [(platform_databases.churnops,)]


def test_init_script_records_each_migration_with_the_checksum_of_its_file(
    conn: psycopg2.extensions.connection,
) -> None:
    with conn, conn.cursor() as cur:
        cur.execute("SELECT version, name, checksum FROM churnops.schema_migrations ORDER BY version")
        recorded = cur.fetchall()
    expected = [(m.version, m.name, m.checksum) for m in db.discover_migrations()]
    assert recorded == expected
    assert recorded[0][2] == hashlib.sha256((MIGRATIONS_DIR / "0001_initial.sql").read_bytes()).hexdigest()


def test_python_migrate_finds_nothing_pending_after_the_init_script(
    conn: psycopg2.extensions.connection,
) -> None:
    assert db.migrate(conn) == []


def test_init_script_run_twice_changes_nothing(platform_databases: PlatformDatabases) -> None:
    names = {kind: getattr(platform_databases, kind) for kind in KINDS}
    result = run_init_script(names, platform_databases.secrets_dir)
    assert result.returncode == 0, result.stderr
    assert "applied migration" not in result.stdout
    with closing(psycopg2.connect(platform_databases.churnops_url())) as conn:
        assert db.applied_migrations(conn) == SHIPPED


def test_init_script_without_a_secret_file_fails_and_creates_nothing(tmp_path: Path) -> None:
    names = unique_names()
    write_secrets(tmp_path)
    (tmp_path / "mlflow_db_password").unlink()
    try:
        result = run_init_script(names, tmp_path)
        assert result.returncode != 0
        assert "mlflow_db_password" in result.stderr
        with closing(admin_connection()) as admin, admin.cursor() as cur:
            cur.execute("SELECT datname FROM pg_database WHERE datname = ANY(%s)", (list(names.values()),))
            assert cur.fetchall() == []
            cur.execute("SELECT rolname FROM pg_roles WHERE rolname = ANY(%s)", (list(names.values()),))
            assert cur.fetchall() == []
    finally:
        drop_databases_and_roles(list(names.values()))


def test_migrate_creates_the_schema_on_an_empty_database(
    empty_database: psycopg2.extensions.connection,
) -> None:
    assert db.applied_migrations(empty_database) == []
    assert db.migrate(empty_database) == SHIPPED
    assert set(tables_with_comments(empty_database)) == PLATFORM_TABLES


def test_migrate_is_idempotent(empty_database: psycopg2.extensions.connection) -> None:
    db.migrate(empty_database)
    assert db.migrate(empty_database) == []
    assert db.applied_migrations(empty_database) == SHIPPED


def test_migrate_applies_only_the_new_migration(empty_database: psycopg2.extensions.connection, tmp_path: Path) -> None:
    migrations = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_DIR, migrations)
    assert db.migrate(empty_database, migrations) == SHIPPED
    (migrations / "9998_scores_channel.sql").write_text("ALTER TABLE churnops.scores ADD COLUMN channel text;\n")
    assert db.migrate(empty_database, migrations) == ["9998"]
    with empty_database, empty_database.cursor() as cur:
        cur.execute(
            "SELECT count(*) FROM information_schema.columns WHERE table_name = 'scores' AND column_name = 'channel'"
        )
        assert cur.fetchone() == (1,)


def test_migrate_refuses_an_applied_migration_that_was_edited(
    empty_database: psycopg2.extensions.connection, tmp_path: Path
) -> None:
    migrations = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_DIR, migrations)
    db.migrate(empty_database, migrations)
    edited = migrations / "0001_initial.sql"
    edited.write_text(edited.read_text() + "\n-- an innocent-looking edit\n")
    with pytest.raises(db.MigrationError, match="never edit an applied migration"):
        db.migrate(empty_database, migrations)


def test_a_failing_migration_applies_nothing(empty_database: psycopg2.extensions.connection, tmp_path: Path) -> None:
    migrations = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_DIR, migrations)
    (migrations / "9999_broken.sql").write_text("ALTER TABLE churnops.no_such_table ADD COLUMN x int;\n")
    with pytest.raises(psycopg2.errors.UndefinedTable):
        db.migrate(empty_database, migrations)
    # One transaction for all pending migrations: the shipped ones were rolled back with the broken one.
    assert db.applied_migrations(empty_database) == []


TABLE_PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER")


def table_privileges(conn: psycopg2.extensions.connection, role: str) -> set[tuple[str, str]]:
    """(table, privilege) of every churnops table the role holds, whichever way it was granted."""
    with conn, conn.cursor() as cur:
        cur.execute(
            """
            SELECT c.relname, p.privilege
            FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace, unnest(%s::text[]) AS p(privilege)
            WHERE n.nspname = 'churnops' AND c.relkind IN ('r', 'p', 'v', 'm', 'S')
              AND has_table_privilege(%s, c.oid, p.privilege)
            """,
            (list(TABLE_PRIVILEGES), role),
        )
        return set(cur.fetchall())


def test_the_api_role_may_only_append_to_the_prediction_log_and_read_the_online_features_and_its_pages_tables(
    conn: psycopg2.extensions.connection, platform_databases: PlatformDatabases
) -> None:
    assert table_privileges(conn, platform_databases.api) == {
        ("prediction_log_batches", "INSERT"),
        ("prediction_log_requests", "INSERT"),  # an API of the release before migration 0016, mid rolling upgrade
        ("online_features", "SELECT"),
        *((table, "SELECT") for table in API_PAGE_TABLES),
    }


def test_grafanas_role_may_only_read(
    conn: psycopg2.extensions.connection, platform_databases: PlatformDatabases
) -> None:
    privileges = table_privileges(conn, platform_databases.grafana)
    assert {privilege for _, privilege in privileges} == {"SELECT"}
    assert {table for table, _ in privileges} >= PLATFORM_TABLES | {"prediction_log"}  # the view too


def test_the_api_and_grafana_roles_are_plain_login_roles(platform_databases: PlatformDatabases) -> None:
    with closing(admin_connection()) as admin, admin.cursor() as cur:
        cur.execute(
            "SELECT rolname, rolcanlogin, rolsuper, rolcreatedb, rolcreaterole, rolbypassrls FROM pg_roles"
            " WHERE rolname = ANY(%s) ORDER BY rolname",
            ([platform_databases.api, platform_databases.grafana],),
        )
        flags = {row[0]: row[1:] for row in cur.fetchall()}
    assert flags == {
        platform_databases.api: (True, False, False, False, False),
        platform_databases.grafana: (True, False, False, False, False),
    }


def test_only_the_owner_and_the_granted_roles_may_connect_to_each_database(
    platform_databases: PlatformDatabases,
) -> None:
    """CONNECT and TEMPORARY are revoked from PUBLIC: one service's role cannot open another's database."""
    p = platform_databases
    owners = {p.airflow: p.airflow, p.mlflow: p.mlflow, p.mlflow_auth: p.mlflow, p.churnops: p.churnops}
    granted_connect = {p.churnops: {p.api, p.grafana}}
    roles = [p.airflow, p.mlflow, p.churnops, p.api, p.grafana]
    with closing(admin_connection()) as admin, admin.cursor() as cur:
        for database, owner in owners.items():
            allowed = {}
            for privilege in ("CONNECT", "TEMPORARY"):
                cur.execute(
                    "SELECT r FROM unnest(%s::text[]) AS r WHERE has_database_privilege(r, %s, %s)",
                    (roles, database, privilege),
                )
                allowed[privilege] = {row[0] for row in cur.fetchall()}
            assert allowed == {"CONNECT": {owner, *granted_connect.get(database, ())}, "TEMPORARY": {owner}}, database
