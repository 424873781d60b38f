"""The PySpark feature job: point-in-time features and labels per customer and cutoff, written as a snapshot.

For each cutoff t, every feature uses only events strictly before t; the label looks only at [t, t + H). Events
are first bucketed per customer and day (the job's one pass over the raw log), then joined to the handful of
cutoffs, so the work grows with customer-days rather than events x cutoffs.

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

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from churnops.config import Settings
from churnops.dataset import DatasetContract, load_contract
from churnops.features import (
    CUTOFF,
    ENTITY_ID,
    LABEL,
    LABEL_AVAILABLE,
    FeatureSpec,
    entity_feature_names,
    event_feature_specs,
    model_feature_columns,
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


def read_events(spark: SparkSession, contract: DatasetContract) -> DataFrame:
    """The event log in the platform's column names: customer_id, event_time, event_type, amount."""
    source = contract.events
    raw = _read(spark, contract.resolve(source.path), source.format)
    event_type = F.col(source.event_type).cast("string") if source.event_type else F.lit(None).cast("string")
    return raw.select(
        F.col(source.entity_key).cast("string").alias(ENTITY_ID),
        F.col(source.timestamp).cast("timestamp").alias("event_time"),
        event_type.alias("event_type"),
        F.col(source.amount).cast("double").alias("amount"),
    )


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
    return raw.select(*columns)


def bucket_by_day(events: DataFrame, contract: DatasetContract) -> DataFrame:
    """One row per customer and day with the sufficient statistics every feature needs."""
    aggregates = [
        F.count(F.lit(1)).alias("n"),
        F.sum("amount").alias("amount_sum"),
        F.sum(F.col("amount") * F.col("amount")).alias("amount_sumsq"),
        F.max("amount").alias("amount_max"),
    ]
    aggregates += [
        F.sum(F.when(F.col("event_type") == t, 1).otherwise(0)).alias(f"n_type_{t}")
        for t in contract.events.counted_event_types
    ]
    return events.groupBy(ENTITY_ID, F.to_date("event_time").alias(DAY)).agg(*aggregates)


def _in_window(window_days: int | None) -> Column:
    before = F.col("days_before") >= 1  # strictly before the cutoff: the cutoff day itself is the label's
    return before if window_days is None else before & (F.col("days_before") <= window_days)


def _aggregate(spec: FeatureSpec) -> Column:
    inside = _in_window(spec.window_days)
    count = F.sum(F.when(inside, F.col("n")).otherwise(0))
    total = F.sum(F.when(inside, F.col("amount_sum")).otherwise(0.0))
    match spec.aggregation:
        case "count":
            expr = count
        case "sum":
            expr = total
        case "mean":
            expr = F.when(count > 0, total / count)
        case "max":
            expr = F.max(F.when(inside, F.col("amount_max")))
        case "std":
            sumsq = F.sum(F.when(inside, F.col("amount_sumsq")).otherwise(0.0))
            variance = (sumsq - total * total / count) / (count - 1)
            expr = F.when(count > 1, F.sqrt(F.greatest(variance, F.lit(0.0))))
        case "active_days":
            expr = F.sum(F.when(inside, 1).otherwise(0))
        case "type_count":
            expr = F.sum(F.when(inside, F.col(f"n_type_{spec.event_type}")).otherwise(0))
        case "recency":
            expr = F.min(F.when(inside, F.col("days_before")))
        case "tenure":
            expr = F.max(F.when(inside, F.col("days_before")))
        case "trend":
            window = spec.window_days or 30
            recent = F.sum(F.when(_in_window(window), F.col("n")).otherwise(0))
            earlier = F.sum(
                F.when((F.col("days_before") > window) & (F.col("days_before") <= 2 * window), F.col("n")).otherwise(0)
            )
            expr = (recent + 1.0) / (earlier + 1.0)
    return expr.cast("double").alias(spec.name)


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
        "days_before", F.datediff(F.col(CUTOFF), F.col(DAY))
    )
    specs = event_feature_specs(contract)
    after = F.sum(F.when(F.col("days_before") <= 0, F.col("n")).otherwise(0))
    features = joined.groupBy(ENTITY_ID, CUTOFF).agg(*[_aggregate(s) for s in specs], after.alias("_events_after"))

    # Population: seen before the cutoff (and recently active, if the contract asks).
    features = features.where(F.col("event_count_all") > 0)
    if contract.population.active_within_days is not None:
        features = features.where(F.col("days_since_last_event") <= contract.population.active_within_days)

    as_of = contract.cutoffs.as_of
    label_available = F.date_add(F.col(CUTOFF), horizon) <= F.lit(as_of)
    features = features.withColumn(LABEL_AVAILABLE, label_available).withColumn(
        LABEL, F.when(label_available, (F.col("_events_after") == 0).cast("int"))
    ).drop("_events_after")

    numeric_attrs, categorical_attrs = entity_feature_names(contract)
    if entities is not None:
        features = features.join(entities, ENTITY_ID, "left")
        if "days_since_signup" in numeric_attrs:
            features = features.withColumn(
                "days_since_signup", F.datediff(F.col(CUTOFF), F.col("signup_date")).cast("double")
            ).where(F.col("days_since_signup").isNull() | (F.col("days_since_signup") >= 0))
    numeric, categorical = model_feature_columns(contract)
    return features.select(ENTITY_ID, CUTOFF, *numeric, *categorical, LABEL, LABEL_AVAILABLE)


@dataclass(frozen=True)
class FeatureRun:
    snapshot_dir: Path
    metadata: SnapshotMetadata


def build_feature_snapshot(spark: SparkSession, contract: DatasetContract, settings: Settings) -> FeatureRun:
    """Compute features for every cutoff of the contract's plan and publish them as a hashed snapshot."""
    import pandas as pd

    plan = contract.plan()
    events = read_events(spark, contract)
    entities = read_entities(spark, contract)
    daily = bucket_by_day(events, contract)
    features = build_features(daily, entities, contract, list(plan.all))

    target_root = dataset_dir(settings, contract.name)
    staging = staging_directory_for(target_root / "incoming")
    try:
        features.write.mode("overwrite").parquet(str(staging / DATA_DIR))
        frame = pd.read_parquet(staging / DATA_DIR)
        frame[CUTOFF] = pd.to_datetime(frame[CUTOFF])
        numeric, categorical = model_feature_columns(contract)
        sources = {"events": file_fingerprint(contract.resolve(contract.events.path))}
        if contract.entities is not None:
            sources["entities"] = file_fingerprint(contract.resolve(contract.entities.path))
        metadata = describe(
            frame,
            contract.name,
            {"train": list(plan.train), "out_of_time": [plan.out_of_time], "scoring": [plan.scoring]},
            numeric + categorical,
            sources,
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
