"""The feature job's per-cutoff frames, kept between run dates, so a new run date computes only its new cutoffs.

A weekly run date shares most of its training cutoffs with the previous one. The rows of one cutoff t depend only on
the feature definitions, the contract, the entity table, the bronze event days before t + horizon (features read the
days before t, the label the horizon after it) and whether that horizon has been observed by the run: its frame is
stored under a key digesting exactly those (`cutoff_keys`), at `<home>/features/<dataset>/frames/<key>.parquet`.
A re-delivered source file changes the parts of the days it holds, and so the key of every cutoff that read them.

Only the cutoffs without a stored frame go to Spark, which reads only the bronze days they need. The snapshot is
then assembled from the frames in (cutoff, customer) order: a full build is the same path with nothing stored, so
an incremental build and a full rebuild give the same rows, dtypes and hashes (tests/features/test_cutoff_frames.py).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import shutil
from pathlib import Path
from typing import Any

from pyspark.sql import SparkSession

from churnops.bronze import BronzeManifest
from churnops.config import Settings
from churnops.dataset import DatasetContract
from churnops.features import CUTOFF, ENTITY_ID
from churnops.jobs.feature_frames import compute_feature_table
from churnops.snapshots import dataset_dir
from churnops.storage import write_arrow_atomically

log = logging.getLogger(__name__)

FRAMES_DIR = "frames"


def cutoff_keys(
    base_key: str,
    contract: DatasetContract,
    manifest: BronzeManifest,
    cutoffs: list[dt.date],
    observed_until: dt.date,
) -> dict[dt.date, str]:
    """One key per cutoff: `base_key` (definitions, contract, entity table), the cutoff, whether its label horizon
    is observed, and every bronze part of the days before cutoff + horizon (by source file, its SHA-256 and the
    part's name, which names the ingestion run that wrote it)."""
    assert contract.label.horizon_days is not None
    horizon = dt.timedelta(days=contract.label.horizon_days)
    parts = sorted(
        (day, path, record.sha256, entry["part"])
        for path, record in manifest.files.items()
        for day, entry in record.days.items()
    )
    keys = {}
    for cutoff in cutoffs:
        end = (cutoff + horizon).isoformat()
        read = [part for part in parts if part[0] < end]
        payload = [base_key, manifest.rules, cutoff.isoformat(), cutoff + horizon <= observed_until, read]
        keys[cutoff] = hashlib.sha256(json.dumps(payload).encode()).hexdigest()[:32]
    return keys


def frame_path(settings: Settings, dataset: str, key: str) -> Path:
    return dataset_dir(settings, dataset) / FRAMES_DIR / f"{key}.parquet"


def _canonical(table: Any) -> Any:
    """`table` with every column nullable and no writer metadata: frames written by different runs concatenate."""
    import pyarrow as pa

    schema = pa.schema([field.with_nullable(True) for field in table.schema])
    return table.cast(schema).replace_schema_metadata(None)


def _spark_rows(features: Any, scratch: Path) -> Any:
    """Materialise a Spark frame as an Arrow table through Parquet files under `scratch` (removed afterwards)."""
    import pyarrow.dataset as ds

    features.write.mode("overwrite").parquet(str(scratch))
    try:
        return _canonical(ds.dataset(scratch, format="parquet").to_table())
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def assemble_feature_rows(
    spark: SparkSession,
    contract: DatasetContract,
    settings: Settings,
    cutoffs: list[dt.date],
    observed_until: dt.date,
    manifest: BronzeManifest | None,
    base_key: str,
    scratch: Path,
) -> tuple[Any, list[dt.date]]:
    """Every (customer, cutoff) row of `cutoffs` as one Arrow table in (cutoff, customer) order, and the cutoffs
    that had to be computed (the others came from stored frames).

    Entity-level data (no events, one dated table) is computed whole every time: there is nothing to share.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    if contract.events is None or manifest is None or contract.label.horizon_days is None:
        table = _spark_rows(compute_feature_table(spark, contract, settings, cutoffs, observed_until), scratch)
        return _sorted(table), list(cutoffs)
    keys = cutoff_keys(base_key, contract, manifest, cutoffs, observed_until)
    missing = [c for c in cutoffs if not frame_path(settings, contract.name, keys[c]).exists()]
    if missing:
        # Only the days the missing cutoffs read: those before the latest one's horizon end.
        last_day = max(missing) + dt.timedelta(days=contract.label.horizon_days - 1)
        computed = _spark_rows(
            compute_feature_table(spark, contract, settings, missing, observed_until, manifest, last_day), scratch
        )
        for cutoff in missing:
            rows = computed.filter(pc.equal(computed[CUTOFF], pa.scalar(cutoff, computed.schema.field(CUTOFF).type)))
            write_arrow_atomically(rows, frame_path(settings, contract.name, keys[cutoff]))
    log.info("feature frames: %d cutoff(s) computed, %d reused", len(missing), len(cutoffs) - len(missing))
    import pyarrow.parquet as pq

    tables = [_canonical(pq.read_table(frame_path(settings, contract.name, keys[c]))) for c in cutoffs]
    return _sorted(pa.concat_tables(tables)), missing


def _sorted(table: Any) -> Any:
    return table.sort_by([(CUTOFF, "ascending"), (ENTITY_ID, "ascending")])
