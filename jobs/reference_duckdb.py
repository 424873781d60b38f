"""The same features in DuckDB SQL: a correctness cross-check and a speed reference for the Spark job.

Nothing here restates a feature: the aggregates are the `FeatureSpec.expression` strings from `churnops.features`,
the definitions, evaluated as written. Only the plumbing is DuckDB's own — reading the bronze Parquet parts,
bucketing events by customer and day, the previous-event-day gap, and the join to the cutoffs — and it builds the
same columns as `jobs/feature_frames.bucket_by_day` / `join_cutoffs`. The Spark job computes the same values without
the join (`jobs/feature_kernel.py`), so agreement here checks that kernel against the definitions.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from churnops.dataset import DatasetContract
from churnops.features import (
    CUTOFF,
    ENTITY_ID,
    FLOAT_DECIMALS,
    LABEL,
    LABEL_AVAILABLE,
    event_feature_specs,
    label_expression,
    model_feature_columns,
    sql_literal,
    type_column,
)

EPOCH = "DATE '1970-01-01'"


def feature_query(contract: DatasetContract, events_paths: Sequence[Path], cutoffs: list[dt.date]) -> str:
    """One DuckDB query computing every event feature and the label for each (customer, cutoff), from the bronze
    part files `events_paths` (churnops.bronze.event_part_paths)."""
    assert contract.events is not None and contract.label.horizon_days is not None
    label_type = contract.label.event_type
    type_counts = "".join(
        f", SUM(CASE WHEN event_type = {sql_literal(t)} THEN 1 ELSE 0 END) AS {type_column(t)}"
        for t in contract.events.counted_event_types
    )
    n_label = f"SUM(CASE WHEN event_type = {sql_literal(label_type)} THEN 1 ELSE 0 END)" if label_type else "COUNT(*)"
    cutoff_rows = ", ".join(f"(DATE '{c.isoformat()}')" for c in cutoffs)
    files = ", ".join(sql_literal(str(path)) for path in events_paths)
    specs = event_feature_specs(contract)
    selected = ",\n  ".join(
        (f"ROUND({s.expression}, {FLOAT_DECIMALS})" if s.kind == "numeric" else s.expression) + f" AS {s.name}"
        for s in specs
    )
    return f"""
WITH daily AS (
  SELECT {ENTITY_ID}, event_day, COUNT(*) AS n, SUM(amount) AS amount_sum, SUM(amount * amount) AS amount_sumsq,
         MAX(amount) AS amount_max, {n_label} AS n_label {type_counts}
  FROM read_parquet([{files}])
  GROUP BY {ENTITY_ID}, event_day
), indexed AS (
  SELECT *, CAST(event_day - {EPOCH} AS BIGINT) AS day_index FROM daily
), gapped AS (
  SELECT *, day_index - LAG(day_index) OVER (PARTITION BY {ENTITY_ID} ORDER BY day_index) AS gap_days FROM indexed
), cutoffs AS (
  SELECT c AS {CUTOFF}, CAST(c - {EPOCH} AS BIGINT) AS cutoff_index FROM (VALUES {cutoff_rows}) AS t(c)
), joined AS (
  SELECT g.*, k.{CUTOFF}, k.cutoff_index - g.day_index AS days_before
  FROM gapped g JOIN cutoffs k ON g.day_index < k.cutoff_index + {contract.label.horizon_days}
)
SELECT {ENTITY_ID}, {CUTOFF},
  {selected},
  {label_expression(contract)} AS _label
FROM joined
GROUP BY {ENTITY_ID}, {CUTOFF}
"""


def compute_reference_features(
    contract: DatasetContract,
    events_paths: Sequence[Path],
    cutoffs: list[dt.date],
    observed_until: dt.date,
    threads: int | None = None,
) -> pd.DataFrame:
    """Features, labels and entity attributes as the Spark job writes them, computed by DuckDB from bronze events."""
    import duckdb

    connection = duckdb.connect()
    if threads is not None:
        connection.execute(f"SET threads = {int(threads)}")
    features = connection.execute(feature_query(contract, events_paths, cutoffs)).df()
    connection.close()

    features = features[features["event_count_all"] > 0]
    if contract.population.active_within_days is not None:
        features = features[features["days_since_last_event"] <= contract.population.active_within_days]
    cutoff_dates = pd.to_datetime(features[CUTOFF])
    available = cutoff_dates + pd.Timedelta(days=contract.label.horizon_days) <= pd.Timestamp(observed_until)
    features = features.assign(
        **{CUTOFF: cutoff_dates, LABEL_AVAILABLE: available, LABEL: features["_label"].where(available)}
    ).drop(columns="_label")

    if contract.entities is not None:
        source = contract.entities
        path = contract.resolve(source.path)
        entities = pd.read_csv(path) if source.format == "csv" else pd.read_parquet(path)
        attributes = pd.DataFrame({ENTITY_ID: entities[source.key].astype(str)})
        for column in source.categorical:
            # A blank category is a missing value, as in the Spark job's `read_entities`.
            values = entities[column].astype("string")
            attributes[column] = values.where(values.str.strip() != "")
        for column in source.numeric:
            values = entities[column]
            if not pd.api.types.is_numeric_dtype(values):
                # Blank or whitespace-only cells are missing values, as in the Spark job's `read_entities`.
                values = pd.to_numeric(values.astype("string").str.strip().replace("", pd.NA))
            attributes[column] = values.astype("float64")
        features = features.merge(attributes, on=ENTITY_ID, how="left")
        if source.signup:
            signup = pd.to_datetime(entities[source.signup]).set_axis(attributes[ENTITY_ID])
            days = (features[CUTOFF] - features[ENTITY_ID].map(signup)).dt.days.astype("float64")
            features = features.assign(days_since_signup=days)
            features = features[features["days_since_signup"].isna() | (features["days_since_signup"] >= 0)]
    numeric, categorical = model_feature_columns(contract)
    columns = [ENTITY_ID, CUTOFF, *numeric, *categorical, LABEL, LABEL_AVAILABLE]
    return features[columns].sort_values([CUTOFF, ENTITY_ID], ignore_index=True)
