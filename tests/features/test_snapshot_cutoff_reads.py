"""Reading one cutoff of a snapshot: only its rows, verified against that cutoff's own recorded hash."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from churnops.features import CUTOFF, ENTITY_ID
from churnops.snapshots import DATA_DIR, SnapshotIntegrityError, describe, load_snapshot, write_metadata

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


def test_a_change_in_the_read_cutoff_is_refused_and_one_elsewhere_is_not_read(tmp_path):
    written_snapshot(tmp_path)
    part = tmp_path / DATA_DIR / "part-0.parquet"
    rows = pq.read_table(part).to_pandas()
    first_cutoff_row = rows.index[rows[CUTOFF] == pd.Timestamp(CUTOFFS[0])][0]
    rows.loc[first_cutoff_row, "amount_sum_all"] += 1.0
    pq.write_table(pa.Table.from_pandas(rows, preserve_index=False).replace_schema_metadata(None), part)

    load_snapshot(tmp_path, cutoffs=[CUTOFFS[2]])  # the scoring cutoff's rows are intact
    with pytest.raises(SnapshotIntegrityError, match="cutoff 2024-01-01"):
        load_snapshot(tmp_path, cutoffs=[CUTOFFS[0]])
    with pytest.raises(SnapshotIntegrityError, match="all rows"):
        load_snapshot(tmp_path)


def test_a_snapshot_without_cutoff_hashes_is_read_whole_and_filtered(tmp_path):
    written_snapshot(tmp_path)
    metadata_file = tmp_path / "snapshot.json"
    older = pd.read_json(metadata_file, typ="series").to_dict()
    older.pop("cutoff_hashes"), older.pop("column_dtypes")
    metadata_file.write_text(pd.Series(older).to_json())

    frame, metadata = load_snapshot(tmp_path, cutoffs=[CUTOFFS[1]])

    assert metadata.cutoff_hashes == {}
    assert len(frame) == 50 and set(frame[CUTOFF]) == {pd.Timestamp(CUTOFFS[1])}
