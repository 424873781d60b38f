"""The Spark side of the feature job: point-in-time features and labels per customer and cutoff, as lazy frames.

For each cutoff t, every feature uses only events strictly before t; the label looks only at [t, t + H). The
events are bucketed per customer and day; then each group of whole customers goes, as Arrow, to the feature kernel
(`jobs/feature_kernel.py`), which computes every `FeatureSpec` of `churnops.features` for every cutoff from the
customer's day buckets sorted once: O(days + cutoffs) per customer, where joining each day bucket to every cutoff
it informs made it O(days x cutoffs). The SQL definitions themselves are evaluated as written by the DuckDB
reference and by the leakage probe below (over day buckets joined to cutoffs, `join_cutoffs`).

The events are shuffled once, by a hash bucket of the customer; the day buckets and the kernel's groups are both
satisfied by that partitioning, so there is no further exchange.
"""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path
from typing import Any

from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql.types import StringType

from churnops.bronze import BronzeManifest, event_part_paths
from churnops.config import Settings
from churnops.dataset import DatasetContract, LabelDefinition
from churnops.features import (
    CUTOFF,
    ENTITY_ID,
    FLOAT_DECIMALS,
    LABEL,
    LABEL_AVAILABLE,
    FeatureSpec,
    entity_feature_names,
    event_feature_specs,
    model_feature_columns,
    type_column,
)
from churnops.jobs.feature_kernel import LABEL_VALUE, group_function, kernel_plan, output_schema

log = logging.getLogger(__name__)

DAY = "event_day"
# Customers are hashed into this many buckets: the kernel's groups (a few thousand day rows each at 1M events).
BUCKET = "_customer_bucket"
CUSTOMER_BUCKETS = 64
# The source-timestamp leakage probe looks at about one customer in this many.
PROBE_SAMPLE_ONE_IN = 20


def _read(spark: SparkSession, path: Path, fmt: str) -> DataFrame:
    if not path.exists():
        raise FileNotFoundError(f"source {path} does not exist; for generated data run `churnops generate` first")
    if fmt == "csv":
        return spark.read.csv(str(path), header=True, inferSchema=True)
    return spark.read.parquet(str(path))


# The Spark type of every bronze event part (churnops.bronze.event_schema: naive microsecond timestamps).
BRONZE_EVENTS_DDL = "customer_id string, event_time timestamp_ntz, event_day date, event_type string, amount double"


def read_events(
    spark: SparkSession,
    contract: DatasetContract,
    settings: Settings,
    manifest: BronzeManifest | None = None,
    last_day: dt.date | None = None,
) -> DataFrame:
    """The validated (bronze) event log: customer_id, event_time, event_day, event_type, amount; only the event
    days up to `last_day` when given.

    Reads exactly the part files `manifest` lists, never a folder: a crashed ingestion's leftovers stay invisible.
    Without a manifest, first ingests whatever landed since the last run (`churnops.jobs.ingest.ensure_bronze`).
    """
    if manifest is None:
        from churnops.jobs.ingest import ensure_bronze

        manifest = ensure_bronze(contract, settings)
    paths = [str(path) for path in event_part_paths(settings, contract.name, manifest, last_day=last_day)]
    if not paths:
        return spark.createDataFrame([], BRONZE_EVENTS_DDL)
    return spark.read.schema(BRONZE_EVENTS_DDL).parquet(*paths)


def read_entities(spark: SparkSession, contract: DatasetContract) -> DataFrame | None:
    """The entity table in the platform's columns and types. Text cells holding nothing but blanks are missing
    values; the source check (`churnops.jobs.source_check`) has already refused values that do not parse."""
    source = contract.entities
    if source is None:
        return None
    return read_entity_table(spark, contract, contract.resolve(source.path), source.format)


def read_entity_table(
    spark: SparkSession, contract: DatasetContract, path: Path, fmt: str, labelled: bool = True
) -> DataFrame:
    """An entity table in the platform's names and types: the one place entity columns are read and typed (the
    feature job, and `churnops score --input` on a new file). An unlabelled table (a file to score) gets an empty
    label column."""
    source = contract.entities
    assert source is not None
    raw = _read(spark, path, fmt)
    if not labelled and contract.label.column:
        raw = raw.withColumn(contract.label.column, F.lit(None).cast("string"))
    columns = [F.col(source.key).cast("string").alias(ENTITY_ID)]
    if source.signup:
        columns.append(_blank_as_null(raw, source.signup).cast("date").alias("signup_date"))
    # A blank category is missing, not a category of its own; other values stay as written (the API looks them up so).
    columns += [_blank_as_null(raw, c, trim=False).cast("string").alias(c) for c in source.categorical]
    columns += [_blank_as_null(raw, c).cast("double").alias(c) for c in source.numeric]
    if contract.label.kind == "column":
        columns.append(_label_classes(raw, contract.label).alias(LABEL))
    return raw.select(*columns)


def _blank_as_null(raw: DataFrame, column: str, trim: bool = True) -> Column:
    """A text column with blank and whitespace-only cells as nulls (a CSV's " " in a numeric column, which the CSV
    reader keeps as text and a cast would refuse); the other cells trimmed unless `trim` is False."""
    if not isinstance(raw.schema[column].dataType, StringType):
        return F.col(column)
    trimmed = F.trim(F.col(column))
    return F.when(trimmed != "", trimmed if trim else F.col(column))


def _label_classes(raw: DataFrame, label: LabelDefinition) -> Column:
    """The label column as 0/1 (null for a blank cell), by the rule of `LabelDefinition.class_of`."""
    assert label.column is not None
    cell = _blank_as_null(raw, label.column)
    if label.positive is None:
        return cell.cast("double").cast("int")
    text = F.trim(cell.cast("string"))
    classes = F.when(cell.isNull(), F.lit(None)).when(text == label.positive.strip(), F.lit(1))
    if label.negative is None:
        return classes.otherwise(F.lit(0))
    # A value that is neither class never gets here: the source check refuses it before Spark starts.
    return classes.when(text == label.negative.strip(), F.lit(0)).cast("int")


def bucket_by_day(events: DataFrame, contract: DatasetContract) -> DataFrame:
    """One row per customer and event day with the per-day columns the feature expressions read (see
    churnops.features; `join_cutoffs` adds the gap to the previous event day).

    The result carries the customer's hash bucket and is hash-partitioned by it: `build_features` hands each
    bucket (whole customers) to the feature kernel without another shuffle.
    """
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
    return (
        # The job's one shuffle: Spark sees that grouping by (bucket, customer, day) and the kernel's grouping by
        # bucket are both satisfied by this partitioning and adds no exchange.
        events.withColumn(BUCKET, F.pmod(F.xxhash64(ENTITY_ID), F.lit(CUSTOMER_BUCKETS)))
        .repartition(BUCKET)
        .groupBy(BUCKET, ENTITY_ID, DAY)
        .agg(*aggregates)
        .withColumn("day_index", F.unix_date(DAY))
    )


def _population_bits(cutoffs: list[dt.date], contract: DatasetContract) -> Column:
    """Per day bucket: bit i set when an event that day puts the customer in cutoff i's population.

    The population at cutoff t is everyone with an event before t (and, if the contract says so, within the
    `active_within_days` before t): exactly the rows the population filter below keeps.
    """
    active_within = contract.population.active_within_days
    bits: Column = F.lit(0).cast("long")
    for i, cutoff in enumerate(cutoffs):
        cutoff_index = (cutoff - dt.date(1970, 1, 1)).days
        in_population = F.col("day_index") < cutoff_index
        if active_within is not None:
            in_population &= F.col("day_index") >= cutoff_index - active_within
        bits = bits.bitwiseOR(F.when(in_population, F.lit(1 << i).cast("long")).otherwise(F.lit(0).cast("long")))
    return bits


def join_cutoffs(daily: DataFrame, contract: DatasetContract, cutoffs: list[dt.date]) -> DataFrame:
    """Each day bucket joined to every cutoff it can inform: its features (before the cutoff) or its label
    (within the horizon after it), for the cutoffs whose population the customer belongs to; with `days_before`."""
    if len(cutoffs) > 62:
        raise ValueError(f"{len(cutoffs)} cutoffs in one run: the population bit mask holds at most 62")
    cutoff_frame = daily.sparkSession.createDataFrame(
        [(c, 1 << i) for i, c in enumerate(cutoffs)], f"{CUTOFF} date, cutoff_bit long"
    )
    # Both per-customer windows in one select, so that Spark evaluates them in one pass over one sort: the gap to
    # the customer's previous event day, and which cutoffs the customer belongs to over their whole history.
    by_day = Window.partitionBy(BUCKET, ENTITY_ID).orderBy("day_index")
    whole_history = by_day.rowsBetween(Window.unboundedPreceding, Window.unboundedFollowing)
    daily = daily.select(
        "*",
        (F.col("day_index") - F.lag("day_index").over(by_day)).alias("gap_days"),
        F.bit_or(_population_bits(cutoffs, contract)).over(whole_history).alias("population_bits"),
    )
    return daily.join(
        F.broadcast(cutoff_frame),
        (F.col(DAY) < F.date_add(F.col(CUTOFF), contract.label.horizon_days))
        & (F.col("population_bits").bitwiseAND(F.col("cutoff_bit")) != 0),
    ).withColumn("days_before", F.unix_date(F.col(CUTOFF)) - F.col("day_index"))


def features_reading_past_the_cutoff(
    daily: DataFrame,
    contract: DatasetContract,
    cutoffs: list[dt.date],
    specs: list[FeatureSpec],
    sample_one_in: int = PROBE_SAMPLE_ONE_IN,
) -> dict[str, int]:
    """Leakage probe: for each feature, on how many sampled (customer, cutoff) rows its value changes when every
    source row dated at or after the cutoff is removed. Any count above 0 means the feature reads the future.

    The join hands each aggregate the label window too (days_before <= 0), so a feature definition that forgets its
    lower bound would silently read it; this probe evaluates every definition both ways on a hash sample of
    customers (one in `sample_one_in`) and compares, independently of how the definition is written. It checks
    the definitions; the kernel that computes them in the job is checked for the same property by the tests
    (tests/features/test_feature_kernel.py, test_spark_features.py).
    """
    sample = daily.where(F.pmod(F.xxhash64(ENTITY_ID), F.lit(sample_one_in)) == 0)
    joined = join_cutoffs(sample, contract, cutoffs)

    def evaluated(rows: DataFrame, suffix: str) -> DataFrame:
        return rows.groupBy(ENTITY_ID, CUTOFF).agg(
            *[_rounded(F.expr(s.expression), s).alias(f"{s.name}{suffix}") for s in specs]
        )

    # Only (customer, cutoff) pairs with history before the cutoff: the others are outside every population.
    both = evaluated(joined, "").join(evaluated(joined.where(F.col("days_before") >= 1), "_past"), [ENTITY_ID, CUTOFF])
    differs = []
    for spec in specs:
        value, past = F.col(spec.name), F.col(f"{spec.name}_past")
        changed = ~value.eqNullSafe(past)
        if spec.kind == "numeric":
            # Sums over the same rows in another order may differ in the last bits.
            changed = (value.isNull() != past.isNull()) | (
                F.abs(value - past) > 1e-6 * F.greatest(F.lit(1.0), F.abs(past))
            )
        differs.append(F.sum(F.when(changed, 1).otherwise(0)).alias(spec.name))
    counts = both.agg(F.count(F.lit(1)).alias("_rows"), *differs).first()
    assert counts is not None
    return {spec.name: int(counts[spec.name] or 0) for spec in specs} | {"_rows_compared": int(counts["_rows"])}


def build_features(
    daily: DataFrame,
    entities: DataFrame | None,
    contract: DatasetContract,
    cutoffs: list[dt.date],
    observed_until: dt.date,
) -> DataFrame:
    """Features and labels for every (customer, cutoff) in the population, from day-bucketed events; a label is
    available only when its whole horizon lies before `observed_until`."""
    horizon = contract.label.horizon_days
    assert contract.events is not None and horizon is not None
    numeric, categorical = model_feature_columns(contract)
    specs = [s for s in event_feature_specs(contract) if s.name in {*numeric, *categorical}]
    plan = kernel_plan(
        specs,
        [(c - dt.date(1970, 1, 1)).days for c in cutoffs],
        horizon,
        contract.population.active_within_days,
        event_types=tuple(contract.events.counted_event_types),
        churn_label=contract.label.kind == "churn",
    )
    kernel_input = ["day_index", "n", "amount_sum", "amount_sumsq", "amount_max", "n_label"]
    kernel_input += [type_column(t) for t in contract.events.counted_event_types]
    features = (
        daily.select(BUCKET, ENTITY_ID, *kernel_input)
        .groupBy(BUCKET)
        .applyInArrow(group_function(plan), output_schema(plan))
        .select(ENTITY_ID, CUTOFF, *[_rounded(F.col(s.name), s).alias(s.name) for s in specs], LABEL_VALUE)
    )

    # Population: seen before the cutoff (and recently active, if the contract asks). The kernel already emits
    # only those rows; the filter states the rule and keeps the result right if it ever did not.
    features = features.where(F.col("event_count_all") > 0)
    if contract.population.active_within_days is not None:
        features = features.where(F.col("days_since_last_event") <= contract.population.active_within_days)

    label_available = F.date_add(F.col(CUTOFF), horizon) <= F.lit(observed_until)
    features = (
        features.withColumn(LABEL_AVAILABLE, label_available)
        .withColumn(LABEL, F.when(label_available, F.col(LABEL_VALUE).cast("int")))
        .drop(LABEL_VALUE)
    )
    if entities is not None:
        features = _with_entity_attributes(features.join(entities, ENTITY_ID, "left"), contract)
    return features.select(ENTITY_ID, CUTOFF, *numeric, *categorical, LABEL, LABEL_AVAILABLE)


def build_entity_features(entities: DataFrame, contract: DatasetContract, day: dt.date) -> DataFrame:
    """Entity-level data: one row per customer, dated `day` (the run date), labelled by the table's own column."""
    rows = entities.withColumn(CUTOFF, F.lit(day).cast("date"))
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
    spark: SparkSession,
    contract: DatasetContract,
    settings: Settings,
    cutoffs: list[dt.date],
    observed_until: dt.date,
    manifest: BronzeManifest | None = None,
    last_day: dt.date | None = None,
) -> DataFrame:
    """The lazy Spark frame of every (customer, cutoff) row; labels count only when their horizon ends by
    `observed_until`. Entity-level data gives one row per customer, dated `observed_until` (the run date).
    Events: `read_events` (the parts `manifest` lists, of the days up to `last_day` when given: a caller that
    needs fewer cutoffs than the data covers passes the last day their horizons reach)."""
    entities = read_entities(spark, contract)
    if contract.events is None:
        assert entities is not None  # the contract validator guarantees one source
        return build_entity_features(entities, contract, observed_until)
    daily = bucket_by_day(read_events(spark, contract, settings, manifest, last_day), contract)
    return build_features(daily, entities, contract, cutoffs, observed_until)


class FeatureLeakageError(ValueError):
    """A feature definition reads source rows dated at or after the cutoff."""


def probe_source_timestamps(
    spark: SparkSession,
    contract: DatasetContract,
    settings: Settings,
    cutoffs: list[dt.date],
    manifest: BronzeManifest | None = None,
) -> dict[str, Any]:
    """Run `features_reading_past_the_cutoff` on the contract's event features; fail on a finding the contract
    does not allow. Returns what the snapshot metadata records about the probe."""
    daily = bucket_by_day(read_events(spark, contract, settings, manifest), contract)
    counts = features_reading_past_the_cutoff(daily, contract, cutoffs, event_feature_specs(contract))
    compared = counts.pop("_rows_compared")
    findings = {name: n for name, n in counts.items() if n > 0}
    refused = sorted(set(findings) - set(contract.leakage.allowed_features))
    if refused:
        raise FeatureLeakageError(
            "leakage: "
            + ", ".join(f"feature {name!r} changes on {findings[name]} of {compared} sampled rows" for name in refused)
            + " when the source rows at or after the cutoff are removed: its definition reads the future. Fix it in "
            "churnops/features.py, or list it under `leakage.allowed_features` in the dataset contract if that is "
            "intended"
        )
    return {
        "source_timestamps": {
            "rows_compared": compared,
            "sample": f"one customer in {PROBE_SAMPLE_ONE_IN}",
            "features_reading_past_cutoff": findings,
        }
    }
