"""Per-file ingestion reports in PostgreSQL: one row per source file version, recorded idempotently, from the bronze
manifest of a real ingestion."""

from __future__ import annotations

import datetime as dt
from contextlib import closing

import psycopg2

from churnops.config import Settings
from churnops.jobs.ingest import ingest_events, record_ingestion_reports
from tests.db.conftest import PlatformDatabases
from tests.features.test_incremental_ingest import DAY1, DAY2, deliver
from tests.features.test_ingest import NOW, contract_for

QUERY = (
    "SELECT source, run_id, rows_read, rows_accepted, rows_quarantined, quarantine_reasons, first_event_day, "
    "last_event_day, reported_at FROM churnops.ingestion_reports WHERE dataset = %s "
    "ORDER BY source, reported_at, first_event_day"
)


def recorded(url: str, dataset: str) -> list[tuple]:
    with closing(psycopg2.connect(url)) as conn, conn.cursor() as cur:
        cur.execute(QUERY, (dataset,))
        return cur.fetchall()


def test_each_source_file_version_is_recorded_once(platform_databases: PlatformDatabases, tmp_path) -> None:
    url = platform_databases.churnops_url()
    settings = Settings(home=tmp_path / "home", database_url=url)
    contract = contract_for(tmp_path, "landing")
    deliver(tmp_path / "landing", "a.csv", DAY1 + ["c4,2024-05-01 10:00:00,purchase,-5"])
    deliver(tmp_path / "landing", "b.csv", DAY2)
    manifest = ingest_events(contract, settings, future_after=NOW).manifest

    assert record_ingestion_reports(settings, manifest) == 2
    first = recorded(url, contract.name)
    record_ingestion_reports(settings, manifest)  # the DAG task runs on every feature run

    assert recorded(url, contract.name) == first
    a = manifest.files["a.csv"]
    may_first = dt.date(2024, 5, 1)
    assert first[0][:8] == ("a.csv", a.sha256[:16], 3, 2, 1, {"negative_amount": 1}, may_first, may_first)
    assert first[0][8] == dt.datetime.fromisoformat(a.ingested_at).replace(tzinfo=dt.UTC)


def test_a_redelivered_file_is_recorded_beside_the_version_it_replaced(
    platform_databases: PlatformDatabases, tmp_path
) -> None:
    url = platform_databases.churnops_url()
    settings = Settings(home=tmp_path / "home", database_url=url)
    contract = contract_for(tmp_path, "landing")
    contract = contract.model_copy(update={"name": "ingest-redelivery"})
    deliver(tmp_path / "landing", "a.csv", DAY1)
    record_ingestion_reports(settings, ingest_events(contract, settings, future_after=NOW).manifest)
    deliver(tmp_path / "landing", "a.csv", DAY2)

    record_ingestion_reports(settings, ingest_events(contract, settings, future_after=NOW).manifest)

    rows = recorded(url, contract.name)
    assert [(source, first_day.isoformat()) for source, _, _, _, _, _, first_day, _, _ in rows] == [
        ("a.csv", "2024-05-01"),
        ("a.csv", "2024-05-02"),
    ]
