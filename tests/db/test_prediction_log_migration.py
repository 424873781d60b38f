"""Migration 0014 on a database that already holds a per-prediction log: its rows stay readable under the old name,
and the role that appended to it appends to the per-request table instead. Migration 0015 on a database that holds
per-request rows: their features become text (not parsed on write) and read the same through the view."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import psycopg2
import psycopg2.sql

from churnops import db
from tests.db.conftest import admin_connection


def _migrated_before(conn: psycopg2.extensions.connection, version: str, folder: Path) -> None:
    """`conn`'s database migrated up to, not including, `version`."""
    folder.mkdir()
    shutil.copy(db.MIGRATIONS_DIR / db.BOOTSTRAP_FILE, folder)
    for migration in db.discover_migrations():
        if migration.version < version:
            shutil.copy(migration.path, folder)
    db.migrate(conn, folder)


@contextmanager
def _throwaway_role(
    conn: psycopg2.extensions.connection, purpose: str
) -> Iterator[tuple[str, psycopg2.sql.Identifier]]:
    """A new role (its name and identifier), with whatever it was granted in `conn`'s database dropped afterwards."""
    name = f"churnops_t{uuid.uuid4().hex[:8]}_{purpose}"
    role = psycopg2.sql.Identifier(name)
    with closing(admin_connection()) as admin, admin.cursor() as cur:
        cur.execute(psycopg2.sql.SQL("CREATE ROLE {}").format(role))
    try:
        yield name, role
    finally:
        with conn, conn.cursor() as cur:
            cur.execute(psycopg2.sql.SQL("DROP OWNED BY {}").format(role))
        with closing(admin_connection()) as admin, admin.cursor() as cur:
            cur.execute(psycopg2.sql.SQL("DROP ROLE {}").format(role))


def test_0014_keeps_the_logged_predictions_readable_and_moves_the_append_grant(
    empty_database: psycopg2.extensions.connection, tmp_path: Path
) -> None:
    _migrated_before(empty_database, "0014", tmp_path / "before_0014")
    with _throwaway_role(empty_database, "writer") as (writer, role):
        with empty_database, empty_database.cursor() as cur:
            cur.execute(psycopg2.sql.SQL("GRANT INSERT ON churnops.prediction_log TO {}").format(role))
            cur.execute(
                "INSERT INTO churnops.prediction_log (request_id, endpoint, customer_id, model_name, model_version,"
                " score, decision, risk_band, latency_seconds, features) VALUES"
                " ('r1', '/predict', 'c1', 'm', '3', 0.25, false, 'low', 0.002, '{\"spend\": 1.5, \"plan\": null}'),"
                " ('r2', '/batch_predict', 'c2', 'm', '3', 0.75, true, 'high', 0.004, '{\"spend\": 2.5}')"
            )
        assert "0014" in db.migrate(empty_database)
        with empty_database, empty_database.cursor() as cur:
            cur.execute(
                "SELECT position, request_id, endpoint, customer_id, score, decision, risk_band, features"
                " FROM churnops.prediction_log ORDER BY logged_at, log_id, position"
            )
            assert cur.fetchall() == [
                (1, "r1", "/predict", "c1", 0.25, False, "low", {"spend": 1.5, "plan": None}),
                (1, "r2", "/batch_predict", "c2", 0.75, True, "high", {"spend": 2.5}),
            ]
            cur.execute(
                "SELECT has_table_privilege(%s, 'churnops.prediction_log_requests', 'INSERT'),"
                " has_table_privilege(%s, 'churnops.prediction_log_per_prediction', 'INSERT')",
                (writer, writer),
            )
            assert cur.fetchone() == (True, False)


def test_0015_stores_the_features_as_text_and_the_view_and_its_grants_read_them_as_before(
    empty_database: psycopg2.extensions.connection, tmp_path: Path
) -> None:
    _migrated_before(empty_database, "0015", tmp_path / "before_0015")
    compression_query = (
        "SELECT format_type(atttypid, atttypmod), attcompression FROM pg_attribute"
        " WHERE attrelid = 'churnops.prediction_log_requests'::regclass AND attname = 'features'"
    )
    view_query = (
        "SELECT position, customer_id, score, features FROM churnops.prediction_log"
        " ORDER BY logged_at, log_id, position"
    )
    with _throwaway_role(empty_database, "reader") as (reader, role):
        with empty_database, empty_database.cursor() as cur:
            cur.execute(psycopg2.sql.SQL("GRANT USAGE ON SCHEMA churnops TO {}").format(role))
            cur.execute(psycopg2.sql.SQL("GRANT SELECT ON churnops.prediction_log TO {}").format(role))
            cur.execute(
                "INSERT INTO churnops.prediction_log_requests (endpoint, model_name, model_version, n_rows,"
                " customer_ids, scores, decisions, risk_bands, features) VALUES ('/batch_predict', 'm', '3', 2,"
                " '{c1,c2}', '{0.25,0.75}', '{f,t}', '{low,high}',"
                ' \'{"spend": [1.5, null], "plan": ["a", "b"]}\')'
            )
            cur.execute(view_query)
            before = cur.fetchall()
            cur.execute(compression_query)
            type_before, compression_before = cur.fetchone()
        assert "0015" in db.migrate(empty_database)
        with empty_database, empty_database.cursor() as cur:
            cur.execute(compression_query)
            # 0014's compression (lz4 where the server has it) kept through the type change
            assert (type_before, cur.fetchone()) == ("json", ("text", compression_before))
            cur.execute(view_query)
            assert (
                cur.fetchall()
                == before
                == [
                    (1, "c1", 0.25, {"spend": 1.5, "plan": "a"}),
                    (2, "c2", 0.75, {"spend": None, "plan": "b"}),
                ]
            )
            cur.execute("SELECT has_table_privilege(%s, 'churnops.prediction_log', 'SELECT')", (reader,))
            assert cur.fetchone() == (True,)
