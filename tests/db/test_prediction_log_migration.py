"""Migration 0014 on a database that already holds a per-prediction log: its rows stay readable under the old name,
and the role that appended to it appends to the per-request table instead. Migration 0015 on a database that holds
per-request rows: their features become text (not parsed on write) and read the same through the view. Migration
0016: batches (one row per flush of an API worker's writer) read one row per prediction through the view, beside the
older rows, and their CHECKs keep the arrays consistent with the counts."""

from __future__ import annotations

import datetime as dt
import shutil
import uuid
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import psycopg2
import psycopg2.sql
import pytest

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


_BATCH_COLUMNS = (
    "first_logged_at, last_logged_at, model_name, model_version, n_requests, n_rows, logged_at, request_ids,"
    " endpoints, latency_seconds, request_rows, customer_ids, scores, decisions, risk_bands, feature_names, features"
)
# Two requests answered in one flush: /predict (1 prediction, request id r1) then /batch_predict (3 predictions, no
# X-Request-ID); the third prediction has no customer id, the second a missing "spend" (json null in its array).
# feature_names not in alphabetical order: the view's keys must follow it.
_BATCH_VALUES = (
    "'2026-12-01 10:00:00+00', '2026-12-01 10:00:02+00', 'm', '4', 2, 4,"
    " ARRAY['2026-12-01 10:00:00+00', '2026-12-01 10:00:02+00']::timestamptz[], ARRAY['r1', NULL],"
    " ARRAY['/predict', '/batch_predict'], ARRAY[0.001, NULL]::double precision[], ARRAY[1, 3],"
    " ARRAY['c1', 'c2', NULL, 'c4'], ARRAY[0.1, 0.2, 0.3, 0.4], ARRAY[false, NULL, true, true],"
    " ARRAY['low', NULL, 'mid', 'high'], ARRAY['spend', 'plan', 'age'],"
    ' \'[[1.5, "a", 30], [null, "b", 40], [3.5, "c", 50], [4.5, null, 60]]\''
)
_INSERT_BATCH = f"INSERT INTO churnops.prediction_log_batches ({_BATCH_COLUMNS}) VALUES ({_BATCH_VALUES})"
_VIEW_ROWS = (
    "SELECT log_id, position, logged_at, request_id, endpoint, latency_seconds, customer_id, model_version, score,"
    " decision, risk_band, features FROM churnops.prediction_log ORDER BY logged_at, log_id, position"
)


def _in_key_order(rows: list[tuple]) -> list[tuple]:
    """The view's rows with each features object as its (key, value) pairs, so that key order is compared too."""
    return [(*row[:-1], list(row[-1].items())) for row in rows]


def test_0016_shows_a_batch_one_row_per_prediction_with_its_requests_fields_beside_the_older_rows(
    empty_database: psycopg2.extensions.connection, tmp_path: Path
) -> None:
    _migrated_before(empty_database, "0016", tmp_path / "before_0016")
    with _throwaway_role(empty_database, "writer") as (writer, role):
        with empty_database, empty_database.cursor() as cur:
            cur.execute(psycopg2.sql.SQL("GRANT INSERT ON churnops.prediction_log_requests TO {}").format(role))
            cur.execute(
                "INSERT INTO churnops.prediction_log_per_prediction (logged_at, request_id, endpoint, customer_id,"
                " model_name, model_version, score, decision, risk_band, latency_seconds, features) VALUES"
                " ('2026-11-30 09:00+00', 'r0', '/predict', 'c0', 'm', '2', 0.05, false, 'low', 0.003,"
                ' \'{"spend": 0.5, "plan": null}\')'
            )
            cur.execute(
                "INSERT INTO churnops.prediction_log_requests (logged_at, request_id, endpoint, model_name,"
                " model_version, n_rows, customer_ids, scores, decisions, risk_bands, features) VALUES"
                " ('2026-11-30 10:00+00', 'rq', '/batch_predict', 'm', '3', 2, '{c8,c9}', '{0.25,0.75}', '{f,t}',"
                ' \'{low,high}\', \'{"spend": [8.5, null], "plan": ["x", "y"]}\')'
            )
            cur.execute(_VIEW_ROWS)
            before = _in_key_order(cur.fetchall())
        assert "0016" in db.migrate(empty_database)
        with empty_database, empty_database.cursor() as cur:
            cur.execute(
                "SELECT has_table_privilege(%s, 'churnops.prediction_log_batches', 'INSERT'),"
                " has_table_privilege(%s, 'churnops.prediction_log_requests', 'INSERT')",
                (writer, writer),
            )
            assert cur.fetchone() == (True, True)  # the requests' grant kept: a rolling upgrade keeps logging
            cur.execute(_INSERT_BATCH)
            cur.execute("SELECT id FROM churnops.prediction_log_batches")
            (batch_id,) = cur.fetchone()
            cur.execute(_VIEW_ROWS)
            rows = _in_key_order(cur.fetchall())
    first = dt.datetime(2026, 12, 1, 10, tzinfo=dt.UTC)
    second = first + dt.timedelta(seconds=2)
    assert len(before) == 3 and rows[:3] == before  # the old prediction and the request's two, unchanged
    assert rows[3:] == [
        (batch_id, 1, first, "r1", "/predict", 0.001, "c1", "4", 0.1, False, "low",
         [("spend", 1.5), ("plan", "a"), ("age", 30)]),
        (batch_id, 1, second, None, "/batch_predict", None, "c2", "4", 0.2, None, None,
         [("spend", None), ("plan", "b"), ("age", 40)]),
        (batch_id, 2, second, None, "/batch_predict", None, None, "4", 0.3, True, "mid",
         [("spend", 3.5), ("plan", "c"), ("age", 50)]),
        (batch_id, 3, second, None, "/batch_predict", None, "c4", "4", 0.4, True, "high",
         [("spend", 4.5), ("plan", None), ("age", 60)]),
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("valid", "invalid"),
    [
        pytest.param("ARRAY['r1', NULL]", "ARRAY['r1']", id="a request id short"),
        pytest.param("ARRAY[1, 3]", "ARRAY[1, 3, 1]", id="a request too many"),
        pytest.param("ARRAY['c1', 'c2', NULL, 'c4']", "ARRAY['c1', 'c2', NULL]", id="a customer id short"),
        pytest.param(
            "ARRAY[false, NULL, true, true]", "ARRAY[false, NULL, true, true, false]", id="a decision too many"
        ),
        pytest.param("ARRAY[1, 3]", "ARRAY[2, 3]", id="request rows that count 5 of the 4 predictions"),
        pytest.param("ARRAY[1, 3]", "ARRAY[0, 4]", id="a request of no prediction"),
        pytest.param("ARRAY[0.1, 0.2, 0.3, 0.4]", "ARRAY[0.1, 1.2, 0.3, 0.4]", id="a score above 1"),
        pytest.param("ARRAY[0.1, 0.2, 0.3, 0.4]", "ARRAY[0.1, -0.2, 0.3, 0.4]", id="a score below 0"),
        pytest.param(
            "ARRAY[0.1, 0.2, 0.3, 0.4]", "ARRAY[0.1, NULL, 0.3, 0.4]::double precision[]", id="a score missing"
        ),
    ],
)
def test_0016_refuses_a_batch_whose_arrays_disagree_with_its_counts_or_a_score_outside_0_1(
    empty_database: psycopg2.extensions.connection, valid: str, invalid: str
) -> None:
    db.migrate(empty_database)
    assert valid in _BATCH_VALUES
    bad_batch = _INSERT_BATCH.replace(valid, invalid, 1)
    with empty_database, empty_database.cursor() as cur:
        cur.execute(_INSERT_BATCH)  # the unchanged batch is accepted
        with pytest.raises(psycopg2.errors.CheckViolation):
            cur.execute(bad_batch)
