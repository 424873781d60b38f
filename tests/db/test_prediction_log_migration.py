"""Migration 0014 on a database that already holds a per-prediction log: its rows stay readable under the old name,
and the role that appended to it appends to the per-request table instead."""

from __future__ import annotations

import shutil
import uuid
from contextlib import closing
from pathlib import Path

import psycopg2
import psycopg2.sql

from churnops import db
from tests.db.conftest import admin_connection


def test_0014_keeps_the_logged_predictions_readable_and_moves_the_append_grant(
    empty_database: psycopg2.extensions.connection, tmp_path: Path
) -> None:
    before = tmp_path / "before_0014"
    before.mkdir()
    shutil.copy(db.MIGRATIONS_DIR / db.BOOTSTRAP_FILE, before)
    for migration in db.discover_migrations():
        if migration.version < "0014":
            shutil.copy(migration.path, before)
    db.migrate(empty_database, before)
    writer = f"churnops_t{uuid.uuid4().hex[:8]}_writer"
    role = psycopg2.sql.Identifier(writer)
    with closing(admin_connection()) as admin, admin.cursor() as cur:
        cur.execute(psycopg2.sql.SQL("CREATE ROLE {}").format(role))
    try:
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
    finally:
        with empty_database, empty_database.cursor() as cur:
            cur.execute(psycopg2.sql.SQL("DROP OWNED BY {}").format(role))
        with closing(admin_connection()) as admin, admin.cursor() as cur:
            cur.execute(psycopg2.sql.SQL("DROP ROLE {}").format(role))
