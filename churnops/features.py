"""Feature definitions, declared once.

Every feature is a `FeatureSpec` whose `expression` is one SQL aggregate over the *day-bucketed, cutoff-joined*
event relation described below: its definition. The DuckDB reference (`jobs/reference_duckdb.py`) pastes these
strings into a `GROUP BY` query, the Spark job's leakage probe evaluates them with `F.expr`, and
`docs/feature-catalog.md` is generated from them (`python -m churnops.feature_catalog`). The Spark job computes the
same values without the join, per customer in O(days + cutoffs) (`jobs/feature_kernel.py`, which refuses a feature
it does not implement); tests/features/ compare it with this SQL on every customer and with a brute-force oracle.

The relation the expressions read has one row per (customer, event day, cutoff) with event days before
`cutoff + horizon`, and these columns (built per engine, same meaning):

- `n`, `amount_sum`, `amount_sumsq`, `amount_max`: events on that day and their amounts;
- `n_type_<type>`: events of each counted type that day; `n_label`: events that count for the label that day;
- `day_index`: days since 1970-01-01 (1970-01-01 was a Thursday, so `(day_index + 3) % 7` is 0 on Mondays);
- `gap_days`: days since the customer's previous event day (null on their first);
- `days_before`: `cutoff - event day` in days. Features read only rows with `days_before >= 1` (strictly before the
  cutoff); the label reads only `days_before <= 0` (the cutoff day and after).

Names say what, how and over which window: `amount_sum_30d`, `days_since_last_event`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from churnops.dataset import DatasetContract

WINDOWS_DAYS: tuple[int | None, ...] = (7, 30, 90, 180, 365, None)  # None = all time before the cutoff
TYPE_COUNT_WINDOWS_DAYS: tuple[int, ...] = (30, 90)
EWM_HALF_LIFE_DAYS = 30

# Bookkeeping columns of a feature snapshot that are not model inputs.
ENTITY_ID = "customer_id"
CUTOFF = "cutoff"
LABEL = "label"
LABEL_AVAILABLE = "label_available"
# Decimal places kept for floating-point features: sums of doubles depend on the order Spark merges partial
# aggregates, and rounding makes the same input give the same bytes (and so the same snapshot hash).
FLOAT_DECIMALS = 6

Kind = Literal["numeric", "categorical"]


@dataclass(frozen=True)
class FeatureSpec:
    name: str
    window_days: int | None
    definition: str
    # One SQL aggregate over the cutoff-joined day buckets (see the module docstring); Spark SQL and DuckDB both.
    expression: str
    kind: Kind = "numeric"
    family: str = "window"


def _window_label(window_days: int | None) -> str:
    return "all" if window_days is None else f"{window_days}d"


def _window_text(window_days: int | None) -> str:
    return "before the cutoff" if window_days is None else f"in the {window_days} days before the cutoff"


def _inside(window_days: int | None) -> str:
    # Strictly before the cutoff: the cutoff day itself belongs to the label's horizon.
    return "days_before >= 1" if window_days is None else f"days_before BETWEEN 1 AND {window_days}"


def _count(window_days: int | None) -> str:
    return f"SUM(CASE WHEN {_inside(window_days)} THEN n ELSE 0 END)"


def _sum(window_days: int | None) -> str:
    return f"SUM(CASE WHEN {_inside(window_days)} THEN amount_sum ELSE 0.0 END)"


def _ratio(numerator: str, denominator: str) -> str:
    # Guarded: Spark 4 runs in ANSI mode, where x / 0 raises instead of returning null.
    return f"CASE WHEN {denominator} > 0 THEN CAST({numerator} AS DOUBLE) / {denominator} END"


def type_column(event_type: str) -> str:
    """The day-bucket column counting one event type (type values may hold any character; columns may not)."""
    return "n_type_" + re.sub(r"[^0-9A-Za-z_]", "_", event_type)


def sql_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def event_feature_specs(contract: DatasetContract) -> list[FeatureSpec]:
    """The behavioural features computed from the event log, in output column order (none for entity-level data)."""
    if contract.events is None:
        return []
    specs: list[FeatureSpec] = []
    for window in WINDOWS_DAYS:
        label, text = _window_label(window), _window_text(window)
        count, total = _count(window), _sum(window)
        specs += [
            FeatureSpec(f"event_count_{label}", window, f"number of events {text}", f"CAST({count} AS DOUBLE)"),
            FeatureSpec(f"amount_sum_{label}", window, f"total amount {text}", f"CAST({total} AS DOUBLE)"),
            FeatureSpec(
                f"amount_mean_{label}", window, f"mean amount per event {text} (null if none)", _ratio(total, count)
            ),
            FeatureSpec(
                f"amount_max_{label}",
                window,
                f"largest single amount {text} (null if none)",
                f"CAST(MAX(CASE WHEN {_inside(window)} THEN amount_max END) AS DOUBLE)",
            ),
        ]
    count_all, sum_all = _count(None), _sum(None)
    sumsq_all = "SUM(CASE WHEN days_before >= 1 THEN amount_sumsq ELSE 0.0 END)"
    variance = f"({sumsq_all} - {sum_all} * {sum_all} / {count_all}) / ({count_all} - 1)"
    specs += [
        FeatureSpec(
            "amount_std_all",
            None,
            "sample standard deviation of amounts before the cutoff (null with fewer than 2 events)",
            f"CASE WHEN {count_all} > 1 THEN SQRT(GREATEST({variance}, 0.0)) END",
        ),
        FeatureSpec(
            "active_days_90d",
            90,
            "distinct days with an event in the last 90 days",
            f"CAST(SUM(CASE WHEN {_inside(90)} THEN 1 ELSE 0 END) AS DOUBLE)",
            family="frequency",
        ),
        FeatureSpec(
            "active_days_all",
            None,
            "distinct days with an event before the cutoff (RFM frequency)",
            "CAST(SUM(CASE WHEN days_before >= 1 THEN 1 ELSE 0 END) AS DOUBLE)",
            family="frequency",
        ),
    ]
    for event_type in contract.events.counted_event_types:
        column = type_column(event_type)
        for window in TYPE_COUNT_WINDOWS_DAYS:
            specs.append(
                FeatureSpec(
                    f"{event_type}_count_{window}d",
                    window,
                    f"number of '{event_type}' events {_window_text(window)}",
                    f"CAST(SUM(CASE WHEN {_inside(window)} THEN {column} ELSE 0 END) AS DOUBLE)",
                    family="event type",
                )
            )
    recency = "MIN(CASE WHEN days_before >= 1 THEN days_before END)"
    tenure = "MAX(CASE WHEN days_before >= 1 THEN days_before END)"
    mean_gap = "AVG(CASE WHEN days_before >= 1 THEN gap_days END)"
    count_30d, count_60d = _count(30), "SUM(CASE WHEN days_before BETWEEN 31 AND 60 THEN n ELSE 0 END)"
    # The customer's own norm: their event rate before the last 30 days, over the days they were known then.
    prior_count = "SUM(CASE WHEN days_before > 30 THEN n ELSE 0 END)"
    prior_rate = f"CAST({prior_count} AS DOUBLE) / ({tenure} - 30)"
    weekend = "SUM(CASE WHEN days_before >= 1 AND (day_index + 3) % 7 >= 5 THEN n ELSE 0 END)"
    specs += [
        FeatureSpec(
            "days_since_last_event",
            None,
            "days from the last event to the cutoff (RFM recency)",
            f"CAST({recency} AS DOUBLE)",
            family="recency",
        ),
        FeatureSpec(
            "days_since_first_event",
            None,
            "days from the first event to the cutoff (tenure)",
            f"CAST({tenure} AS DOUBLE)",
            family="recency",
        ),
        FeatureSpec(
            "gap_days_mean_all",
            None,
            "mean days between consecutive event days before the cutoff (null with one event day)",
            f"CAST({mean_gap} AS DOUBLE)",
            family="gaps",
        ),
        FeatureSpec(
            "gap_days_std_all",
            None,
            "sample standard deviation of the days between consecutive event days (null with < 3 event days)",
            "CAST(STDDEV_SAMP(CASE WHEN days_before >= 1 THEN gap_days END) AS DOUBLE)",
            family="gaps",
        ),
        FeatureSpec(
            "gap_days_max_all",
            None,
            "longest gap in days between consecutive event days before the cutoff",
            "CAST(MAX(CASE WHEN days_before >= 1 THEN gap_days END) AS DOUBLE)",
            family="gaps",
        ),
        FeatureSpec(
            "recency_over_mean_gap",
            None,
            "days since the last event divided by the customer's mean gap (> 1: overdue by their own rhythm)",
            _ratio(recency, mean_gap),
            family="gaps",
        ),
        FeatureSpec(
            "event_trend_30d",
            30,
            "events in the last 30 days divided by events in the 30 days before them (+1 smoothed)",
            f"CAST({count_30d} + 1 AS DOUBLE) / ({count_60d} + 1)",
            family="trend",
        ),
        FeatureSpec(
            "event_rate_30d_vs_own_norm",
            30,
            "events in the last 30 days divided by the customer's own expected 30-day count from their rate before "
            "that (+1 smoothed; null when known for 60 days or less)",
            f"CASE WHEN {tenure} > 60 THEN CAST({count_30d} + 1 AS DOUBLE) / ({prior_rate} * 30 + 1) END",
            family="trend",
        ),
        FeatureSpec(
            f"event_count_ewm_{EWM_HALF_LIFE_DAYS}d",
            None,
            f"exponentially weighted event count, half-life {EWM_HALF_LIFE_DAYS} days (an event yesterday counts 1)",
            # The exponent is cast to DOUBLE first: DuckDB would otherwise divide in DECIMAL and lose digits.
            f"CAST(SUM(CASE WHEN days_before >= 1 THEN n * POWER(0.5, CAST(days_before - 1 AS DOUBLE) / "
            f"{EWM_HALF_LIFE_DAYS}) ELSE 0 END) AS DOUBLE)",
            family="trend",
        ),
        FeatureSpec(
            "weekend_event_share_all",
            None,
            "share of events before the cutoff that fell on a Saturday or Sunday",
            _ratio(weekend, count_all),
            family="calendar",
        ),
    ]
    types = contract.events.counted_event_types
    if types:
        totals = {t: f"SUM(CASE WHEN days_before >= 1 THEN {type_column(t)} ELSE 0 END)" for t in types}
        # Ties go to the type declared first in the contract, so both engines pick the same one.
        branches = []
        for i, event_type in enumerate(types):
            beats_later = [f"{totals[event_type]} >= {totals[other]}" for other in types[i + 1 :]]
            condition = " AND ".join([f"{totals[event_type]} > 0", *beats_later])
            branches.append(f"WHEN {condition} THEN {sql_literal(event_type)}")
        specs.append(
            FeatureSpec(
                "most_frequent_event_type",
                None,
                f"the most frequent of the counted event types ({', '.join(types)}) before the cutoff; ties go to "
                "the first listed; null if none",
                f"CASE {' '.join(branches)} END",
                kind="categorical",
                family="event type",
            )
        )
    return specs


def label_expression(contract: DatasetContract) -> str | None:
    """SQL aggregate giving the 0/1 label from the rows on or after the cutoff (None for a label column)."""
    if contract.label.kind == "column":
        return None
    after = "SUM(CASE WHEN days_before <= 0 THEN n_label ELSE 0 END)"
    return (
        f"CASE WHEN {after} = 0 THEN 1 ELSE 0 END"
        if contract.label.kind == "churn"
        else (f"CASE WHEN {after} > 0 THEN 1 ELSE 0 END")
    )


# Features that count the days since a fixed moment in a customer's past: for a customer who stays, each grows by
# exactly the days between two cutoffs, so their distribution moves with the calendar even when nothing changed.
# Drift compares them after moving the reference forward by that gap (monitoring/drift.py).
CALENDAR_AGED_FEATURES = ("days_since_first_event", "days_since_signup")


def entity_feature_names(contract: DatasetContract) -> tuple[list[str], list[str]]:
    """(numeric, categorical) attribute columns taken from the entity table as of the cutoff."""
    if contract.entities is None:
        return [], []
    numeric = list(contract.entities.numeric)
    if contract.entities.signup:
        numeric.append("days_since_signup")
    return numeric, list(contract.entities.categorical)


def model_feature_columns(contract: DatasetContract) -> tuple[list[str], list[str]]:
    """(numeric, categorical) columns a model is trained on, in a fixed order."""
    numeric, categorical = entity_feature_names(contract)
    specs = event_feature_specs(contract)
    return (
        [s.name for s in specs if s.kind == "numeric"] + numeric,
        categorical + [s.name for s in specs if s.kind == "categorical"],
    )


# ---------------------------------------------------------------------------------------------------------------
# Leakage probes
# ---------------------------------------------------------------------------------------------------------------
