"""The feature job's per-cutoff frames, kept between run dates, so a new run date computes only its new cutoffs.

A weekly run date shares most of its training cutoffs with the previous one. The rows of one cutoff t depend only on
the feature definitions, the contract, the entity table, the bronze event days before t + horizon (features read the
days before t, the label the horizon after it) and whether that horizon has been observed by the run: its frame is
stored under a key digesting exactly those (`cutoff_keys`), as the Parquet files Spark wrote for it, at
`<home>/features/<dataset>/frames/<key>/`. A re-delivered source file changes the parts of the days it holds, and
so the key of every cutoff that read them.

Only the cutoffs without a stored frame go to Spark, which reads only the bronze days they need and writes their
files itself. The snapshot's `data/cutoff=DAY/` folders are then copies of the frames' files: no row passes
through the driver. A cutoff's file has the same bytes whichever run computed it (`write_by_cutoff`), so an
incremental build and a full rebuild give the same files and hashes (tests/features/test_cutoff_frames.py).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pyspark.sql import SparkSession

from churnops.bronze import BronzeManifest
from churnops.config import Settings
from churnops.dataset import DatasetContract
from churnops.features import CUTOFF, ENTITY_ID
from churnops.jobs.feature_frames import compute_feature_table
from churnops.snapshot_files import PARTITION_PREFIX, cutoff_folder, data_files, file_sha256
from churnops.snapshots import dataset_dir

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
    """A cutoff's stored frame: a folder of Parquet files (none when the cutoff has no rows)."""
    return dataset_dir(settings, dataset) / FRAMES_DIR / key


def write_by_cutoff(features: Any, scratch: Path) -> dict[dt.date, list[Path]]:
    """Write a Spark frame as Parquet partitioned by cutoff under `scratch`, and return each cutoff's files.

    Every cutoff's rows go to one task (hash-partitioned by cutoff) and are sorted by customer, so a cutoff is one
    file whose bytes depend only on its rows: the same whichever other cutoffs were computed alongside."""
    from pyspark.sql import functions as F

    (
        features.withColumn(CUTOFF, F.to_date(F.col(CUTOFF)))
        .repartition(CUTOFF)
        .sortWithinPartitions(CUTOFF, ENTITY_ID)
        .write.mode("overwrite")
        .partitionBy(CUTOFF)
        .parquet(str(scratch))
    )
    written = {}
    for folder in sorted(scratch.glob(f"{PARTITION_PREFIX}*")):
        day = dt.date.fromisoformat(folder.name.removeprefix(PARTITION_PREFIX))
        written[day] = sorted(folder.glob("*.parquet"))
    return written


def _place(files: list[Path], target: Path, copy: bool = False) -> None:
    """`files` as `target/part-NNNNN.parquet` (named by position, not by Spark's run-specific names), moved (copied
    when `copy`) into a folder beside `target` that is then renamed onto it at once. A snapshot gets copies of the
    stored frames, not hard links: a snapshot file rewritten in place must not change the frame a later run reuses."""
    if target.exists():
        return
    building = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}")
    building.mkdir(parents=True)
    for number, source in enumerate(files):
        destination = building / f"part-{number:05d}.parquet"
        if copy:
            shutil.copyfile(source, destination)
        else:
            shutil.move(source, destination)
    try:
        building.rename(target)
    except OSError:  # another run stored the same frame first: its files are the same bytes
        shutil.rmtree(building, ignore_errors=True)


def assemble_feature_files(
    spark: SparkSession,
    contract: DatasetContract,
    settings: Settings,
    cutoffs: list[dt.date],
    observed_until: dt.date,
    manifest: BronzeManifest | None,
    base_key: str,
    scratch: Path,
    data_dir: Path,
) -> list[dt.date]:
    """Write every (customer, cutoff) row of `cutoffs` under `data_dir` as `cutoff=DAY/part-N.parquet` (see
    churnops/snapshot_files.py) and return the cutoffs that had to be computed (the others came from stored frames,
    copied). No row passes through the driver.

    Entity-level data (no events, one dated table) is computed whole every time: there is nothing to share.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        if contract.events is None or manifest is None or contract.label.horizon_days is None:
            written = write_by_cutoff(
                compute_feature_table(spark, contract, settings, cutoffs, observed_until), scratch
            )
            for day, files in written.items():
                _place(files, data_dir / cutoff_folder(day))
            return list(cutoffs)
        keys = cutoff_keys(base_key, contract, manifest, cutoffs, observed_until)
        missing = [c for c in cutoffs if not frame_path(settings, contract.name, keys[c]).is_dir()]
        if missing:
            # Only the days the missing cutoffs read: those before the latest one's horizon end.
            last_day = max(missing) + dt.timedelta(days=contract.label.horizon_days - 1)
            features = compute_feature_table(spark, contract, settings, missing, observed_until, manifest, last_day)
            written = write_by_cutoff(features, scratch)
            for cutoff in missing:
                _place(written.get(cutoff, []), frame_path(settings, contract.name, keys[cutoff]))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    log.info("feature frames: %d cutoff(s) computed, %d reused", len(missing), len(cutoffs) - len(missing))
    for cutoff in cutoffs:
        stored = sorted(frame_path(settings, contract.name, keys[cutoff]).glob("*.parquet"))
        if stored:
            _place(stored, data_dir / cutoff_folder(cutoff), copy=True)
    return missing


def executor_digests(spark: SparkSession) -> Callable[[list[str]], list[str]]:
    """SHA-256 of files by path, computed by the executors (one task per slice of files; only the digests come
    back): the bytes are read where Spark wrote them, never streamed through the driver."""

    def digest(paths: list[str]) -> list[str]:
        if not paths:
            return []
        slices = max(1, min(len(paths), spark.sparkContext.defaultParallelism))
        return spark.sparkContext.parallelize(paths, slices).map(file_sha256).collect()

    return digest


def digest_files(spark: SparkSession, data_dir: Path) -> dict[str, str]:
    """Every data file's SHA-256 by its path relative to `data_dir`, computed by the executors."""
    relative = data_files(data_dir)
    return dict(zip(relative, executor_digests(spark)([str(data_dir / r) for r in relative]), strict=True))
