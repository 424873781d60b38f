"""Validated ingestion into the bronze layer: every bad-row class quarantined with its reason, counts reconcile,
an unreadable file fails cleanly and writes nothing. (Incremental behaviour: test_incremental_ingest.py.)"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd
import pytest

from churnops.bronze import REASON, SOURCE_ROW, read_bronze_events, read_manifest, read_quarantine
from churnops.dataset import bronze_dir
from churnops.jobs.ingest import IngestionError, ingest_events
from tests.features.conftest import make_settings, write_contract

NOW = dt.datetime(2024, 6, 1, 12, 0, 0)
HEADER = "customer,ts,kind,value\n"
# One good row per shape, then one row per bad-row class; the comment is the reason it must get.
ROWS = [
    ("c1,2024-01-05 10:00:00,purchase,12.50", None),
    ("c1,2024-01-06T11:00:00Z,visit,0", None),
    ("c2,2024-02-01,purchase,3", None),
    ("c2,2024-02-01,purchase,3", "exact_duplicate"),
    (",2024-01-05 10:00:00,purchase,1", "missing_entity_key(customer)"),
    ("c3,,purchase,1", "missing_timestamp(ts)"),
    ("c3,yesterday at noon,purchase,1", "unparseable_timestamp(ts)"),
    ("c3,2024-02-30 10:00:00,purchase,1", "unparseable_timestamp(ts)"),
    ("c3,2031-01-01 00:00:00,purchase,1", "future_timestamp(ts)"),
    ("c4,2024-01-05 10:00:00,purchase,", "missing_amount(value)"),
    ("c4,2024-01-05 10:00:00,purchase,twelve", "non_numeric_amount(value)"),
    ("c4,2024-01-05 10:00:00,purchase,-5.00", "negative_amount(value)"),
    ("c4,2024-01-05 10:00:00,,5.00", "missing_event_type(kind)"),
    (",not a date,purchase,-1", "missing_entity_key(customer);unparseable_timestamp(ts);negative_amount(value)"),
]


def contract_for(folder: Path, source_name: str = "events.csv", **events_overrides: object):
    raw = {
        "name": "ingest-test",
        "events": {
            "path": source_name,
            "format": "csv",
            "entity_key": "customer",
            "timestamp": "ts",
            "amount": "value",
            "event_type": "kind",
        }
        | events_overrides,
        "label": {"kind": "churn", "horizon_days": 30},
        "cutoffs": {"first": "2024-01-01", "as_of": "2024-06-01"},
    }
    return write_contract(folder, raw)


@pytest.fixture
def dirty(tmp_path):
    (tmp_path / "events.csv").write_text(HEADER + "\n".join(row for row, _ in ROWS) + "\n")
    return tmp_path, contract_for(tmp_path), make_settings(tmp_path / "home")


def test_every_bad_row_is_quarantined_with_its_reason(dirty):
    _, contract, settings = dirty
    ingest_events(contract, settings, future_after=NOW)
    quarantine = read_quarantine(settings, contract.name)

    expected = {i + 1: reason for i, (_, reason) in enumerate(ROWS) if reason}
    assert dict(zip(quarantine[SOURCE_ROW], quarantine[REASON], strict=True)) == expected
    # The quarantine keeps the raw values as read, so a person can see what was wrong.
    assert "twelve" in set(quarantine["value"].dropna())


@pytest.mark.parametrize("word", ["now", "today", " now ", "NOW", "Today", "yesterday", "tomorrow"])
def test_a_relative_date_word_is_never_an_event_time(tmp_path, word):
    """pandas reads "now" and "today" as the current moment; as an event time that would be a made-up date."""
    (tmp_path / "events.csv").write_text(HEADER + f"c1,2024-01-05 10:00:00,purchase,1\nc2,{word},purchase,1\n")
    contract, settings = contract_for(tmp_path), make_settings(tmp_path / "home")
    report = ingest_events(contract, settings, future_after=NOW)
    quarantine = read_quarantine(settings, contract.name)

    assert report.rows_accepted == 1
    assert quarantine[REASON].tolist() == ["unparseable_timestamp(ts)"]
    assert quarantine["ts"].str.strip().tolist() == [word.strip()], "the quarantine keeps the word as written"


def test_counts_reconcile_and_are_reported(dirty):
    _, contract, settings = dirty
    report = ingest_events(contract, settings, future_after=NOW)
    written = read_manifest(settings, contract.name).files["events.csv"]

    assert report.rows_read == len(ROWS) == report.rows_accepted + report.rows_quarantined
    assert report.rows_accepted == 3
    assert written.rows_quarantined == 11
    # Counted by rule; each quarantined row's reason also names the column.
    assert written.quarantined_by_reason["unparseable_timestamp"] == 3
    assert written.quarantined_by_reason["missing_entity_key"] == 2


def test_accepted_rows_are_typed_in_the_platform_columns(dirty):
    _, contract, settings = dirty
    ingest_events(contract, settings, future_after=NOW)
    bronze = read_bronze_events(settings, contract.name)

    assert list(bronze.columns) == ["customer_id", "event_time", "event_day", "event_type", "amount"]
    assert bronze["amount"].tolist() == [12.5, 0.0, 3.0]
    # A zoned timestamp is converted to UTC; a date alone is midnight.
    assert bronze["event_time"].tolist() == [
        pd.Timestamp("2024-01-05 10:00:00"),
        pd.Timestamp("2024-01-06 11:00:00"),
        pd.Timestamp("2024-02-01"),
    ]


def test_negative_amounts_and_duplicates_pass_when_the_contract_allows_them(tmp_path):
    (tmp_path / "events.csv").write_text(HEADER + "c1,2024-01-05,refund,-5\nc1,2024-01-05,refund,-5\n")
    contract = contract_for(tmp_path, allow_negative_amounts=True, exact_duplicates="keep")
    report = ingest_events(contract, make_settings(tmp_path / "home"), future_after=NOW)

    assert (report.rows_accepted, report.rows_quarantined) == (2, 0)


@pytest.mark.parametrize(
    "content",
    [b"\x89PNG\r\n\x1a\n\x00\x00\x00 binary garbage \xff\xfe", b""],
    ids=["binary", "empty"],
)
def test_an_unreadable_parquet_file_fails_clearly_and_writes_nothing(tmp_path, content):
    (tmp_path / "events.parquet").write_bytes(content)
    contract = contract_for(tmp_path, "events.parquet", format="parquet")
    settings = make_settings(tmp_path / "home")

    with pytest.raises(IngestionError, match=r"cannot ingest .*events\.parquet.*nothing was written"):
        ingest_events(contract, settings)
    assert read_manifest(settings, contract.name) is None
    # Only the lock file: no event part, no quarantine.
    assert [p.name for p in bronze_dir(settings, contract.name).rglob("*")] == [".lock"]


def test_a_failed_ingestion_keeps_the_previous_bronze_layer(dirty):
    folder, contract, settings = dirty
    ingest_events(contract, settings, future_after=NOW)
    before = read_bronze_events(settings, contract.name)
    (folder / "events.csv").write_bytes(b"\xff\xfe\x00\x00not,utf8\x00\xff")

    with pytest.raises(IngestionError, match=r"events\.csv: not a readable csv file"):
        ingest_events(contract, settings)
    pd.testing.assert_frame_equal(read_bronze_events(settings, contract.name), before)


def test_a_missing_contract_column_is_named(tmp_path):
    (tmp_path / "events.csv").write_text("customer,ts,value\nc1,2024-01-05,1\n")
    with pytest.raises(IngestionError, match=r"\['kind'\]"):
        ingest_events(contract_for(tmp_path), make_settings(tmp_path / "home"))


def test_bronze_is_reingested_only_when_the_source_changes(dirty):
    folder, contract, settings = dirty
    ingest_events(contract, settings, future_after=NOW)
    assert ingest_events(contract, settings, future_after=NOW).ingested == ()

    (folder / "events.csv").write_text(HEADER + "c9,2024-01-01,purchase,1\n")
    assert ingest_events(contract, settings, future_after=NOW).ingested == ("events.csv",)
    assert read_bronze_events(settings, contract.name)["customer_id"].tolist() == ["c9"]
