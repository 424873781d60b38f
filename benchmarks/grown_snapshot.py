"""A Spark-written (file-hashed) snapshot grown to millions of customers at its scoring cutoff, written file by file so
no process holds the grown rows: what `scale.py --score-customers` scores on Spark.

`score_1m.grown_snapshot` grows a snapshot in one pandas frame and describes it from that frame (the pandas hash
scheme); at 10M customers that frame alone was 13 GB and the kernel's OOM killer ended the run. Here the trained
snapshot's scoring cutoff (a few tens of thousands of rows) is resampled under fresh customer ids into Parquet files of
`PART_ROWS` rows, the other cutoffs' files are linked unchanged, and the snapshot is described as the feature job
describes its own (`churnops.snapshot_files.describe_files`: each file's SHA-256 and footers), then published as the
snapshot of a later run date.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from churnops.config import Settings
from churnops.dataset import DatasetContract
from churnops.features import ENTITY_ID
from churnops.snapshot_files import cutoff_folder, data_files, describe_files, file_sha256
from churnops.snapshots import (
    DATA_DIR,
    SnapshotMetadata,
    dataset_dir,
    read_metadata,
    record_run,
    snapshot_dir_for,
    write_metadata,
)

PART_ROWS = 1_000_000


def grown_file_snapshot(settings: Settings, contract: DatasetContract, customers: int) -> tuple[dt.date, float]:
    """(run date, seconds) of the trained snapshot grown to `customers` rows at its scoring cutoff (reused when a
    run grew it before: the same seed gives the same rows)."""
    started = time.perf_counter()
    source_dir = sorted(
        (path.parent for path in dataset_dir(settings, contract.name).glob("*/snapshot.json")),
        key=lambda folder: (read_metadata(folder).inputs_key != "", folder.stat().st_mtime),
    )[-1]
    source = read_metadata(source_dir)
    if not source.hash_scheme:
        raise ValueError(f"{source_dir} is not a Spark-written snapshot; grow it with score_1m.grown_snapshot")
    run_date = dt.date.fromisoformat(source.run_date) + dt.timedelta(days=customers % 997 + 1)
    try:
        snapshot_dir_for(settings, contract.name, run_date)
        return run_date, time.perf_counter() - started
    except FileNotFoundError:
        pass
    scoring = source.cutoffs["scoring"][0]
    target = dataset_dir(settings, contract.name) / f"bench-{customers}"
    shutil.rmtree(target, ignore_errors=True)
    data = target / DATA_DIR
    for relative in source.file_digests:
        if not relative.startswith(cutoff_folder(scoring) + "/"):
            (data / relative).parent.mkdir(parents=True, exist_ok=True)
            os.link(source_dir / DATA_DIR / relative, data / relative)  # the same bytes: no copy
    rows = pa.concat_tables(
        pq.read_table(source_dir / DATA_DIR / relative)
        for relative in source.file_digests
        if relative.startswith(cutoff_folder(scoring) + "/")
    )
    id_index = rows.schema.get_field_index(ENTITY_ID)
    rng = np.random.default_rng(customers)
    (data / cutoff_folder(scoring)).mkdir(parents=True, exist_ok=True)
    for part, first in enumerate(range(0, customers, PART_ROWS)):
        size = min(PART_ROWS, customers - first)
        picked = rows.take(pa.array(rng.integers(0, rows.num_rows, size)))
        ids = pa.array(np.char.add("B", np.arange(first, first + size).astype("U9")), type=pa.string())
        picked = picked.set_column(id_index, rows.schema.field(id_index), ids)
        pq.write_table(picked, data / cutoff_folder(scoring) / f"part-{part:05d}.parquet")
    digests = {relative: file_sha256(str(data / relative)) for relative in data_files(data)}
    metadata = describe_files(
        data,
        digests,
        {role: [dt.date.fromisoformat(day) for day in days] for role, days in source.cutoffs.items()},
        source.validation,
        dataset=contract.name,
        feature_columns=source.feature_columns,
        source_fingerprints=source.source_fingerprints,
        ingestion=source.ingestion,
        run_date=run_date.isoformat(),
        observed_until=source.observed_until,
    )
    publish_grown(settings, contract, target, metadata, run_date)
    return run_date, time.perf_counter() - started


def publish_grown(
    settings: Settings, contract: DatasetContract, target: Path, metadata: SnapshotMetadata, run_date: dt.date
) -> None:
    """Publish a grown snapshot written at `target` under its id (dropped if that snapshot exists: same rows) as the
    snapshot of `run_date`."""
    final = dataset_dir(settings, contract.name) / metadata.snapshot_id
    if final.exists():
        shutil.rmtree(target)
    else:
        write_metadata(target, metadata)
        target.rename(final)
    record_run(settings, metadata, run_date=run_date)
