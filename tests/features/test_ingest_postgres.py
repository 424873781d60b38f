"""A PostgreSQL table as an event source, read by Spark through JDBC in slices: the same bronze and quarantine as
the same rows delivered as a CSV file, reconciled counts, and the fingerprint (row count + latest event time)
deciding when it is read again. Runs against the machine's PostgreSQL (db `test`), in a schema of its own that is
dropped afterwards."""

from __future__ import annotations

import csv
import io
import os
import uuid
from contextlib import closing

import psycopg2
import pytest
from pydantic import SecretStr

from churnops.bronze import SOURCE_FILE, read_manifest, read_quarantine
from churnops.jobs.ingest import ingest_events
from tests.features.conftest import make_settings, write_contract
from tests.features.test_ingest import HEADER, NOW, ROWS, contract_for
from tests.features.test_ingest_spark import _bronze, _quarantine

pytestmark = pytest.mark.slow

TEST_URL = os.environ.get("CHURNOPS_TEST_POSTGRES_URL", "postgresql://root@127.0.0.1:5432/test")
COLUMNS = ["id", *HEADER.strip().split(",")]


def _table_rows() -> list[tuple]:
    """ROWS with an id (the partition column); an empty cell is NULL, as the CSV reader makes it missing."""
    parsed = csv.reader(io.StringIO("\n".join(row for row, _ in ROWS)))
    return [(i + 1, *[value if value != "" else None for value in values]) for i, values in enumerate(parsed)]


@pytest.fixture
def source_table():
    schema = f"ingest_test_{uuid.uuid4().hex[:8]}"
    with closing(psycopg2.connect(TEST_URL)) as conn:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f"CREATE SCHEMA {schema}")
            cur.execute(f"CREATE TABLE {schema}.events (id integer, customer text, ts text, kind text, value text)")
            cur.executemany(f"INSERT INTO {schema}.events VALUES (%s, %s, %s, %s, %s)", _table_rows())
        try:
            yield schema
        finally:
            with conn.cursor() as cur:
                cur.execute(f"DROP SCHEMA {schema} CASCADE")


def test_a_table_ingests_like_the_same_rows_in_a_file(tmp_path, spark, source_table):
    rows = _table_rows()
    table_contract = write_contract(
        tmp_path / "table",
        {
            "name": "ingest-test",
            "events": {
                "path": f"{source_table}.events",
                "format": "postgres",
                "entity_key": "customer",
                "timestamp": "ts",
                "amount": "value",
                "event_type": "kind",
                "postgres": {"partition_column": "id", "lower_bound": "1", "upper_bound": "15", "num_partitions": 3},
            },
            "label": {"kind": "churn", "horizon_days": 30},
            "cutoffs": {"first": "2024-01-01", "as_of": "2024-06-01"},
        },
    )
    table_home = make_settings(tmp_path / "home-table").model_copy(update={"source_database_url": SecretStr(TEST_URL)})
    (tmp_path / "file").mkdir()
    text = io.StringIO()
    csv.writer(text, lineterminator="\n").writerows([COLUMNS, *[["" if v is None else v for v in r] for r in rows]])
    (tmp_path / "file" / "events.csv").write_text(text.getvalue())
    file_contract, file_home = contract_for(tmp_path / "file"), make_settings(tmp_path / "home-file")

    table_run = ingest_events(table_contract, table_home, future_after=NOW)  # Spark, whatever the settings say
    file_run = ingest_events(file_contract, file_home, future_after=NOW, engine="pandas")

    assert table_run.ingested == (f"postgres:{source_table}.events",)
    assert table_run.rows_read == len(rows) == table_run.rows_accepted + table_run.rows_quarantined
    assert table_run.quarantined_by_reason == file_run.quarantined_by_reason
    assert len(table_run.quarantined_by_reason) == 8  # every rule but exact_duplicate (ids differ)
    assert _bronze(table_home, "ingest-test").equals(_bronze(file_home, "ingest-test"))
    table_bad = _quarantine(table_home, "ingest-test").drop(columns=SOURCE_FILE)
    assert table_bad.equals(_quarantine(file_home, "ingest-test").drop(columns=SOURCE_FILE))

    # Unchanged table: nothing is read. One more row: the fingerprint changes and the table is read again whole.
    assert ingest_events(table_contract, table_home, future_after=NOW).ingested == ()
    with closing(psycopg2.connect(TEST_URL)) as conn, conn, conn.cursor() as cur:
        cur.execute(f"INSERT INTO {source_table}.events VALUES (99, 'c99', '2024-05-30 10:00:00', 'visit', '1')")
    again = ingest_events(table_contract, table_home, future_after=NOW)
    assert again.rows_read == len(rows) + 1
    assert again.rows_accepted == table_run.rows_accepted + 1
    manifest = read_manifest(table_home, "ingest-test")
    assert manifest is not None and list(manifest.files) == [f"postgres:{source_table}.events"]
    assert len(read_quarantine(table_home, "ingest-test")) == table_run.rows_quarantined
