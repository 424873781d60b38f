"""Feature definitions, declared once.

The Spark job computes exactly these columns, the catalog in `docs/` is generated from them, and the serving
schema lists them. Names say what, how and over which window: `amount_sum_30d`, `days_since_last_event`.
Every feature uses only events strictly before the cutoff.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from churnops.dataset import DatasetContract

WINDOWS_DAYS: tuple[int | None, ...] = (7, 30, 90, 180, 365, None)  # None = all time before the cutoff
TYPE_COUNT_WINDOWS_DAYS: tuple[int, ...] = (30, 90)

Aggregation = Literal["count", "sum", "mean", "max", "std", "type_count", "recency", "tenure", "active_days", "trend"]


@dataclass(frozen=True)
class FeatureSpec:
    name: str
    aggregation: Aggregation
    window_days: int | None
    definition: str
    event_type: str | None = None


def _window_label(window_days: int | None) -> str:
    return "all" if window_days is None else f"{window_days}d"


def _window_text(window_days: int | None) -> str:
    return "before the cutoff" if window_days is None else f"in the {window_days} days before the cutoff"


def event_feature_specs(contract: DatasetContract) -> list[FeatureSpec]:
    """The behavioural features computed from the event log, in output column order."""
    specs: list[FeatureSpec] = []
    for window in WINDOWS_DAYS:
        label, text = _window_label(window), _window_text(window)
        specs += [
            FeatureSpec(f"event_count_{label}", "count", window, f"number of events {text}"),
            FeatureSpec(f"amount_sum_{label}", "sum", window, f"total amount {text}"),
            FeatureSpec(f"amount_mean_{label}", "mean", window, f"mean amount per event {text} (null if none)"),
            FeatureSpec(f"amount_max_{label}", "max", window, f"largest single amount {text} (null if none)"),
        ]
    specs.append(FeatureSpec("amount_std_all", "std", None, "sample standard deviation of amounts before the cutoff"))
    specs.append(FeatureSpec("active_days_90d", "active_days", 90, "distinct days with an event in the last 90 days"))
    for event_type in contract.events.counted_event_types:
        for window in TYPE_COUNT_WINDOWS_DAYS:
            specs.append(
                FeatureSpec(
                    f"{event_type}_count_{window}d",
                    "type_count",
                    window,
                    f"number of '{event_type}' events {_window_text(window)}",
                    event_type=event_type,
                )
            )
    specs += [
        FeatureSpec("days_since_last_event", "recency", None, "days from the last event to the cutoff (recency)"),
        FeatureSpec("days_since_first_event", "tenure", None, "days from the first event to the cutoff"),
        FeatureSpec(
            "event_trend_30d",
            "trend",
            30,
            "events in the last 30 days divided by events in the 30 days before them (+1 smoothed)",
        ),
    ]
    return specs


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
    return [s.name for s in event_feature_specs(contract)] + numeric, categorical


# Bookkeeping columns of a feature snapshot that are not model inputs.
ENTITY_ID = "customer_id"
CUTOFF = "cutoff"
LABEL = "label"
LABEL_AVAILABLE = "label_available"
