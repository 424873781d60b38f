"""Ingestion on Spark against the pandas path: the same source folder, ingested by each engine into its own home,
gives the same bronze rows, the same quarantined rows with the same reasons and the same reconciled counts, on a
first run and on an incremental one (a new file, a re-delivery, duplicates across files inside and outside the
run)."""

from __future__ import annotations

import datetime as dt
import io
from pathlib import Path

import pandas as pd
import pytest

from churnops.bronze import REASON, SOURCE_FILE, SOURCE_ROW, read_bronze_events, read_manifest, read_quarantine
from churnops.config import IngestionSettings
from churnops.jobs.event_rules import RULES
from churnops.jobs.ingest import ingest_events
from tests.features.conftest import make_settings
from tests.features.test_ingest import HEADER, ROWS, contract_for

pytestmark = pytest.mark.slow

NOW = dt.datetime(2024, 6, 1, 12, 0, 0)
# Files of the first run. b.csv repeats one event of a.csv (a duplicate across files) and has a second header
# order; sub/c.csv sits in a partition folder.
FIRST_RUN = {
    "a.csv": HEADER + "\n".join(row for row, _ in ROWS) + "\n",
    "b.csv": "ts,customer,value,kind\n"
    "2024-01-05 10:00:00,c1,12.50,purchase\n"  # the event of a.csv's first row: exact_duplicate across files
    "2024-03-01 09:00:00,c9,7,visit\n"
    '2024-03-01 09:00:00,"c9",7,visit\n'  # the same row once quoted: a duplicate within the file
    "2024-03-02 09:00:00,c9,-7,refund\n",
    "day=2024-04-01/c.csv": HEADER + "c5,2024-04-01 08:00:00,purchase,5\nc5,2024-04-01,purchase,\n",
}
# The second run: m.csv is re-delivered, a2.csv and z.csv are new.
SECOND_RUN = {
    "m.csv": HEADER + "c7,2024-05-01 10:00:00,purchase,3\nc8,2024-05-02 10:00:00,purchase,4\n",
    # Y (c8 on May 2) is in m.csv's previous delivery: a2.csv, ingested before m.csv, must quarantine it.
    # W (c6 on May 3) is new in a2.csv and z.csv: the earlier file keeps it.
    "a2.csv": HEADER + "c8,2024-05-02 10:00:00,purchase,4\nc6,2024-05-03 10:00:00,visit,1\nc6,now,visit,1\n",
    # X (c9's March visit) is kept by b.csv from the first run: a duplicate here.
    "z.csv": HEADER + "c6,2024-05-03 10:00:00,visit,1\nc9,2024-03-01 09:00:00,visit,7\nc10,2024-05-04,visit,2\n",
}
M_FIRST = HEADER + "c8,2024-05-02 10:00:00,purchase,4\n"


def _write(folder: Path, files: dict[str, str]) -> None:
    for relative, text in files.items():
        (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        (folder / relative).write_text(text)


def _bronze(settings, name) -> pd.DataFrame:
    events = read_bronze_events(settings, name)
    return events.sort_values(list(events.columns), na_position="first", ignore_index=True)


def _quarantine(settings, name) -> pd.DataFrame:
    rows = read_quarantine(settings, name)
    # Text either way; only the pandas-written files carry pandas' own name for it (`string` rather than `object`).
    rows = rows.astype({column: "string" for column in rows.columns if column != SOURCE_ROW})
    return rows.sort_values([SOURCE_FILE, SOURCE_ROW], ignore_index=True)[sorted(rows.columns)]


def _counts(settings, name) -> dict:
    manifest = read_manifest(settings, name)
    assert manifest is not None
    return {
        path: (r.rows_read, r.rows_accepted, r.rows_quarantined, r.quarantined_by_reason, _day_rows(r.days))
        for path, r in manifest.files.items()
    } | {"totals": manifest.totals(), "rules": manifest.rules}


def _day_rows(days: dict) -> dict:
    return {day: entry["rows"] for day, entry in days.items()}


@pytest.fixture
def both_engines(tmp_path, spark):
    source = tmp_path / "landing"
    source.mkdir()
    contract = contract_for(tmp_path, "landing")
    homes = {engine: make_settings(tmp_path / f"home-{engine}") for engine in ("pandas", "spark")}
    return source, contract, homes


def _ingest_both(contract, homes):
    return {engine: ingest_events(contract, homes[engine], future_after=NOW, engine=engine) for engine in homes}


def _assert_same(contract, homes):
    pandas_home, spark_home = homes["pandas"], homes["spark"]
    pd.testing.assert_frame_equal(_bronze(spark_home, contract.name), _bronze(pandas_home, contract.name))
    pd.testing.assert_frame_equal(_quarantine(spark_home, contract.name), _quarantine(pandas_home, contract.name))
    assert _counts(spark_home, contract.name) == _counts(pandas_home, contract.name)


def test_both_engines_give_the_same_bronze_quarantine_and_counts(both_engines):
    source, contract, homes = both_engines
    _write(source, FIRST_RUN | {"m.csv": M_FIRST})
    runs = _ingest_both(contract, homes)
    _assert_same(contract, homes)
    reasons = runs["spark"].quarantined_by_reason
    assert set(reasons) == set(RULES), "the fixture must hold a bad row of every rule"
    assert runs["spark"].rows_read == runs["spark"].rows_accepted + runs["spark"].rows_quarantined
    # Rows are where the rules put them (not merely the same in both engines).
    quarantine = read_quarantine(homes["spark"], contract.name)
    from_b = quarantine[quarantine[SOURCE_FILE] == "b.csv"]
    assert dict(zip(from_b[SOURCE_ROW], from_b[REASON], strict=True)) == {
        1: "exact_duplicate",
        3: "exact_duplicate",
        4: "negative_amount(value)",
    }

    _write(source, SECOND_RUN)
    runs = _ingest_both(contract, homes)
    assert sorted(runs["spark"].ingested) == ["a2.csv", "m.csv", "z.csv"]
    _assert_same(contract, homes)
    quarantine = read_quarantine(homes["spark"], contract.name)
    duplicates = quarantine[quarantine[REASON] == "exact_duplicate"]
    assert sorted(zip(duplicates[SOURCE_FILE], duplicates[SOURCE_ROW], strict=True)) == [
        ("a.csv", 4),
        ("a2.csv", 1),
        ("b.csv", 1),
        ("b.csv", 3),
        ("z.csv", 1),
        ("z.csv", 2),
    ]


def test_a_refused_file_is_refused_by_both_engines(both_engines):
    source, contract, homes = both_engines
    _write(source, {"a.csv": HEADER + "c1,2024-01-05,purchase,1\n", "b.csv": HEADER, "c.csv": "x,y\n1,2\n"})
    failures = {}
    for engine, settings in homes.items():
        with pytest.raises(Exception) as raised:
            ingest_events(contract, settings, future_after=NOW, engine=engine)
        failures[engine] = sorted(f.path for f in raised.value.run.failed)
    assert failures["spark"] == failures["pandas"] == ["b.csv", "c.csv"]
    _assert_same(contract, homes)


def test_parquet_sources_give_the_same_result(both_engines, tmp_path):
    source, contract, homes = both_engines
    frame = pd.read_csv(io.StringIO(FIRST_RUN["a.csv"]), dtype=str, keep_default_na=False, na_values=[""])
    frame.iloc[:7].to_parquet(source / "a.parquet", index=False)
    # The second file with typed columns (a float amount with a NaN, real timestamps), repeating a's first event.
    typed = frame.iloc[[0, 7, 8, 9, 10]].assign(value=[12.5, 1.0, 1.0, float("nan"), 2.0])
    typed["ts"] = pd.to_datetime(typed["ts"], errors="coerce", format="mixed")
    typed.to_parquet(source / "b.parquet", index=False, coerce_timestamps="us")
    contract = contract_for(tmp_path, "landing", format="parquet")
    _ingest_both(contract, homes)
    _assert_same(contract, homes)
    # pandas' default nanosecond timestamps: Spark cannot read them, and says so naming the column.
    typed.to_parquet(source / "c.parquet", index=False)
    with pytest.raises(Exception, match=r"\['ts'\] hold nanosecond timestamps"):
        ingest_events(contract, homes["spark"], future_after=NOW, engine="spark")


def test_auto_picks_spark_only_above_its_size():
    settings = IngestionSettings(engine="auto", spark_min_bytes=1000)
    assert (settings.engine_for(999), settings.engine_for(1000)) == ("pandas", "spark")
    assert IngestionSettings(engine="spark").engine_for(1) == "spark"


def test_a_file_read_in_several_blocks_numbers_rows_and_keeps_first_copies_as_pandas(both_engines, tmp_path, spark):
    """Spark splits a large file into blocks read by different tasks; the quarantined rows' numbers and which copy
    of a repeated row is kept must not depend on that."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    source, _, homes = both_engines
    rows = 6000
    rng = np.random.default_rng(7)
    frame = pd.DataFrame(
        {
            "customer": [f"c{i % 400}" for i in range(rows)],
            "ts": [f"2024-0{1 + i % 5}-{1 + i % 28:02d} {i % 24:02d}:00:00" for i in range(rows)],
            "kind": rng.choice(["purchase", "visit"], rows),
            "value": [str(v) for v in rng.integers(1, 50, rows)],
        }
    )
    frame.loc[rng.choice(rows, 40, replace=False), "value"] = "oops"  # broken rows all over the file
    frame.loc[rng.choice(rows, 40, replace=False), "ts"] = None
    # Copies of earlier rows far down the file, and of rows in the other file (a duplicate across files).
    frame.iloc[5000:5050] = frame.iloc[10:60].to_numpy()
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), source / "big.parquet", row_group_size=500)
    frame.iloc[:30].to_parquet(source / "a.parquet", index=False)
    contract = contract_for(tmp_path, "landing", format="parquet")
    spark.conf.set("spark.sql.files.maxPartitionBytes", "8192")  # several blocks for big.parquet
    try:
        _ingest_both(contract, homes)
    finally:
        spark.conf.unset("spark.sql.files.maxPartitionBytes")
    _assert_same(contract, homes)
    manifest = read_manifest(homes["spark"], contract.name)
    assert manifest.files["big.parquet"].quarantined_by_reason["exact_duplicate"] >= 50
