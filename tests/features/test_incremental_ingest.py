"""Incremental ingestion of a landing folder: only files not yet ingested are read, a re-delivered file replaces
exactly its own rows, quarantine and counts are kept per file, a refused file does not block the others, a crash
before the commit leaves the previous bronze readable, and the manifest is the only thing readers trust."""

from __future__ import annotations

import datetime as dt
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest

from churnops.bronze import (
    EVENTS_DIR,
    MANIFEST_FILE,
    QUARANTINE_DIR,
    REASON,
    SOURCE_FILE,
    read_bronze_events,
    read_manifest,
    read_quarantine,
)
from churnops.dataset import bronze_dir
from churnops.jobs.bronze_writer import bronze_lock
from churnops.jobs.ingest import IngestionError, IngestionFailed, ingest_events
from tests.features.conftest import make_settings
from tests.features.test_ingest import HEADER, NOW, contract_for

DAY1 = ["c1,2024-05-01 09:00:00,purchase,10", "c2,2024-05-01 10:00:00,visit,0"]
DAY2 = ["c1,2024-05-02 09:00:00,purchase,11", "c3,2024-05-02 12:00:00,purchase,4"]


def deliver(landing: Path, relative: str, rows: list[str]) -> Path:
    path = landing / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(HEADER + "".join(row + "\n" for row in rows))
    return path


def bronze_rows(settings, contract) -> list[tuple[str, str, float]]:
    events = read_bronze_events(settings, contract.name)
    return sorted(zip(events["customer_id"], events["event_time"].astype(str), events["amount"], strict=True))


def files_on_disk(settings, contract) -> set[str]:
    root = bronze_dir(settings, contract.name)
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()} - {MANIFEST_FILE, ".lock"}


@pytest.fixture
def landing(tmp_path):
    folder = tmp_path / "landing"
    folder.mkdir()
    return folder, contract_for(tmp_path, "landing"), make_settings(tmp_path / "home")


def test_a_new_file_is_ingested_once_and_a_second_run_changes_nothing(landing):
    folder, contract, settings = landing
    deliver(folder, "2024-05-01.csv", DAY1)
    first = ingest_events(contract, settings, future_after=NOW)
    manifest_file = bronze_dir(settings, contract.name) / MANIFEST_FILE
    before = (manifest_file.read_bytes(), manifest_file.stat().st_mtime_ns, files_on_disk(settings, contract))

    second = ingest_events(contract, settings, future_after=NOW)

    assert first.ingested == ("2024-05-01.csv",) and first.committed
    assert second.ingested == () and not second.committed and second.unchanged == ("2024-05-01.csv",)
    assert (manifest_file.read_bytes(), manifest_file.stat().st_mtime_ns, files_on_disk(settings, contract)) == before


def test_only_files_not_yet_ingested_are_read(landing):
    folder, contract, settings = landing
    deliver(folder, "2024-05-01.csv", DAY1)
    first = ingest_events(contract, settings, future_after=NOW).manifest.files["2024-05-01.csv"]
    deliver(folder, "2024-05-02.csv", DAY2)

    run = ingest_events(contract, settings, future_after=NOW)

    assert run.ingested == ("2024-05-02.csv",) and run.rows_read == len(DAY2)
    assert run.manifest.files["2024-05-01.csv"] == first  # untouched: not re-read, same parts
    assert len(bronze_rows(settings, contract)) == len(DAY1) + len(DAY2)


def test_a_redelivered_file_replaces_exactly_its_own_rows(landing):
    folder, contract, settings = landing
    deliver(folder, "a.csv", DAY1 + DAY2)
    deliver(folder, "b.csv", ["c7,2024-05-01 11:00:00,purchase,70"])
    first = ingest_events(contract, settings, future_after=NOW).manifest
    deliver(folder, "a.csv", ["c1,2024-05-01 09:00:00,purchase,12.5", "c9,2024-05-03 08:00:00,visit,0"])

    run = ingest_events(contract, settings, future_after=NOW)

    assert run.ingested == ("a.csv",)
    assert run.manifest.files["b.csv"] == first.files["b.csv"]
    assert bronze_rows(settings, contract) == [
        ("c1", "2024-05-01 09:00:00", 12.5),
        ("c7", "2024-05-01 11:00:00", 70.0),
        ("c9", "2024-05-03 08:00:00", 0.0),
    ]
    # The superseded parts stay on disk until the next run (a reader may still hold the old manifest), unlisted.
    superseded = set(first.files["a.csv"].parts)
    assert superseded <= files_on_disk(settings, contract)
    assert not superseded & run.manifest.listed_files()
    ingest_events(contract, settings, future_after=NOW)
    assert files_on_disk(settings, contract) == run.manifest.listed_files()


def test_quarantine_and_counts_are_kept_per_file(landing):
    folder, contract, settings = landing
    deliver(folder, "a.csv", DAY1 + ["c4,2024-05-01 10:00:00,purchase,-5", "c5,not a date,visit,0"])
    deliver(folder, "b.csv", DAY2 + ["c6,2024-05-02 10:00:00,purchase,twelve"])

    manifest = ingest_events(contract, settings, future_after=NOW).manifest
    quarantine = read_quarantine(settings, contract.name)

    a, b = manifest.files["a.csv"], manifest.files["b.csv"]
    assert (a.rows_read, a.rows_accepted, a.rows_quarantined) == (4, 2, 2)
    assert a.quarantined_by_reason == {"unparseable_timestamp": 1, "negative_amount": 1}
    assert (b.rows_read, b.rows_accepted, b.rows_quarantined) == (3, 2, 1)
    assert b.quarantined_by_reason == {"non_numeric_amount": 1}
    assert a.reconciles and b.reconciles
    assert sorted(zip(quarantine[SOURCE_FILE], quarantine["_source_row"], quarantine[REASON], strict=True)) == [
        ("a.csv", 3, "negative_amount(value)"),
        ("a.csv", 4, "unparseable_timestamp(ts)"),
        ("b.csv", 3, "non_numeric_amount(value)"),
    ]
    assert (a.min_event_day, a.max_event_day, b.min_event_day) == ("2024-05-01", "2024-05-01", "2024-05-02")


@pytest.mark.parametrize(
    ("spec", "layout", "expected"),
    [
        ("landing", ["a.csv", "sub/b.csv", "_SUCCESS", ".c.csv", "_tmp/d.csv", "notes.txt"], ["a.csv", "sub/b.csv"]),
        ("landing/*.csv", ["a.csv", "sub/b.csv", ".c.csv"], ["a.csv"]),
        ("landing/**/*.csv", ["a.csv", "sub/b.csv"], ["a.csv", "sub/b.csv"]),
        ("landing/a.csv", ["a.csv", "sub/b.csv"], ["a.csv"]),
        (
            "landing",
            ["day=2024-05-01/part-0.csv", "day=2024-05-02/part-0.csv", "day=2024-05-02/part-1.csv"],
            ["day=2024-05-01/part-0.csv", "day=2024-05-02/part-0.csv", "day=2024-05-02/part-1.csv"],
        ),
    ],
    ids=["folder", "glob", "recursive-glob", "single-file", "partition-folders"],
)
def test_a_source_may_be_a_file_a_folder_or_a_glob(tmp_path, spec, layout, expected):
    for i, relative in enumerate(layout):
        deliver(tmp_path / "landing", relative, [f"c{i},2024-05-0{1 + i % 3} 09:00:00,purchase,{i}"])
    contract, settings = contract_for(tmp_path, spec), make_settings(tmp_path / "home")

    run = ingest_events(contract, settings, future_after=NOW)

    assert run.ingested == tuple(expected)
    assert sorted(read_bronze_events(settings, contract.name)["customer_id"]) == sorted(
        f"c{layout.index(relative)}" for relative in expected
    )


def test_partition_folders_of_parquet_files_land_in_one_bronze_folder_per_event_day(tmp_path):
    for day in ("2024-05-01", "2024-05-02"):
        path = tmp_path / "landing" / f"day={day}" / "part-0.parquet"
        path.parent.mkdir(parents=True)
        frame = pd.DataFrame({"customer": ["c1", "c2"], "ts": [f"{day} 09:00:00", f"{day} 23:59:59"]})
        frame.assign(kind="purchase", value=[1.0, 2.0]).to_parquet(path)
    contract = contract_for(tmp_path, "landing", format="parquet")
    settings = make_settings(tmp_path / "home")

    manifest = ingest_events(contract, settings, future_after=NOW).manifest

    assert sorted(manifest.files) == ["day=2024-05-01/part-0.parquet", "day=2024-05-02/part-0.parquet"]
    day_folders = {Path(part).parent.as_posix() for part in manifest.event_parts()}
    assert day_folders == {f"{EVENTS_DIR}/day=2024-05-01", f"{EVENTS_DIR}/day=2024-05-02"}
    second_day = read_bronze_events(settings, contract.name, first_day=dt.date(2024, 5, 2))
    assert set(second_day["event_day"]) == {dt.date(2024, 5, 2)} and len(second_day) == 2


def test_an_unreadable_file_among_good_ones_is_named_and_the_good_ones_are_committed(landing):
    folder, contract, settings = landing
    deliver(folder, "1.csv", DAY1)
    (folder / "2.csv").write_bytes(b"\xff\xfe\x00\x00not,utf8\x00\xff")
    (folder / "3.csv").write_text(HEADER)
    deliver(folder, "4.csv", DAY2)

    with pytest.raises(IngestionFailed, match=r"2 source file\(s\) refused") as refused:
        ingest_events(contract, settings, future_after=NOW)

    message = str(refused.value)
    assert "2.csv: not a readable csv file" in message and "3.csv: it has no rows" in message
    assert [failure.path for failure in refused.value.run.failed] == ["2.csv", "3.csv"]
    assert sorted(read_manifest(settings, contract.name).files) == ["1.csv", "4.csv"]
    assert len(bronze_rows(settings, contract)) == len(DAY1) + len(DAY2)

    deliver(folder, "2.csv", ["c8,2024-05-03 10:00:00,purchase,8"])
    (folder / "3.csv").unlink()
    assert ingest_events(contract, settings, future_after=NOW).ingested == ("2.csv",)


def test_a_crash_before_the_commit_leaves_the_previous_bronze_readable_and_the_next_run_clean(landing, monkeypatch):
    folder, contract, settings = landing
    deliver(folder, "a.csv", DAY1)
    ingest_events(contract, settings, future_after=NOW)
    before = bronze_rows(settings, contract)
    deliver(folder, "a.csv", ["c1,2024-05-01 09:00:00,purchase,99"])
    deliver(folder, "b.csv", DAY2 + ["c6,2024-05-02 10:00:00,purchase,-1"])

    def crash(*_: object) -> None:
        raise RuntimeError("killed before the commit")

    with monkeypatch.context() as patched:
        patched.setattr("churnops.jobs.ingest.write_json_atomically", crash)
        with pytest.raises(RuntimeError, match="killed before the commit"):
            ingest_events(contract, settings, future_after=NOW)

    assert bronze_rows(settings, contract) == before
    committed = read_manifest(settings, contract.name)
    orphans = files_on_disk(settings, contract) - committed.listed_files()
    assert any(o.startswith(EVENTS_DIR) for o in orphans) and any(o.startswith(QUARANTINE_DIR) for o in orphans)

    run = ingest_events(contract, settings, future_after=NOW)
    assert run.ingested == ("a.csv", "b.csv")
    assert not orphans & files_on_disk(settings, contract)
    assert ("c1", "2024-05-01 09:00:00", 99.0) in bronze_rows(settings, contract)


def test_a_file_that_leaves_the_landing_folder_keeps_its_rows_and_is_marked_gone(landing):
    folder, contract, settings = landing
    deliver(folder, "a.csv", DAY1)
    deliver(folder, "b.csv", DAY2)
    ingest_events(contract, settings, future_after=NOW)
    kept = folder.parent / "kept.csv"
    shutil.move(folder / "b.csv", kept)

    run = ingest_events(contract, settings, future_after=NOW)

    assert run.gone == ("b.csv",) and run.manifest.files["b.csv"].gone_since is not None
    assert len(bronze_rows(settings, contract)) == len(DAY1) + len(DAY2)
    shutil.move(kept, folder / "b.csv")  # back, same content: not read again, no longer gone
    back = ingest_events(contract, settings, future_after=NOW)
    assert back.ingested == () and back.manifest.files["b.csv"].gone_since is None


def test_an_exact_duplicate_delivered_under_another_name_is_quarantined(landing):
    folder, contract, settings = landing
    deliver(folder, "2024-05-01.csv", DAY1)
    ingest_events(contract, settings, future_after=NOW)
    deliver(folder, "2024-05-01 (copy).csv", DAY1)
    deliver(folder, "late.csv", [DAY1[0], "c5,2024-05-01 13:00:00,visit,0"])

    manifest = ingest_events(contract, settings, future_after=NOW).manifest

    assert manifest.files["2024-05-01 (copy).csv"].quarantined_by_reason == {"exact_duplicate": 2}
    assert manifest.files["late.csv"].quarantined_by_reason == {"exact_duplicate": 1}
    assert [c for c, _, _ in bronze_rows(settings, contract)] == ["c1", "c2", "c5"]


def test_identical_events_in_two_files_are_both_kept_when_the_contract_keeps_duplicates(tmp_path):
    deliver(tmp_path / "landing", "a.csv", DAY1)
    deliver(tmp_path / "landing", "b.csv", DAY1)
    contract = contract_for(tmp_path, "landing", exact_duplicates="keep")
    settings = make_settings(tmp_path / "home")

    assert ingest_events(contract, settings, future_after=NOW).rows_accepted == 2 * len(DAY1)


def test_a_rewrite_keeping_size_and_mtime_is_still_noticed_when_it_landed_just_before_ingestion(landing):
    """On a filesystem with coarse timestamps a quick rewrite can keep both; such a file is always hashed."""
    folder, contract, settings = landing
    path = deliver(folder, "a.csv", ["c1,2024-05-01 09:00:00,purchase,1"])
    ingest_events(contract, settings, future_after=NOW)
    stat = path.stat()
    deliver(folder, "a.csv", ["c1,2024-05-01 09:00:00,purchase,2"])
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))

    assert ingest_events(contract, settings, future_after=NOW).ingested == ("a.csv",)
    assert bronze_rows(settings, contract) == [("c1", "2024-05-01 09:00:00", 2.0)]


def test_two_ingestions_of_one_dataset_do_not_interleave(landing):
    folder, contract, settings = landing
    deliver(folder, "a.csv", DAY1)
    with bronze_lock(bronze_dir(settings, contract.name)):
        with pytest.raises(IngestionError, match=r"another ingestion holds the lock .*\.lock"):
            ingest_events(contract, settings, future_after=NOW, lock_timeout_seconds=0)
        assert read_manifest(settings, contract.name) is None
    assert ingest_events(contract, settings, future_after=NOW).ingested == ("a.csv",)


def test_a_change_of_the_ingestion_rules_reingests_every_file(tmp_path):
    deliver(tmp_path / "landing", "a.csv", ["c1,2024-05-01 09:00:00,refund,-5"])
    settings = make_settings(tmp_path / "home")
    strict = ingest_events(contract_for(tmp_path, "landing"), settings, future_after=NOW)

    lenient = ingest_events(contract_for(tmp_path, "landing", allow_negative_amounts=True), settings, future_after=NOW)

    assert (strict.rows_quarantined, lenient.ingested, lenient.rows_accepted) == (1, ("a.csv",), 1)


def test_the_source_fingerprint_follows_the_files_not_where_bronze_lives(landing, tmp_path):
    folder, contract, settings = landing
    deliver(folder, "a.csv", DAY1)
    fingerprint = ingest_events(contract, settings, future_after=NOW).manifest.fingerprint()
    copied = make_settings(tmp_path / "home-copy")
    shutil.copytree(settings.home, copied.home)

    assert ingest_events(contract, copied, future_after=NOW).manifest.fingerprint() == fingerprint
    deliver(folder, "b.csv", DAY2)
    assert ingest_events(contract, settings, future_after=NOW).manifest.fingerprint() != fingerprint


def test_a_folder_with_no_source_file_and_nothing_ingested_is_refused(landing, tmp_path):
    _, contract, settings = landing
    with pytest.raises(IngestionError, match=r"landing: no csv source file found there"):
        ingest_events(contract, settings, future_after=NOW)
    with pytest.raises(IngestionError, match=r"missing\.csv: the file does not exist"):
        ingest_events(contract_for(tmp_path, "missing.csv"), settings, future_after=NOW)
