"""The value and survival columns of a Spark list (`churnops.jobs.score_spark`), computed on the executors with the
pandas path's own functions, so that the driver never holds the list or the purchase history.

Value (`churnops.jobs.value.pipeline.add_value_columns` on pandas):

1. The bronze purchases before the cutoff are grouped per customer (hash partitions) and each partition is
   summarised by `customer_summaries`: each customer's row reads only their own purchases.
2. The BTYD fit reads the whole population: the distinct (x, t_x, T) with their counts (a `groupBy`, bounded by the
   history's length in days rather than by the customers), the mean T as an exact sum (`churnops.jobs.value.exact_sum`:
   a handful of integers per partition) and the median spend (`percentile`, on an executor). Each Gamma-Gamma fit
   runs in one task over that basis's buyers (two numbers each), with the pandas path's exact-sum likelihood: one
   Spark job, where a job per evaluation of the optimizer cost about two hundred. The fit (`fit_btyd_on`) is then
   the pandas path's, number for number.
3. Each partition of summaries is predicted by the value champion (`inputs_from_summaries`, `predict_at`), its
   expected saved value computed per row (`expected_saved_value`), and the campaign ranked by a global sort with
   the pandas path's order: expected saved value descending, then the list's order (score descending, then the
   snapshot's order: its files by path, rows in file order). Ranks are partition offsets plus positions, as the
   score's deciles are; the budget cut is `within_budget`.

Survival (`churnops.jobs.survival.scoring.with_survival_columns`): the cutoff's snapshot rows, predicted batch by
batch by `survival_predictions`.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from pyspark import StorageLevel, TaskContext
from pyspark.broadcast import Broadcast
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from churnops.bronze import AMOUNT, EVENT_DAY, EVENT_TYPE, committed_manifest
from churnops.config import Settings
from churnops.dataset import DatasetContract
from churnops.features import CUTOFF, ENTITY_ID
from churnops.jobs.baselines import RFM
from churnops.jobs.feature_frames import read_events
from churnops.jobs.survival.scoring import (
    customers_without_survival_rows,
    list_survival_champion,
    survival_predictions,
)
from churnops.jobs.value.btyd import GammaGammaParams, fit_gamma_gamma_by
from churnops.jobs.value.campaign import contacts_allowed, expected_saved_value, within_budget
from churnops.jobs.value.exact_sum import PARTS_SCHEMA, exact_sum_parts, total_of_parts
from churnops.jobs.value.features import (
    RECENT_PURCHASE_FEATURES,
    SPEND_BASES,
    BTYDFit,
    BTYDPopulation,
    SpendBasis,
    SpendLikelihood,
    customer_summaries,
    fit_btyd_on,
    inputs_from_summaries,
    spend_likelihood,
    usable_spend,
)
from churnops.jobs.value.history import AGE_WEEKS, FREQUENCY, HISTORY_COLUMNS, RECENCY_WEEKS
from churnops.jobs.value.model import ValueModel
from churnops.jobs.value.pipeline import churn_probability, list_value_champion, no_purchases_error
from churnops.snapshots import DATA_DIR
from churnops.survival_columns import MEDIAN_BEYOND_HORIZON, MEDIAN_DAYS, survival_list_columns

log = logging.getLogger(__name__)

# The snapshot's order of a row: its file's path, then its index in the file (how `load_snapshot` reads them).
SNAPSHOT_FILE, SNAPSHOT_ROW = "_snapshot_file", "_snapshot_row"
_PARTITION = "_campaign_partition"
_SUMMARY_COLUMNS = (*HISTORY_COLUMNS, *RECENT_PURCHASE_FEATURES)
_SUMMARY_SCHEMA = ", ".join([f"{ENTITY_ID} string", *(f"{c} double" for c in _SUMMARY_COLUMNS)])
_VALUE_SCHEMA = (
    f"{ENTITY_ID} string, expected_value double, expected_saved_value double, campaign_rank long, in_campaign boolean"
)


@dataclass(frozen=True)
class ModelColumns:
    """customer_id and the model columns of every customer of a list (Spark), those columns' DDL in list order, and
    the frames (and broadcast models) kept for them (`release` when the list is written)."""

    frame: DataFrame
    schema: str
    kept: tuple[DataFrame | Broadcast, ...] = ()

    def release(self) -> None:
        for frame in self.kept:
            frame.unpersist()


def snapshot_position() -> list[Column]:
    """The columns giving a snapshot row's place in `load_snapshot`'s order, to select with the row."""
    return [F.col("_metadata.file_path").alias(SNAPSHOT_FILE), F.col("_metadata.row_index").alias(SNAPSHOT_ROW)]


def model_columns(
    spark: SparkSession,
    settings: Settings,
    contract: DatasetContract,
    scored: DataFrame,
    snapshot_dir: Path,
    cutoff: dt.date,
) -> ModelColumns | None:
    """The value and survival columns of the customers of `scored` (customer_id, score and the snapshot position),
    each group only once its model has a champion; None when neither has."""
    groups = [
        group
        for group in (
            _value_columns(spark, settings, contract, scored, cutoff),
            _survival_columns(spark, contract, scored, snapshot_dir, cutoff),
        )
        if group is not None
    ]
    if not groups:
        return None
    frame = groups[0].frame
    for group in groups[1:]:
        frame = frame.join(group.frame, ENTITY_ID, "inner")
    kept = tuple(kept for group in groups for kept in group.kept)
    return ModelColumns(frame, ", ".join(group.schema for group in groups), kept)


def _value_columns(
    spark: SparkSession, settings: Settings, contract: DatasetContract, scored: DataFrame, cutoff: dt.date
) -> ModelColumns | None:
    champion = list_value_champion(contract)
    if champion is None or contract.value is None:
        return None
    version, model = champion
    value = contract.value
    kept: list[DataFrame] = []
    try:
        summaries = _kept(_customer_summaries(spark, settings, contract, cutoff), kept)
        population = _population(summaries, kept)
        if len(population.counts) == 0:
            raise no_purchases_error(contract, cutoff, "in the bronze layer")
        fit = fit_btyd_on(population)
        expected = summaries.mapInPandas(
            _value_predictor(model, fit, cutoff, value.horizon_days), f"{ENTITY_ID} string, expected_value double"
        )
        # A customer without a purchase before the cutoff has no history to forecast from: an expected value of 0.
        with_expected = scored.join(expected, ENTITY_ID, "left").fillna(0.0, subset=["expected_value"])
        saved = with_expected.mapInPandas(_saver(contract), f"{_ddl(with_expected)}, expected_saved_value double")
        columns = _kept(_campaign(saved, contacts_allowed(value.budget, value.contact_cost), kept), kept)
        campaign = columns.agg(
            F.sum(F.col("in_campaign").cast("long")).alias("customers"),
            F.sum(F.when(F.col("in_campaign"), F.col("expected_saved_value"))).alias("saved"),
        ).first()
    except BaseException:
        for frame in kept:
            frame.unpersist()
        raise
    log.info(
        "value model %s v%s: %s customers in the campaign, expected saved value %.2f",
        contract.value_model_name,
        version,
        campaign["customers"] or 0,
        campaign["saved"] or 0.0,
    )
    return ModelColumns(columns, _VALUE_SCHEMA.split(", ", 1)[1], tuple(kept))


def _kept(frame: DataFrame, kept: list[DataFrame]) -> DataFrame:
    """`frame` persisted (read more than once) and remembered, to be released."""
    frame = frame.persist(StorageLevel.MEMORY_AND_DISK)
    kept.append(frame)
    return frame


def _ddl(frame: DataFrame) -> str:
    return ", ".join(f"{field.name} {field.dataType.simpleString()}" for field in frame.schema.fields)


def _customer_summaries(
    spark: SparkSession, settings: Settings, contract: DatasetContract, cutoff: dt.date
) -> DataFrame:
    """One row per customer with a purchase before the cutoff (`customer_summaries`), from the bronze layer."""
    value = contract.value
    assert value is not None
    manifest = committed_manifest(settings, contract.name)
    events = read_events(spark, contract, settings, manifest, last_day=cutoff - dt.timedelta(days=1))
    events = events.where(F.col(EVENT_DAY) < F.lit(cutoff))
    if value.event_type is not None:
        events = events.where(F.col(EVENT_TYPE) == F.lit(value.event_type))
    by_customer = events.select(ENTITY_ID, EVENT_DAY, AMOUNT).repartition(ENTITY_ID)
    return by_customer.mapInPandas(_summariser(cutoff), _SUMMARY_SCHEMA)


def _summariser(cutoff: dt.date) -> Callable[[Iterator[pd.DataFrame]], Iterator[pd.DataFrame]]:
    def summarise(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        # A partition's batches together: a customer's purchases may fall in two batches.
        events = pd.concat(list(batches), ignore_index=True)
        if events.empty:
            return
        summaries = customer_summaries(events, cutoff)
        summaries.index = summaries.index.astype(str)
        yield summaries.reset_index()[[ENTITY_ID, *_SUMMARY_COLUMNS]]

    return summarise


def _population(summaries: DataFrame, kept: list[DataFrame]) -> BTYDPopulation:
    """What the BTYD fits read of every customer, with only a handful of numbers per partition (and the distinct
    triples) reaching the driver."""
    rows = summaries.groupBy(FREQUENCY, RECENCY_WEEKS, AGE_WEEKS).count().collect()
    triples = np.array([[r[FREQUENCY], r[RECENCY_WEEKS], r[AGE_WEEKS]] for r in rows], dtype=np.float64).reshape(-1, 3)
    counts = np.array([r["count"] for r in rows], dtype=np.int64)
    order = np.lexsort((triples[:, 2], triples[:, 1], triples[:, 0]))  # np.unique's order
    triples, counts = triples[order], counts[order]
    customers = int(counts.sum())
    age_total = total_of_parts(_collect_parts(summaries.select(AGE_WEEKS), lambda batch: batch[AGE_WEEKS]))
    spend = {basis: _spend_likelihood(summaries, basis, kept) for basis in SPEND_BASES}
    return BTYDPopulation(
        RFM(frequency=triples[:, 0], recency=triples[:, 1], age=triples[:, 2]),
        counts,
        age_total / customers if customers else float("nan"),
        spend,
    )


def _spend_likelihood(summaries: DataFrame, basis: SpendBasis, kept: list[DataFrame]) -> SpendLikelihood:
    def usable(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in batches:
            count, mean = usable_spend(batch, basis)
            yield pd.DataFrame({"count": count, "mean": mean})

    buyers = _kept(summaries.mapInPandas(usable, "count double, mean double"), kept)
    stats = buyers.agg(F.count("mean").alias("buyers"), F.percentile("mean", 0.5).alias("median")).first()
    median, count = (float(stats["median"]) if stats["median"] is not None else float("nan")), int(stats["buyers"])
    fitted = _fit_spend_on_an_executor(buyers, median) if count else None
    return SpendLikelihood(None, median, count, fitted)


def _fit_spend_on_an_executor(buyers: DataFrame, median: float) -> GammaGammaParams:
    """The Gamma-Gamma fit of these buyers in one task (`fit_gamma_gamma_by` on `spend_likelihood`, the pandas
    path's functions: exact sums, so the same parameters): one Spark job instead of one per evaluation of the
    optimizer (about a hundred per basis). Two numbers per buyer are in that task's memory; three come back."""

    def fit(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        rows = [batch for batch in batches if len(batch)]
        if not rows:
            return
        every = pd.concat(rows, ignore_index=True)
        total = spend_likelihood(every["count"].to_numpy(np.float64), every["mean"].to_numpy(np.float64))
        params = fit_gamma_gamma_by(total, median)
        yield pd.DataFrame({"p": [params.p], "q": [params.q], "gamma": [params.gamma]})

    fitted = buyers.coalesce(1).mapInPandas(fit, "p double, q double, gamma double").collect()
    return GammaGammaParams(fitted[0]["p"], fitted[0]["q"], fitted[0]["gamma"])


def _collect_parts(frame: DataFrame, values: Callable[[pd.DataFrame], pd.Series | np.ndarray]) -> pd.DataFrame:
    def parts(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in batches:
            yield exact_sum_parts(np.asarray(values(batch), dtype=np.float64))

    rows = frame.mapInPandas(parts, PARTS_SCHEMA).collect()
    return pd.DataFrame([row.asDict() for row in rows], columns=["exponent", "high", "low"])


def _value_predictor(
    model: ValueModel, fit: BTYDFit, cutoff: dt.date, horizon_days: int
) -> Callable[[Iterator[pd.DataFrame]], Iterator[pd.DataFrame]]:
    def predict(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in batches:
            summaries = batch.set_index(ENTITY_ID)
            predicted = model.predict_at(inputs_from_summaries(cutoff, summaries, fit), horizon_days)
            yield pd.DataFrame({ENTITY_ID: summaries.index.to_numpy(), "expected_value": predicted})

    return predict


def _saver(contract: DatasetContract) -> Callable[[Iterator[pd.DataFrame]], Iterator[pd.DataFrame]]:
    value = contract.value
    assert value is not None

    def save(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in batches:
            probability = churn_probability(contract, batch["score"].to_numpy())
            saved = expected_saved_value(
                probability, batch["expected_value"].to_numpy(), value.save_rate, value.contact_cost
            )
            yield batch.assign(expected_saved_value=saved)

    return save


def _campaign(saved: DataFrame, allowed: int, kept: list[DataFrame]) -> DataFrame:
    """Campaign ranks over the whole list (the pandas path's order) and the budget cut, partition by partition."""
    ranked = _kept(
        saved.orderBy(
            F.col("expected_saved_value").desc(),
            F.col("score").desc(),
            F.col(SNAPSHOT_FILE).asc(),
            F.col(SNAPSHOT_ROW).asc(),
        ).withColumn(_PARTITION, F.spark_partition_id()),
        kept,
    )
    counts = {row[_PARTITION]: row["count"] for row in ranked.groupBy(_PARTITION).count().collect()}
    offsets, before = {}, 0
    for partition in sorted(counts):
        offsets[partition] = before
        before += counts[partition]

    def rank(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        rows = pd.concat(list(batches), ignore_index=True)  # the partition's rows, in the sort's order
        if rows.empty:
            return
        ranks = offsets[int(rows[_PARTITION].iloc[0])] + np.arange(1, len(rows) + 1, dtype=np.int64)
        saved_value = rows["expected_saved_value"].to_numpy()
        yield pd.DataFrame(
            {
                ENTITY_ID: rows[ENTITY_ID].to_numpy(),
                "expected_value": rows["expected_value"].to_numpy(),
                "expected_saved_value": saved_value,
                "campaign_rank": ranks,
                "in_campaign": within_budget(ranks, saved_value, allowed),
            }
        )

    # Only what `rank` reads: the snapshot positions (a file path per row) ordered the sort, and a projection keeps
    # each partition's order, without a Python string per row in the workers.
    used = ranked.select(ENTITY_ID, "expected_value", "expected_saved_value", _PARTITION)
    return used.mapInPandas(rank, _VALUE_SCHEMA)


def _survival_columns(
    spark: SparkSession, contract: DatasetContract, scored: DataFrame, snapshot_dir: Path, cutoff: dt.date
) -> ModelColumns | None:
    champion = list_survival_champion(contract, cutoff)
    if champion is None or contract.survival is None:
        return None
    model, version = champion
    horizons = contract.survival.horizons
    columns = survival_list_columns(horizons)
    schema = ", ".join(f"{c} boolean" if c == MEDIAN_BEYOND_HORIZON else f"{c} double" for c in columns)
    features = (
        spark.read.parquet(str(snapshot_dir / DATA_DIR))
        .where(F.to_date(F.col(CUTOFF)) == F.lit(cutoff))
        .select(F.col(ENTITY_ID).cast("string").alias(ENTITY_ID), *model.schema.columns)
    )

    # Broadcast, not captured: a Python worker unpickles the model once and keeps it (and the trees prepared on its
    # first batch, `HazardBoostingModel._bin_trees`) for every task it runs, instead of once per task.
    shared = spark.sparkContext.broadcast(model)

    def predict(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        task = TaskContext.get()
        threads = task.cpus() if task is not None else None  # the task's cores, not the machine's
        for batch in batches:
            predicted = survival_predictions(shared.value, batch, horizons, threads)
            predicted[MEDIAN_DAYS] = predicted[MEDIAN_DAYS].astype(float)
            yield predicted[[ENTITY_ID, *columns]]

    predicted = features.mapInPandas(predict, f"{ENTITY_ID} string, {schema}")
    joined = scored.select(ENTITY_ID).join(predicted, ENTITY_ID, "left").persist(StorageLevel.MEMORY_AND_DISK)
    missing = joined.where(F.col(MEDIAN_BEYOND_HORIZON).isNull())
    count = missing.count()
    if count:
        joined.unpersist()
        shared.unpersist()
        raise customers_without_survival_rows(count, cutoff, missing.first()[ENTITY_ID])
    log.info(
        "survival columns from %s v%s added to the %s list of %s",
        contract.survival_model_name,
        version,
        cutoff,
        contract.name,
    )
    return ModelColumns(joined, schema, (joined, shared))
