"""The PySpark feature job: point-in-time features and labels per customer and cutoff, written as a snapshot.

For each cutoff t, every feature uses only events strictly before t; the label looks only at [t, t + H). The job
reads the validated bronze layer (`jobs/ingest.py`, re-run first when the source file changed), buckets events per
customer and day (its one pass over the log), joins the day buckets to the handful of cutoffs, and evaluates every
`FeatureSpec.expression` from `churnops.features` with `F.expr` - the same SQL the DuckDB reference runs. The work
grows with customer-days x cutoffs rather than events x cutoffs. Entity-level contracts (no event log) give one row
per customer at `as_of` with the table's own label.

Run it through the CLI (`churnops features`), from Airflow (spark-submit of this file), or directly:
`spark-submit jobs/features.py --dataset synthetic`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from churnops.config import Settings
from churnops.dataset import DatasetContract, bronze_dir, load_contract
from churnops.features import (
    CUTOFF,
    ENTITY_ID,
    FLOAT_DECIMALS,
    LABEL,
    LABEL_AVAILABLE,
    FeatureSpec,
    entity_feature_names,
    event_feature_specs,
    label_expression,
    model_feature_columns,
    type_column,
)
from churnops.snapshots import (
    DATA_DIR,
    SnapshotMetadata,
    dataset_dir,
    describe,
    file_fingerprint,
    point_latest,
    write_metadata,
)
from churnops.storage import publish_directory, staging_directory_for

log = logging.getLogger(__name__)

DAY = "event_day"


def _read(spark: SparkSession, path: Path, fmt: str) -> DataFrame:
    if not path.exists():
        raise FileNotFoundError(f"source {path} does not exist; for generated data run `churnops generate` first")
    if fmt == "csv":
        return spark.read.csv(str(path), header=True, inferSchema=True)
    return spark.read.parquet(str(path))


def read_events(spark: SparkSession, contract: DatasetContract, settings: Settings) -> DataFrame:
    """The validated (bronze) event log: customer_id, event_time, event_day, event_type, amount.

    Ingests the contract's source first when the bronze layer is missing or older than the source file.
    """
    from jobs.ingest import EVENTS_FILE, ensure_bronze

    ensure_bronze(contract, settings)
    return spark.read.parquet(str(bronze_dir(settings, contract.name) / EVENTS_FILE))


def read_entities(spark: SparkSession, contract: DatasetContract) -> DataFrame | None:
    source = contract.entities
    if source is None:
        return None
    raw = _read(spark, contract.resolve(source.path), source.format)
    columns = [F.col(source.key).cast("string").alias(ENTITY_ID)]
    if source.signup:
        columns.append(F.col(source.signup).cast("date").alias("signup_date"))
    columns += [F.col(c).cast("string").alias(c) for c in source.categorical]
    columns += [F.col(c).cast("double").alias(c) for c in source.numeric]
    if contract.label.kind == "column":
        columns.append(F.col(contract.label.column).cast("int").alias(LABEL))
    return raw.select(*columns)


def bucket_by_day(events: DataFrame, contract: DatasetContract) -> DataFrame:
    """One row per customer and event day with the columns every feature expression reads (see churnops.features)."""
    assert contract.events is not None
    label_type = contract.label.event_type
    aggregates = [
        F.count(F.lit(1)).alias("n"),
        F.sum("amount").alias("amount_sum"),
        F.sum(F.col("amount") * F.col("amount")).alias("amount_sumsq"),
        F.max("amount").alias("amount_max"),
        (F.sum(F.when(F.col("event_type") == label_type, 1).otherwise(0)) if label_type else F.count(F.lit(1))).alias(
            "n_label"
        ),
    ]
    aggregates += [
        F.sum(F.when(F.col("event_type") == t, 1).otherwise(0)).alias(type_column(t))
        for t in contract.events.counted_event_types
    ]
    by_customer = Window.partitionBy(ENTITY_ID).orderBy("day_index")
    return (
        events.groupBy(ENTITY_ID, DAY)
        .agg(*aggregates)
        .withColumn("day_index", F.unix_date(DAY))
        .withColumn("gap_days", F.col("day_index") - F.lag("day_index").over(by_customer))
    )


def build_features(
    daily: DataFrame,
    entities: DataFrame | None,
    contract: DatasetContract,
    cutoffs: list[dt.date],
) -> DataFrame:
    """Features and labels for every (customer, cutoff) in the population, from day-bucketed events."""
    spark = daily.sparkSession
    horizon = contract.label.horizon_days
    cutoff_frame = spark.createDataFrame([(c,) for c in cutoffs], f"{CUTOFF} date")
    joined = daily.join(F.broadcast(cutoff_frame), F.col(DAY) < F.date_add(F.col(CUTOFF), horizon)).withColumn(
        "days_before", F.unix_date(F.col(CUTOFF)) - F.col("day_index")
    )
    specs = event_feature_specs(contract)
    features = joined.groupBy(ENTITY_ID, CUTOFF).agg(
        *[_rounded(F.expr(s.expression), s).alias(s.name) for s in specs],
        F.expr(label_expression(contract)).alias("_label"),
    )

    # Population: seen before the cutoff (and recently active, if the contract asks).
    features = features.where(F.col("event_count_all") > 0)
    if contract.population.active_within_days is not None:
        features = features.where(F.col("days_since_last_event") <= contract.population.active_within_days)

    label_available = F.date_add(F.col(CUTOFF), horizon) <= F.lit(contract.cutoffs.as_of)
    features = (
        features.withColumn(LABEL_AVAILABLE, label_available)
        .withColumn(LABEL, F.when(label_available, F.col("_label").cast("int")))
        .drop("_label")
    )
    if entities is not None:
        features = _with_entity_attributes(features.join(entities, ENTITY_ID, "left"), contract)
    numeric, categorical = model_feature_columns(contract)
    return features.select(ENTITY_ID, CUTOFF, *numeric, *categorical, LABEL, LABEL_AVAILABLE)


def build_entity_features(entities: DataFrame, contract: DatasetContract) -> DataFrame:
    """Entity-level data: one row per customer at the export date `as_of`, labelled by the table's own column."""
    rows = entities.withColumn(CUTOFF, F.lit(contract.cutoffs.as_of).cast("date"))
    rows = _with_entity_attributes(rows, contract).withColumn(LABEL_AVAILABLE, F.col(LABEL).isNotNull())
    numeric, categorical = model_feature_columns(contract)
    return rows.select(ENTITY_ID, CUTOFF, *numeric, *categorical, LABEL, LABEL_AVAILABLE)


def _with_entity_attributes(rows: DataFrame, contract: DatasetContract) -> DataFrame:
    numeric_attrs, _ = entity_feature_names(contract)
    if "days_since_signup" in numeric_attrs:
        # Customers who signed up after the cutoff did not exist yet: they are not in that cutoff's population.
        rows = rows.withColumn(
            "days_since_signup", F.datediff(F.col(CUTOFF), F.col("signup_date")).cast("double")
        ).where(F.col("days_since_signup").isNull() | (F.col("days_since_signup") >= 0))
    return rows


def _rounded(expression: Column, spec: FeatureSpec) -> Column:
    return F.round(expression, FLOAT_DECIMALS) if spec.kind == "numeric" else expression


def compute_feature_table(
    spark: SparkSession, contract: DatasetContract, settings: Settings, cutoffs: list[dt.date]
) -> DataFrame:
    """The lazy Spark frame of every (customer, cutoff) row for the given cutoffs."""
    entities = read_entities(spark, contract)
    if contract.events is None:
        assert entities is not None  # the contract validator guarantees one source
        return build_entity_features(entities, contract)
    daily = bucket_by_day(read_events(spark, contract, settings), contract)
    return build_features(daily, entities, contract, cutoffs)


@dataclass(frozen=True)
class FeatureRun:
    snapshot_dir: Path
    metadata: SnapshotMetadata


def build_feature_snapshot(spark: SparkSession, contract: DatasetContract, settings: Settings) -> FeatureRun:
    """Compute features for every cutoff of the contract's plan and publish them as a hashed snapshot."""
    import pandas as pd

    from jobs.ingest import read_report

    plan = contract.plan()
    features = compute_feature_table(spark, contract, settings, sorted(set(plan.all)))

    target_root = dataset_dir(settings, contract.name)
    staging = staging_directory_for(target_root / "incoming")
    try:
        features.write.mode("overwrite").parquet(str(staging / DATA_DIR))
        frame = pd.read_parquet(staging / DATA_DIR)
        frame[CUTOFF] = pd.to_datetime(frame[CUTOFF])
        numeric, categorical = model_feature_columns(contract)
        sources, ingestion = {}, {}
        if contract.events is not None:
            sources["events"] = file_fingerprint(contract.resolve(contract.events.path))
            report = read_report(settings, contract.name)
            ingestion = (
                {}
                if report is None
                else {
                    "rows_read": report.rows_read,
                    "rows_accepted": report.rows_accepted,
                    "rows_quarantined": report.rows_quarantined,
                    "quarantined_by_reason": report.quarantined_by_reason,
                }
            )
        if contract.entities is not None:
            sources["entities"] = file_fingerprint(contract.resolve(contract.entities.path))
        metadata = describe(
            frame,
            contract.name,
            {"train": list(plan.train), "out_of_time": [plan.out_of_time], "scoring": [plan.scoring]},
            numeric + categorical,
            sources,
            validation=contract.validation,
            ingestion=ingestion,
        )
        write_metadata(staging, metadata)
        final = target_root / metadata.snapshot_id
        if final.exists():
            # Same inputs, same hash: the snapshot is already published; re-running is a no-op.
            shutil.rmtree(staging)
        else:
            publish_directory(staging, final)
        point_latest(settings, metadata)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    log.info("feature snapshot %s: %s rows", final, len(frame))
    return FeatureRun(snapshot_dir=final, metadata=metadata)


def main(argv: list[str] | None = None) -> None:
    """Entry point for `spark-submit jobs/features.py --dataset NAME`."""
    from jobs.spark import spark_session

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default=None, help="built-in dataset name or contract YAML path")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = Settings()
    contract = load_contract(args.dataset or settings.dataset, settings)
    spark = spark_session(settings, f"churnops-features-{contract.name}")
    try:
        run = build_feature_snapshot(spark, contract, settings)
    finally:
        spark.stop()
    print(f"feature snapshot {run.metadata.snapshot_id} at {run.snapshot_dir}")  # noqa: T201


if __name__ == "__main__":
    main()
