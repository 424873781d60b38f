"""The training row budget: a snapshot whose labelled cutoffs hold more rows than `max_rows_per_cutoff` is sampled
down in Spark, stratified by label, before its rows reach the driver.

Each (cutoff, label) stratum of a cutoff over budget keeps the same fraction, budget / rows of the cutoff, so the
cutoff keeps its label rate and about `budget` rows. A row is kept when a hash of (customer, cutoff, seed) falls
below its stratum's fraction: the same rows for the same snapshot and seed however Spark partitions the files
(`DataFrame.sampleBy` depends on the partitioning), and a sample at a smaller fraction is a subset of a larger
one. Unlabelled rows (the scoring cutoff) never reach training and are not read.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from churnops.config import Settings
from churnops.features import CUTOFF, ENTITY_ID, LABEL, LABEL_AVAILABLE
from churnops.snapshot_files import training_cutoffs
from churnops.snapshots import DATA_DIR, SnapshotMetadata

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

# xxhash64 is a signed 64-bit integer: its share of the range below a fraction is the sampling probability.
_HASH_RANGE = 2.0**64


@dataclass(frozen=True)
class StratumSample:
    cutoff: str
    label: int
    rows: int
    fraction: float
    sampled: int


@dataclass(frozen=True)
class TrainingSample:
    """What the row budget kept, per (cutoff, label): recorded in the evaluation report and the model card."""

    budget: int
    seed: int
    strata: tuple[StratumSample, ...]

    def as_record(self) -> dict[str, Any]:
        return {"budget": self.budget, "seed": self.seed, "strata": [asdict(s) for s in self.strata]}


def over_budget(metadata: SnapshotMetadata, budget: int | None) -> bool:
    """Whether a labelled cutoff of the snapshot holds more rows than the budget (from the metadata: no Spark)."""
    if budget is None:
        return False
    labelled = {day for role in ("train", "out_of_time") for day in metadata.cutoffs.get(role, [])}
    return any(metadata.rows_per_cutoff.get(day, 0) > budget for day in labelled)


def stratum_fractions(rows: Mapping[tuple[str, int], int], budget: int) -> dict[tuple[str, int], float]:
    """The fraction each (cutoff, label) stratum keeps: budget / rows of its cutoff when over budget, else 1."""
    per_cutoff: dict[str, int] = {}
    for (cutoff, _), count in rows.items():
        per_cutoff[cutoff] = per_cutoff.get(cutoff, 0) + count
    return {key: min(1.0, budget / per_cutoff[key[0]]) for key in rows}


def sample_training_rows(
    spark: SparkSession, snapshot_dir: Path, metadata: SnapshotMetadata, settings: Settings
) -> tuple[pd.DataFrame, TrainingSample]:
    """The snapshot's labelled rows, sampled to the row budget per cutoff in Spark, as the pandas frame training
    takes (the dtypes `load_snapshot` gives), and what was kept."""
    from pyspark.sql import functions as F

    budget, seed = settings.training.max_rows_per_cutoff, settings.training.seed
    if budget is None:
        raise ValueError("training.max_rows_per_cutoff is not set: there is no row budget to sample to")
    labelled = spark.read.parquet(str(snapshot_dir / DATA_DIR)).where(F.col(LABEL_AVAILABLE))
    days = training_cutoffs(metadata)
    if days is not None:  # partition pruning: only the training and out-of-time cutoffs' files are read
        labelled = labelled.where(F.to_date(F.col(CUTOFF)).isin(days))
    labelled = labelled.withColumn("_day", F.date_format(F.to_date(F.col(CUTOFF)), "yyyy-MM-dd"))
    counts = {(r["_day"], int(r[LABEL])): int(r["count"]) for r in labelled.groupBy("_day", LABEL).count().collect()}
    fractions = stratum_fractions(counts, budget)
    kept_below = F.create_map(
        *[F.lit(part) for (day, label), fraction in fractions.items() for part in (f"{day}/{label}", fraction)]
    )
    position = (F.xxhash64(F.col(ENTITY_ID).cast("string"), F.col("_day"), F.lit(seed)) + 2.0**63) / _HASH_RANGE
    stratum = F.concat_ws("/", F.col("_day"), F.col(LABEL).cast("int").cast("string"))
    sample = labelled.where(position < kept_below[stratum]).drop("_day").toPandas()
    sample[CUTOFF] = pd.to_datetime(sample[CUTOFF])
    for column, dtype in metadata.column_dtypes.items():
        if column in sample.columns and str(sample[column].dtype) != dtype:
            sample[column] = sample[column].astype(dtype)
    sample = sample.sort_values([CUTOFF, ENTITY_ID], kind="stable").reset_index(drop=True)
    sampled = sample.groupby([sample[CUTOFF].dt.strftime("%Y-%m-%d"), sample[LABEL].astype(int)]).size()
    strata = tuple(
        StratumSample(day, label, counts[(day, label)], fractions[(day, label)], int(sampled.get((day, label), 0)))
        for day, label in sorted(counts)
    )
    return sample, TrainingSample(budget=budget, seed=seed, strata=strata)


def sample_with_session(
    settings: Settings, snapshot_dir: Path, metadata: SnapshotMetadata
) -> tuple[pd.DataFrame, TrainingSample]:
    """`sample_training_rows` in the active SparkSession, or one started (and stopped) for it."""
    from pyspark.sql import SparkSession

    from churnops.jobs.spark import spark_session

    active = SparkSession.getActiveSession()
    spark = active or spark_session(settings, f"churnops-train-sample-{dt.date.today().isoformat()}")
    try:
        return sample_training_rows(spark, snapshot_dir, metadata, settings)
    finally:
        if active is None:
            spark.stop()
