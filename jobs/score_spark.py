"""Batch scoring on Spark's executors, for populations too large for one pandas process on the driver.

The same list as `churnops.jobs.score` (same scores, decisions, deciles and bands, value and survival columns),
computed in five steps that never bring the rows to the driver:

1. The scored cutoff's rows are read by Spark from the snapshot's Parquet (the model's columns only, and each row's
   place in the snapshot's order) and scored per batch with `mapInPandas`: the registered model's `predict_matrix`
   on `FeatureSchema.encode_frame`, the pandas path's own functions, so blend and calibration are applied exactly as
   there.
2. The value and survival columns (and the campaign, ranked over the whole list) are computed on the executors by
   `churnops.jobs.score_spark_columns` and joined to the scores.
3. Deciles and bands rank a customer against the whole list. The scores are sorted by Spark (range partitions:
   partition i holds higher scores than partition i + 1, and equal scores share a partition), the partitions are
   counted, and each partition is banded with `churnops.banding.build_score_frame` given every customer's count of
   strictly higher scores in the whole list (the partitions before it plus its own). Only one number per partition
   reaches the driver.
4. The list is written as Parquet by Spark (a folder of part files in score order, published atomically at the path
   the pandas path writes its file).
5. When a platform database is configured, each partition is COPYed into the list's staged table from its executor
   (`churnops.db.parallel_scores`), and the driver swaps the table in as the list in one transaction.

Chosen by `Settings.scoring.engine` (`spark`, or `auto` above `spark_min_rows` customers) inside `score`, or run by
spark-submit from the scoring DAG: `spark-submit jobs/score_spark.py --dataset synthetic --run-date YYYY-MM-DD`.
What the snapshot's per-column digests would cost to check here (a pass over every value on the driver) is not
paid: the row count of the scored cutoff is checked against the snapshot's metadata instead.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import json
import logging
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import numpy as np
import pandas as pd
from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from churnops import db
from churnops.banding import build_score_frame, count_scoring_higher
from churnops.config import Settings
from churnops.dataset import DatasetContract, load_contract
from churnops.features import CUTOFF, ENTITY_ID
from churnops.jobs.cutoff_frames import executor_digests
from churnops.jobs.score import ScoringRun, score
from churnops.jobs.score_spark_columns import SNAPSHOT_FILE, SNAPSHOT_ROW, model_columns, snapshot_position
from churnops.jobs.spark import spark_session
from churnops.paths import scores_path
from churnops.registry import LoadedModel
from churnops.snapshot_files import verify_cutoffs
from churnops.snapshots import DATA_DIR, SnapshotIntegrityError, read_metadata
from churnops.storage import publish_directory, staging_directory_for, write_json_atomically

log = logging.getLogger(__name__)

_SCORED_SCHEMA = f"customer_id string, score double, {SNAPSHOT_FILE} string, {SNAPSHOT_ROW} long"
_LIST_SCHEMA = (
    "customer_id string, cutoff date, score double, decision boolean, risk_decile tinyint, risk_band string, "
    "model_name string, model_version string"
)
_PARTITION = "_partition"
# Rows per Arrow batch handed to the scoring's pandas functions (Spark's default is 10,000). Each batch of the
# survival columns pays a fixed cost (grouping the booster's trees by bin for the batch's ranges, a numpy call per
# tree split): measured on a 592-tree booster, 1M rows cost 15 CPU s in batches of 10,000, about 10 s in batches of
# 100,000 (9 s in one call; benchmarks/score_batches.py). 100,000 rows of the model's columns are tens of MB.
ARROW_BATCH_ROWS = 100_000
_ARROW_BATCH = "spark.sql.execution.arrow.maxRecordsPerBatch"


def score_in_spark(
    settings: Settings,
    contract: DatasetContract,
    model: LoadedModel,
    snapshot_dir: Path,
    cutoff: dt.date,
    list_kind: str,
    run_id: str,
) -> ScoringRun:
    """Score, rank, band and publish one cutoff's list on Spark (see the module docstring); the session is the
    active one (spark-submit, a caller's) or one started, and stopped, for this call."""
    active = SparkSession.getActiveSession()
    spark = active or spark_session(settings, f"churnops-score-{contract.name}")
    try:
        _require_matching_pyspark(spark)
        with _arrow_batches(spark, ARROW_BATCH_ROWS):
            return _score_list(spark, settings, contract, model, snapshot_dir, cutoff, list_kind, run_id)
    finally:
        if active is None:
            spark.stop()


@contextlib.contextmanager
def _arrow_batches(spark: SparkSession, rows: int) -> Iterator[None]:
    """The session's Arrow batches of `rows` rows while the list is computed, then what they were (a caller's
    session is left as it was given)."""
    before = spark.conf.get(_ARROW_BATCH, None)
    spark.conf.set(_ARROW_BATCH, str(rows))
    try:
        yield
    finally:
        if before is None:
            spark.conf.unset(_ARROW_BATCH)
        else:
            spark.conf.set(_ARROW_BATCH, before)


def _require_matching_pyspark(spark: SparkSession) -> None:
    """pyspark's Python files must be the JVM's version. Airflow's Spark provider depends on `pyspark-client`, which
    installs its own (older) copy of them into the same `pyspark` folder; the lock keeps it out (pyproject.toml,
    `override-dependencies`), but an environment installed otherwise may have it. A mismatch fails `mapInPandas`
    with an obscure Py4J constructor error; name the fix instead."""
    import pyspark

    if pyspark.__version__ != spark.version:
        raise RuntimeError(
            f"pyspark's Python files are version {pyspark.__version__} but Spark is {spark.version} (pyspark-client "
            f"overwrote them): install from the lock (`make env`) or reinstall pyspark: "
            f"`uv pip install --reinstall --no-deps pyspark=={spark.version}`"
        )


def _score_list(
    spark: SparkSession,
    settings: Settings,
    contract: DatasetContract,
    model: LoadedModel,
    snapshot_dir: Path,
    cutoff: dt.date,
    list_kind: str,
    run_id: str,
) -> ScoringRun:
    metadata = read_metadata(snapshot_dir)
    if metadata.hash_scheme:  # the scoring cutoff's files, digested by the executors, before a row is scored
        verify_cutoffs(snapshot_dir, metadata, [cutoff.isoformat()], executor_digests(spark))
    features = (
        spark.read.parquet(str(snapshot_dir / DATA_DIR))
        .where(F.to_date(F.col(CUTOFF)) == F.lit(cutoff))
        .select(F.col(ENTITY_ID).cast("string").alias(ENTITY_ID), *model.schema.columns, *snapshot_position())
    )
    # Kept, because the model columns and the sort read it more than once: the model scores every row once.
    scored = features.mapInPandas(_scorer(model), _SCORED_SCHEMA).persist(StorageLevel.MEMORY_AND_DISK)
    extras = model_columns(spark, settings, contract, scored, snapshot_dir, cutoff)
    listed = scored if extras is None else scored.join(extras.frame, ENTITY_ID, "inner")
    ranked = (
        listed.drop(SNAPSHOT_FILE, SNAPSHOT_ROW)
        .orderBy(F.col("score").desc())
        .withColumn(_PARTITION, F.spark_partition_id())
        .persist(StorageLevel.MEMORY_AND_DISK)
    )
    try:
        counts = {row[_PARTITION]: row["count"] for row in ranked.groupBy(_PARTITION).count().collect()}
        list_size = sum(counts.values())
        _check_row_count(snapshot_dir, cutoff, list_size)
        offsets, higher_before = {}, 0
        for partition in sorted(counts):
            offsets[partition] = higher_before
            higher_before += counts[partition]
        scored.unpersist()  # the list reads `ranked` from here on
        if extras is not None:
            extras.release()
        added = [] if extras is None else [column.split(" ")[0] for column in extras.schema.split(", ")]
        banded = ranked.mapInPandas(
            _bander(offsets, list_size, cutoff, model, settings.scoring.risk_bands, added),
            _LIST_SCHEMA if extras is None else f"{_LIST_SCHEMA}, {extras.schema}",
        )
        path = scores_path(settings, contract.name, cutoff, list_kind)
        staging = staging_directory_for(path)
        banded.write.parquet(str(staging))
        publish_directory(staging, path)
        in_database = _store_list(settings, banded, contract.name, run_id, cutoff, list_kind, model, list_size)
    finally:
        scored.unpersist()
        ranked.unpersist()
        if extras is not None:
            extras.release()
    log.info("scored %s customers at %s with %s v%s on Spark -> %s", list_size, cutoff, model.name, model.version, path)
    return ScoringRun(
        path=path,
        rows=list_size,
        cutoff=cutoff,
        model_version=model.version,
        rows_in_database=in_database,
        list_date=cutoff,
        list_kind=list_kind,
    )


def _check_row_count(snapshot_dir: Path, cutoff: dt.date, list_size: int) -> None:
    recorded = read_metadata(snapshot_dir).rows_per_cutoff.get(cutoff.isoformat(), 0)
    if list_size == 0:
        raise ValueError(f"snapshot {snapshot_dir.name} has no rows at the scoring cutoff {cutoff}")
    if list_size != recorded:
        raise SnapshotIntegrityError(
            f"snapshot {snapshot_dir} was modified after it was written: cutoff {cutoff} was written with {recorded} "
            f"rows and Spark read {list_size}; rebuild it with `churnops features`"
        )


def _scorer(model: LoadedModel) -> Callable[[Iterator[pd.DataFrame]], Iterator[pd.DataFrame]]:
    def score_batches(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in batches:
            # One thread: each executor task is one core already.
            scores = model.predict_matrix(model.schema.encode_frame(batch), num_threads=1)
            if np.isnan(scores).any():
                missing = batch[ENTITY_ID].to_numpy()[np.isnan(scores)][:5].tolist()
                raise ValueError(f"the model gave no score (NaN) to customers {missing}; every customer needs one")
            yield pd.DataFrame(
                {
                    ENTITY_ID: batch[ENTITY_ID].to_numpy(),
                    "score": scores,
                    SNAPSHOT_FILE: batch[SNAPSHOT_FILE].to_numpy(),
                    SNAPSHOT_ROW: batch[SNAPSHOT_ROW].to_numpy(),
                }
            )

    return score_batches


def _bander(
    offsets: Mapping[int, int],
    list_size: int,
    cutoff: dt.date,
    model: LoadedModel,
    risk_bands: Mapping[str, float],
    added: list[str],
) -> Callable[[Iterator[pd.DataFrame]], Iterator[pd.DataFrame]]:
    def band_partition(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        # A partition's batches together: a customer's rank counts every higher score of its partition.
        rows = pd.concat(list(batches), ignore_index=True)
        if rows.empty:
            return
        scores = rows["score"].to_numpy(dtype=np.float64)
        higher = offsets[int(rows[_PARTITION].iloc[0])] + count_scoring_higher(scores)
        banded = build_score_frame(
            customer_ids=rows[ENTITY_ID].to_numpy(),
            scores=scores,
            cutoff=cutoff,
            threshold=model.threshold,
            model_name=model.name,
            model_version=model.version,
            bands=risk_bands,
            rank_in_list=(higher, list_size),
        )
        if added:  # the customers' value and survival columns
            banded = banded.merge(rows[[ENTITY_ID, *added]], on=ENTITY_ID, how="left", validate="one_to_one")
        yield banded

    return band_partition


def _store_list(
    settings: Settings,
    banded: DataFrame,
    dataset: str,
    run_id: str,
    cutoff: dt.date,
    list_kind: str,
    model: LoadedModel,
    list_size: int,
) -> int | None:
    """COPY every partition of the list from its executor into a staged table, then publish it as the list."""
    if settings.database_url is None:
        return None
    record = db.list_record(
        dataset=dataset,
        logical_date=cutoff,
        list_kind=list_kind,
        run_id=run_id,
        model_name=model.name,
        model_version=model.version,
        cutoff=cutoff,
    )
    with contextlib.closing(db.connect(settings)) as conn:
        db.migrate(conn)
        staged = db.stage_list(conn, record)
        try:
            banded.mapInPandas(_copier(settings, staged), "rows long").collect()
        except BaseException:
            db.abandon_staged_list(conn, staged)
            raise
        return db.publish_staged_list(conn, staged, list_size)


def _copier(settings: Settings, staged: db.StagedList) -> Callable[[Iterator[pd.DataFrame]], Iterator[pd.DataFrame]]:
    def copy_partition(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        rows = pd.concat(list(batches), ignore_index=True)
        if rows.empty:
            return
        with contextlib.closing(db.connect(settings, application_name="churnops-score-spark")) as conn:
            yield pd.DataFrame({"rows": [db.copy_staged_rows(conn, staged, rows)]})

    return copy_partition


def main(argv: list[str] | None = None) -> None:
    """spark-submit entry: score a dataset's run date (or a backtest cutoff) on Spark."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--run-date", type=dt.date.fromisoformat)
    parser.add_argument("--cutoff", type=dt.date.fromisoformat)
    parser.add_argument("--list-kind", default="regular", choices=("regular", "backfill"))
    parser.add_argument("--run-id", default="manual")
    parser.add_argument("--result-json", type=Path, help="where to write the run's summary (the DAG task reads it)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    settings = Settings()
    spark = spark_session(settings, f"churnops-score-{args.dataset}")
    try:
        run = score(
            settings,
            load_contract(args.dataset, settings),
            run_id=args.run_id,
            run_date=args.run_date,
            cutoff=args.cutoff,
            list_kind=args.list_kind,
            engine="spark",
        )
    finally:
        spark.stop()
    log.info("list %s: %s rows in the database", run.path, run.rows_in_database)
    if args.result_json is not None:
        write_json_atomically(dataclasses.asdict(run), args.result_json)


def read_result(path: Path) -> ScoringRun:
    """The summary `main` wrote with `--result-json`."""
    raw = json.loads(path.read_text())
    dates = {name: dt.date.fromisoformat(raw[name]) for name in ("cutoff", "list_date") if raw.get(name)}
    return ScoringRun(**{**raw, **dates, "path": Path(raw["path"])})


if __name__ == "__main__":
    main()
