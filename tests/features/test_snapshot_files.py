"""Snapshots partitioned by cutoff and hashed from their files' digests (churnops/snapshot_files.py): reads of some
cutoffs and columns get the dtypes of a whole read, and tampering is caught in exactly the cutoffs it touched.

The files are written here with pyarrow in the layout Spark writes (tests/features/test_cutoff_frames.py builds them
with Spark); the digests are computed as the executors compute them."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from churnops.snapshot_files import (
    cutoff_folder,
    data_files,
    describe_files,
    file_sha256,
    role_cutoffs,
    training_cutoffs,
)
from churnops.snapshots import DATA_DIR, SnapshotIntegrityError, load_snapshot, read_metadata, write_metadata

D = dt.date
CUTOFFS = {"train": [D(2024, 1, 1), D(2024, 2, 1)], "out_of_time": [D(2024, 3, 1)], "scoring": [D(2024, 4, 1)]}


def rows(day: dt.date, n: int = 4) -> pa.Table:
    """One cutoff's rows as Spark writes them: customer order, no cutoff column (it is in the folder's name)."""
    visits = [i + day.month for i in range(n)]
    if day == D(2024, 2, 1):
        visits[1] = None  # an integer column with a null in one cutoff only
    return pa.table(
        {
            "customer_id": [f"c{i:03d}" for i in range(n)],
            "visits": pa.array(visits, pa.int64()),
            "amount": [float(i) * day.month for i in range(n)],
            "plan": ["basic" if i % 2 else "pro" for i in range(n)],
            "churned": [i % 2 == 0 for i in range(n)],
        }
    )


def write_snapshot(folder: Path, change: dict[dt.date, pa.Table] | None = None) -> Path:
    data = folder / DATA_DIR
    for day in sorted(d for days in CUTOFFS.values() for d in days):
        (data / cutoff_folder(day)).mkdir(parents=True)
        pq.write_table((change or {}).get(day, rows(day)), data / cutoff_folder(day) / "part-00000.parquet")
    digests = {relative: file_sha256(str(data / relative)) for relative in data_files(data)}
    metadata = describe_files(
        data, digests, CUTOFFS, "out_of_time", dataset="demo", feature_columns=["visits"], source_fingerprints={}
    )
    write_metadata(folder, metadata)
    return folder


def test_the_hashes_follow_the_files_content(tmp_path):
    one = read_metadata(write_snapshot(tmp_path / "one"))
    same = read_metadata(write_snapshot(tmp_path / "same"))
    changed_scoring = read_metadata(write_snapshot(tmp_path / "scoring", {D(2024, 4, 1): rows(D(2024, 4, 1), 5)}))
    changed_train = read_metadata(write_snapshot(tmp_path / "train", {D(2024, 1, 1): rows(D(2024, 1, 1), 3)}))

    assert one.content_hash == same.content_hash and one.training_hash == same.training_hash
    assert changed_scoring.content_hash != one.content_hash
    # The scoring cutoff is not what training reads: the training hash stays, so training is skipped as unchanged.
    assert changed_scoring.training_hash == one.training_hash
    assert changed_train.training_hash != one.training_hash
    assert one.rows_per_cutoff == {"2024-01-01": 4, "2024-02-01": 4, "2024-03-01": 4, "2024-04-01": 4}
    assert changed_scoring.cutoff_hashes["2024-01-01"] == one.cutoff_hashes["2024-01-01"]


def test_a_read_of_some_cutoffs_and_columns_has_the_whole_reads_dtypes(tmp_path):
    folder = write_snapshot(tmp_path)
    whole, metadata = load_snapshot(folder)
    assert list(whole.columns[:2]) == ["customer_id", "cutoff"]
    assert whole["cutoff"].dt.date.tolist() == sorted(d for days in CUTOFFS.values() for d in days for _ in range(4))
    assert str(whole["visits"].dtype) == "float64"  # a null somewhere in the snapshot

    scoring, _ = load_snapshot(folder, cutoffs=role_cutoffs(metadata, ["scoring"]), columns=["visits"])
    assert list(scoring.columns) == ["customer_id", "cutoff", "visits"]
    assert str(scoring["visits"].dtype) == "float64"  # no null in this cutoff, still the whole read's dtype
    expected = whole[whole["cutoff"] == pd.Timestamp(2024, 4, 1)].reset_index(drop=True)[
        ["customer_id", "cutoff", "visits"]
    ]
    pd.testing.assert_frame_equal(scoring, expected)

    training, _ = load_snapshot(folder, cutoffs=training_cutoffs(metadata))
    assert sorted(training["cutoff"].dt.date.unique()) == [D(2024, 1, 1), D(2024, 2, 1), D(2024, 3, 1)]
    with pytest.raises(Exception, match="no_such_column"):
        load_snapshot(folder, cutoffs=[D(2024, 4, 1)], columns=["no_such_column"])


def test_tampering_is_refused_in_the_cutoffs_it_touched_only(tmp_path):
    folder = write_snapshot(tmp_path)
    january = folder / DATA_DIR / cutoff_folder(D(2024, 1, 1))
    table = pq.read_table(january / "part-00000.parquet")
    pq.write_table(table.set_column(2, "amount", pa.array([9.0, 1.0, 2.0, 3.0])), january / "part-00000.parquet")

    load_snapshot(folder, cutoffs=[D(2024, 4, 1)])  # the scoring cutoff's file is intact
    with pytest.raises(SnapshotIntegrityError, match="cutoff=2024-01-01/part-00000.parquet"):
        load_snapshot(folder, cutoffs=[D(2024, 1, 1)])
    with pytest.raises(SnapshotIntegrityError, match="modified after it was written"):
        load_snapshot(folder)
    assert len(load_snapshot(folder, verify=False)[0]) == 16


def test_a_file_added_to_a_cutoff_or_a_new_cutoff_folder_is_refused(tmp_path):
    folder = write_snapshot(tmp_path)
    scoring = folder / DATA_DIR / cutoff_folder(D(2024, 4, 1))
    pq.write_table(rows(D(2024, 4, 1)), scoring / "part-00001.parquet")
    with pytest.raises(SnapshotIntegrityError, match="cutoff 2024-04-01 was written as files"):
        load_snapshot(folder, cutoffs=[D(2024, 4, 1)])

    other = write_snapshot(tmp_path / "other")
    stray = other / DATA_DIR / cutoff_folder(D(2024, 5, 1))
    stray.mkdir()
    pq.write_table(rows(D(2024, 5, 1)), stray / "part-00000.parquet")
    load_snapshot(other, cutoffs=[D(2024, 4, 1)])  # the cutoffs read are as written
    with pytest.raises(SnapshotIntegrityError, match="cutoff 2024-05-01"):
        load_snapshot(other)
