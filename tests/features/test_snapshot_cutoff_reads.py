"""Reading one cutoff of a snapshot: only its rows (and only the columns asked for), verified against that cutoff's
own recorded digests."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from churnops.features import CUTOFF, ENTITY_ID
from churnops.snapshots import (
    DATA_DIR,
    SnapshotIntegrityError,
    content_hash,
    describe,
    load_snapshot,
    write_metadata,
)

CUTOFFS = [dt.date(2024, 1, 1), dt.date(2024, 2, 1), dt.date(2024, 3, 1)]


def written_snapshot(folder: Path) -> pd.DataFrame:
    """Three cutoffs in two Parquet parts; `days_since_last_event` is missing only at the first cutoff, so a read
    of a later cutoff alone would come back as integers unless the snapshot's dtypes are restored."""
    rows = []
    for index, cutoff in enumerate(CUTOFFS):
        for customer in range(50):
            rows.append(
                {
                    ENTITY_ID: f"C{customer:03d}",
                    CUTOFF: pd.Timestamp(cutoff),
                    "days_since_last_event": None if index == 0 and customer % 7 == 0 else customer + index,
                    "amount_sum_all": float(customer * (index + 1)),
                    "plan": ["basic", "pro"][customer % 2],
                }
            )
    frame = pd.DataFrame(rows).sample(frac=1.0, random_state=3, ignore_index=True)
    frame["days_since_last_event"] = frame["days_since_last_event"].astype("Int64")
    (folder / DATA_DIR).mkdir(parents=True)
    for number, part in enumerate(np.array_split(np.arange(len(frame)), 2)):
        # Written as Spark writes it: a nullable integer column, no pandas metadata.
        table = pa.Table.from_pandas(frame.iloc[part], preserve_index=False).replace_schema_metadata(None)
        pq.write_table(table, folder / DATA_DIR / f"part-{number}.parquet")
    # As the feature job does: the snapshot is described from what was written, read back whole.
    written = pd.read_parquet(folder / DATA_DIR)
    metadata = describe(
        written,
        "tiny",
        {"train": CUTOFFS[:1], "out_of_time": CUTOFFS[1:2], "scoring": CUTOFFS[2:]},
        ["days_since_last_event", "amount_sum_all", "plan"],
        {},
    )
    write_metadata(folder, metadata)
    return written


def test_one_cutoff_reads_exactly_its_rows_with_the_snapshots_dtypes(tmp_path):
    written_snapshot(tmp_path)
    whole, _ = load_snapshot(tmp_path)

    one, metadata = load_snapshot(tmp_path, cutoffs=[CUTOFFS[2]])

    assert set(metadata.cutoff_hashes) == {day.isoformat() for day in CUTOFFS}
    expected = whole[whole[CUTOFF] == pd.Timestamp(CUTOFFS[2])]
    assert len(one) == len(expected) == 50
    assert whole["days_since_last_event"].dtype == np.float64  # missing values at the first cutoff
    assert one.dtypes.to_dict() == whole.dtypes.to_dict()
    key = [ENTITY_ID]
    pd.testing.assert_frame_equal(
        one.sort_values(key, ignore_index=True)[sorted(one.columns)],
        expected.sort_values(key, ignore_index=True)[sorted(expected.columns)],
    )


def change_one_value(folder: Path, cutoff: dt.date, column: str, change) -> None:
    """Rewrite one value of `column` at `cutoff` in the first part, as a stray edit of the Parquet file would."""
    part = folder / DATA_DIR / "part-0.parquet"
    rows = pq.read_table(part).to_pandas()
    row = rows.index[(rows[CUTOFF] == pd.Timestamp(cutoff)) & rows[column].notna()][0]
    rows.loc[row, column] = change(rows.loc[row, column])
    pq.write_table(pa.Table.from_pandas(rows, preserve_index=False).replace_schema_metadata(None), part)


def forget(folder: Path, *fields: str) -> None:
    """Make the snapshot look written before `fields` of its metadata existed."""
    metadata_file = folder / "snapshot.json"
    older = json.loads(metadata_file.read_text())
    for name in fields:
        older.pop(name)
    metadata_file.write_text(json.dumps(older))


def test_a_change_in_the_read_cutoff_is_refused_and_one_elsewhere_is_not_read(tmp_path):
    written_snapshot(tmp_path)
    change_one_value(tmp_path, CUTOFFS[0], "amount_sum_all", lambda value: value + 1.0)

    load_snapshot(tmp_path, cutoffs=[CUTOFFS[2]])  # the scoring cutoff's rows are intact
    with pytest.raises(SnapshotIntegrityError, match="cutoff 2024-01-01"):
        load_snapshot(tmp_path, cutoffs=[CUTOFFS[0]])
    with pytest.raises(SnapshotIntegrityError, match="all rows"):
        load_snapshot(tmp_path)


def test_a_snapshot_without_cutoff_hashes_is_read_whole_and_filtered(tmp_path):
    written_snapshot(tmp_path)
    forget(tmp_path, "cutoff_hashes", "column_dtypes", "column_digests")

    frame, metadata = load_snapshot(tmp_path, cutoffs=[CUTOFFS[1]])

    assert metadata.cutoff_hashes == {}
    assert len(frame) == 50 and set(frame[CUTOFF]) == {pd.Timestamp(CUTOFFS[1])}


@pytest.mark.parametrize(
    ("column", "change"),
    [
        ("amount_sum_all", lambda value: value + 1e-9),
        ("days_since_last_event", lambda value: value + 1),
        ("plan", lambda value: "pro" if value == "basic" else "basic"),
        (ENTITY_ID, lambda value: value + "x"),
    ],
)
def test_any_changed_value_of_a_read_column_is_refused_naming_the_column(tmp_path, column, change):
    written_snapshot(tmp_path)
    change_one_value(tmp_path, CUTOFFS[2], column, change)

    with pytest.raises(SnapshotIntegrityError, match=f"column '{column}' of cutoff 2024-03-01"):
        load_snapshot(tmp_path, cutoffs=[CUTOFFS[2]], columns=["amount_sum_all", "days_since_last_event", "plan"])


def test_reading_some_columns_returns_those_with_the_customer_and_cutoff_and_skips_the_others(tmp_path):
    written = written_snapshot(tmp_path)
    change_one_value(tmp_path, CUTOFFS[2], "plan", lambda value: value.upper())  # not read, so not refused

    frame, _ = load_snapshot(tmp_path, cutoffs=[CUTOFFS[2]], columns=["amount_sum_all"])

    assert list(frame.columns) == [ENTITY_ID, CUTOFF, "amount_sum_all"]
    expected = written[written[CUTOFF] == pd.Timestamp(CUTOFFS[2])][list(frame.columns)]
    pd.testing.assert_frame_equal(
        frame.sort_values(ENTITY_ID, ignore_index=True), expected.sort_values(ENTITY_ID, ignore_index=True)
    )


def test_a_dropped_row_of_the_read_cutoff_is_refused(tmp_path):
    written_snapshot(tmp_path)
    part = tmp_path / DATA_DIR / "part-0.parquet"
    rows = pq.read_table(part).to_pandas()
    rows = rows.drop(index=rows.index[rows[CUTOFF] == pd.Timestamp(CUTOFFS[2])][0])
    pq.write_table(pa.Table.from_pandas(rows, preserve_index=False).replace_schema_metadata(None), part)

    with pytest.raises(SnapshotIntegrityError, match="cutoff 2024-03-01 was written with 50 rows and now holds 49"):
        load_snapshot(tmp_path, cutoffs=[CUTOFFS[2]], columns=["plan"])


def test_a_snapshot_without_column_digests_is_checked_against_its_cutoff_hash(tmp_path):
    written_snapshot(tmp_path)
    forget(tmp_path, "column_digests")
    frame, _ = load_snapshot(tmp_path, cutoffs=[CUTOFFS[2]], columns=["plan"])
    assert list(frame.columns) == [ENTITY_ID, CUTOFF, "plan"] and len(frame) == 50

    change_one_value(tmp_path, CUTOFFS[2], "amount_sum_all", lambda value: value + 1.0)
    with pytest.raises(SnapshotIntegrityError, match="cutoff 2024-03-01"):
        load_snapshot(tmp_path, cutoffs=[CUTOFFS[2]], columns=["plan"])


def test_the_content_hash_is_the_one_snapshots_were_always_published_under(tmp_path):
    """SHA-256 of the dtypes header and pandas' row hashes in (cutoff, customer) order: the scheme every published
    snapshot id was computed with, so older snapshots still verify."""
    written = written_snapshot(tmp_path)
    ordered = written.sort_values([CUTOFF, ENTITY_ID], kind="stable", ignore_index=True)
    ordered = ordered[sorted(ordered.columns)]
    digest = hashlib.sha256(json.dumps([(c, str(ordered[c].dtype)) for c in ordered.columns]).encode())
    digest.update(pd.util.hash_pandas_object(ordered, index=False).to_numpy(dtype=np.uint64).tobytes())

    assert content_hash(written) == digest.hexdigest()
