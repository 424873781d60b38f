"""Hostile CSV files through validated ingestion (jobs/ingest.py) and hostile values through the campaign export
(jobs/export.py). Every file either fails with an error that names the file and the problem and writes nothing,
or is ingested with every row accounted for: read = accepted + quarantined, and read = the records in the file
(rows lost = 0). Formula cells never reach a spreadsheet as formulas."""

from __future__ import annotations

import csv
import datetime as dt
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from churnops.bronze import REASON, read_bronze_events, read_manifest, read_quarantine
from churnops.jobs.export import campaign_list, write_formula_safe_csv
from churnops.jobs.ingest import IngestionError, ingest_events
from tests.features.conftest import make_settings
from tests.features.test_ingest import HEADER, NOW, contract_for
from tests.reliability.figures import record

GOOD_ROWS = [
    "c1,2024-01-05 10:00:00,purchase,12.50",
    "c1,2024-01-06 11:00:00,visit,0",
    "c2,2024-02-01 09:30:00,purchase,3",
]
FORMULAS = ["=cmd|' /C calc'!A0", "+1+1", "-2+3", "@SUM(A1:A9)", "\t=1+1", "\r=1+1", '=HYPERLINK("http://x","y")']
HUGE = 2_000_000  # characters in one field


@pytest.fixture(scope="module")
def tally() -> Iterator[Counter]:
    """Files tried and rows read/accepted/quarantined over the module; recorded at the end."""
    counts: Counter = Counter()
    yield counts
    record(
        "hostile_data",
        files_tried=counts["files"],
        files_refused_with_a_clear_error=counts["refused"],
        rows_read=counts["read"],
        rows_accepted=counts["accepted"],
        rows_quarantined=counts["quarantined"],
        rows_lost=counts["read"] - counts["accepted"] - counts["quarantined"],
        formula_cells_exported=counts["formula_cells"],
        formula_cells_neutralised=counts["neutralised"],
    )


def ingest_file(tmp_path: Path, content: bytes, tally: Counter, records: int, **contract_overrides):
    """Ingest `content` as the event file; check and count that every one of its `records` is accounted for."""
    (tmp_path / "events.csv").write_bytes(content)
    contract = contract_for(tmp_path, **contract_overrides)
    settings = make_settings(tmp_path / "home")
    tally["files"] += 1
    report = ingest_events(contract, settings, future_after=NOW)
    tally["read"] += report.rows_read
    tally["accepted"] += report.rows_accepted
    tally["quarantined"] += report.rows_quarantined
    assert report.rows_read == records, f"the file holds {records} records, ingestion read {report.rows_read}"
    assert report.rows_read == report.rows_accepted + report.rows_quarantined
    bronze = read_bronze_events(settings, contract.name)
    quarantine = read_quarantine(settings, contract.name)
    assert (len(bronze), len(quarantine)) == (report.rows_accepted, report.rows_quarantined)
    return report, bronze, quarantine


def refuse_file(tmp_path: Path, content: bytes, tally: Counter, message: str) -> str:
    """Ingest `content`, expect a clear IngestionError naming the file and matching `message`, and nothing written."""
    (tmp_path / "events.csv").write_bytes(content)
    contract = contract_for(tmp_path)
    settings = make_settings(tmp_path / "home")
    tally["files"] += 1
    with pytest.raises(IngestionError, match=message) as refused:
        ingest_events(contract, settings, future_after=NOW)
    tally["refused"] += 1
    assert "events.csv" in str(refused.value) or "column" in str(refused.value)
    assert read_manifest(settings, contract.name) is None, "a refused file must commit nothing"
    return str(refused.value)


def test_a_semicolon_delimited_file_is_refused_naming_the_missing_columns(tmp_path, tally) -> None:
    content = (HEADER.replace(",", ";") + "\n".join(r.replace(",", ";") for r in GOOD_ROWS) + "\n").encode()
    message = refuse_file(tmp_path, content, tally, r"no column\(s\) \['customer', 'ts', 'value', 'kind'\]")
    assert "customer;ts;kind;value" in message  # it shows the one column it did find: the delimiter is obvious


@pytest.mark.parametrize(
    ("encoding", "content"),
    [
        ("latin-1", (HEADER + "cé1,2024-01-05 10:00:00,achat,1\n").encode("latin-1")),
        ("utf-16", (HEADER + "\n".join(GOOD_ROWS) + "\n").encode("utf-16")),
    ],
)
def test_a_file_that_is_not_utf8_is_refused_clearly(tmp_path, tally, encoding, content) -> None:
    refuse_file(tmp_path, content, tally, r"cannot ingest .*events\.csv: not a readable csv file.*nothing was written")


def test_a_utf8_file_with_a_byte_order_mark_is_read_like_any_utf8_file(tmp_path, tally) -> None:
    """Excel's "CSV UTF-8" export starts with a BOM; the first column must still be found."""
    content = "\ufeff".encode() + (HEADER + "\n".join(GOOD_ROWS) + "\nçé,2024-01-07,achat,2\n").encode()
    report, bronze, _ = ingest_file(tmp_path, content, tally, records=4)
    assert report.rows_accepted == 4 and "çé" in set(bronze["customer_id"])


def test_quoted_newlines_stay_inside_their_field(tmp_path, tally) -> None:
    content = (HEADER + '"c1",2024-01-05,"purchase\nwith a\r\nnote",1\n' + "\n".join(GOOD_ROWS) + "\n").encode()
    report, bronze, _ = ingest_file(tmp_path, content, tally, records=4)
    assert report.rows_accepted == 4
    assert "purchase\nwith a\r\nnote" in set(bronze["event_type"])


def test_huge_fields_are_kept_whole_or_quarantined_never_truncated(tmp_path, tally) -> None:
    huge_key, huge_type, huge_amount = "k" * HUGE, "t" * HUGE, "9" * HUGE
    rows = [
        f"{huge_key},2024-01-05,purchase,1",
        f"c1,2024-01-05,{huge_type},1",
        f"c1,2024-01-05,purchase,{huge_amount}",  # a 2-million-digit number overflows to inf: not finite
    ]
    report, bronze, quarantine = ingest_file(tmp_path, (HEADER + "\n".join(rows) + "\n").encode(), tally, records=3)
    assert huge_key in set(bronze["customer_id"]) and huge_type in set(bronze["event_type"])
    assert quarantine[REASON].tolist() == ["non_numeric_amount(value)"]
    assert len(quarantine["value"].iloc[0]) == HUGE, "the quarantine keeps the raw value whole"


def test_a_row_with_an_extra_field_refuses_the_file_instead_of_shifting_columns(tmp_path, tally) -> None:
    content = (HEADER + "\n".join(GOOD_ROWS) + "\nc9,2024-01-05,purchase,1,unexpected\n").encode()
    refuse_file(tmp_path, content, tally, r"cannot ingest .*events\.csv.*Expected 4 fields in line 5, saw 5")


def test_dates_far_in_the_past_or_future_are_quarantined_with_a_reason(tmp_path, tally) -> None:
    dates = {
        "0001-01-01": "unparseable_timestamp(ts)",  # outside what a timestamp column can hold
        "1500-06-01": "unparseable_timestamp(ts)",
        "1677-09-21 00:00:00": "unparseable_timestamp(ts)",
        "2262-04-12 00:00:00": "unparseable_timestamp(ts)",
        "9999-12-31 23:59:59": "unparseable_timestamp(ts)",
        "10000-01-01": "unparseable_timestamp(ts)",
        "2030-01-01": "future_timestamp(ts)",
        "2024-06-01 12:00:01": "future_timestamp(ts)",  # one second after the ingestion time
    }
    rows = [f"c1,{date},purchase,1" for date in dates]
    report, _, quarantine = ingest_file(tmp_path, (HEADER + "\n".join(rows) + "\n").encode(), tally, records=len(rows))
    assert report.rows_accepted == 0
    assert quarantine[REASON].tolist() == list(dates.values())
    assert quarantine["ts"].tolist() == list(dates), "the quarantine shows the dates as they were written"


def test_an_empty_file_is_refused_and_writes_nothing(tmp_path, tally) -> None:
    refuse_file(tmp_path, b"", tally, r"cannot ingest .*events\.csv: not a readable csv file")


def test_a_header_only_file_is_refused_and_the_previous_bronze_layer_kept(tmp_path, tally) -> None:
    """A truncated export (the header, no rows) must not replace a good bronze layer with an empty one: the feature
    job would then compute every customer as inactive and the scores would all say churn."""
    report, before, _ = ingest_file(tmp_path, (HEADER + "\n".join(GOOD_ROWS) + "\n").encode(), tally, records=3)
    contract, settings = contract_for(tmp_path), make_settings(tmp_path / "home")
    (tmp_path / "events.csv").write_text(HEADER)
    tally["files"] += 1
    with pytest.raises(IngestionError, match=r"events\.csv.*no (data )?rows"):
        ingest_events(contract, settings, future_after=NOW)
    tally["refused"] += 1
    kept = read_bronze_events(settings, contract.name)
    assert len(kept) == len(before) == report.rows_accepted


def test_ten_deliveries_of_the_same_events_keep_one_copy_and_quarantine_the_rest(tmp_path, tally) -> None:
    rows = [f"c{i % 7},2024-01-{1 + i % 28:02d} {i % 24:02d}:00:00,purchase,{i}.5" for i in range(50)]
    content = (HEADER + "\n".join(rows * 10) + "\n").encode()
    report, bronze, quarantine = ingest_file(tmp_path, content, tally, records=500)
    assert report.rows_accepted == 50 and report.rows_quarantined == 450
    assert set(quarantine[REASON]) == {"exact_duplicate"}
    assert len(bronze.drop_duplicates()) == 50


def test_formula_cells_ingested_as_data_are_neutralised_in_the_campaign_export(tmp_path, tally) -> None:
    """Hostile customer ids and event types are data (ingested as written); the CSV a marketer opens shows them
    as text. The raw file is read back with the csv module, as a spreadsheet would split it."""
    quoted = [value.replace('"', '""') for value in FORMULAS]
    rows = [f'"{value}",2024-01-05,purchase,1' for value in quoted]
    _, bronze, _ = ingest_file(tmp_path, (HEADER + "\n".join(rows) + "\n").encode(), tally, records=len(FORMULAS))
    assert sorted(bronze["customer_id"]) == sorted(value.strip() for value in FORMULAS)

    scores = pd.DataFrame(
        {
            "customer_id": bronze["customer_id"],
            "score": [0.9 - i / 100 for i in range(len(bronze))],
            "risk_band": '=HYPERLINK("http://evil","high")',
            "risk_decile": 1,
            "decision": True,
            "model_version": "@7",
            "cutoff": dt.date(2024, 6, 1),
            "scored_at": pd.Timestamp("2024-06-01T00:00:00Z"),
        }
    )
    path = tmp_path / "campaign.csv"
    write_formula_safe_csv(campaign_list(scores, top_k=len(scores)), path)
    with path.open(newline="", encoding="utf-8-sig") as exported:
        cells = [cell for row in csv.reader(exported) for cell in row]
    dangerous = [cell for cell in cells if cell.startswith(("=", "+", "-", "@", "\t", "\r"))]
    neutralised = [cell for cell in cells if cell.startswith("'") and cell[1:2] in ("=", "+", "-", "@", "\t", "\r")]
    tally["formula_cells"] += len(neutralised) + len(dangerous)
    tally["neutralised"] += len(neutralised)
    assert dangerous == [], f"cells a spreadsheet would run as formulas: {dangerous}"
    assert len(neutralised) == 3 * len(scores)  # customer_id, risk_band and model_version of every row
