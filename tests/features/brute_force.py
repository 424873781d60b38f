"""A deliberately naive, per-customer pandas computation of every feature and label, written from the catalog's
definitions without looking at the SQL: the independent oracle the engine tests compare against."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pandas as pd

from churnops.dataset import DatasetContract
from churnops.features import EWM_HALF_LIFE_DAYS


def brute_force_row(events: pd.DataFrame, cutoff: dt.date, contract: DatasetContract) -> dict[str, object]:
    """Features and label of one customer at one cutoff; `events` = that customer's rows (event_time, type, amount)."""
    days = (pd.Timestamp(cutoff) - events["event_time"].dt.normalize()).dt.days.to_numpy()
    amount = events["amount"].to_numpy(dtype=float)
    types = events["event_type"].to_numpy()
    before = days >= 1
    row: dict[str, object] = {}
    for window in (7, 30, 90, 180, 365, None):
        name = "all" if window is None else f"{window}d"
        inside = before if window is None else before & (days <= window)
        selected = amount[inside]
        row[f"event_count_{name}"] = float(inside.sum())
        row[f"amount_sum_{name}"] = float(selected.sum())
        row[f"amount_mean_{name}"] = float(selected.mean()) if selected.size else math.nan
        row[f"amount_max_{name}"] = float(selected.max()) if selected.size else math.nan
    row["amount_std_all"] = float(np.std(amount[before], ddof=1)) if before.sum() > 1 else math.nan
    event_days = np.unique(days[before])  # as distances; one per event day
    row["active_days_90d"] = float((event_days <= 90).sum())
    row["active_days_all"] = float(event_days.size)
    for event_type in contract.events.counted_event_types:
        for window in (30, 90):
            row[f"{event_type}_count_{window}d"] = float((before & (days <= window) & (types == event_type)).sum())
    recency, tenure = (float(days[before].min()), float(days[before].max())) if before.any() else (math.nan,) * 2
    row["days_since_last_event"], row["days_since_first_event"] = recency, tenure
    gaps = -np.diff(np.sort(event_days)[::-1]).astype(float)  # oldest to newest event day
    row["gap_days_mean_all"] = float(gaps.mean()) if gaps.size else math.nan
    row["gap_days_std_all"] = float(np.std(gaps, ddof=1)) if gaps.size > 1 else math.nan
    row["gap_days_max_all"] = float(gaps.max()) if gaps.size else math.nan
    mean_gap = row["gap_days_mean_all"]
    row["recency_over_mean_gap"] = recency / mean_gap if gaps.size and mean_gap > 0 else math.nan
    last_30 = float((before & (days <= 30)).sum())
    previous_30 = float(((days >= 31) & (days <= 60)).sum())
    row["event_trend_30d"] = (last_30 + 1) / (previous_30 + 1)
    if before.any() and tenure > 60:
        prior_rate = float((days > 30).sum()) / (tenure - 30)
        row["event_rate_30d_vs_own_norm"] = (last_30 + 1) / (prior_rate * 30 + 1)
    else:
        row["event_rate_30d_vs_own_norm"] = math.nan
    row[f"event_count_ewm_{EWM_HALF_LIFE_DAYS}d"] = float((0.5 ** ((days[before] - 1) / EWM_HALF_LIFE_DAYS)).sum())
    weekend = events["event_time"].dt.dayofweek.to_numpy() >= 5
    row["weekend_event_share_all"] = float((weekend & before).sum()) / before.sum() if before.any() else math.nan
    counted = contract.events.counted_event_types
    if counted:
        counts = [int((before & (types == t)).sum()) for t in counted]
        row["most_frequent_event_type"] = counted[int(np.argmax(counts))] if max(counts) > 0 else None
    horizon = contract.label.horizon_days
    in_horizon = (days <= 0) & (days > -horizon)
    if contract.label.event_type:
        in_horizon &= types == contract.label.event_type
    future_events = int(in_horizon.sum())
    row["label"] = int(future_events == 0) if contract.label.kind == "churn" else int(future_events > 0)
    return row
