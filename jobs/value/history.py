"""Per-customer purchase history as of a cutoff, and the value a customer spent in a window after it.

Both read the bronze event layer's columns (`customer_id`, `event_day`, `amount`; see `churnops.jobs.ingest`) and
nothing else, so they work on any event dataset with an amount. A *purchase day* is the unit of a transaction, as in the
platform's BG/NBD baseline and the published CDNOW summaries: several orders on one day are one transaction whose
spend is their sum. History reads only days strictly before the cutoff; the value window starts on the cutoff day.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd

from churnops.bronze import AMOUNT, EVENT_DAY
from churnops.features import ENTITY_ID
from churnops.jobs.baselines import DAYS_PER_PERIOD, RFM

# Columns of `purchase_history`, in order.
PURCHASE_DAYS = "purchase_days"
FREQUENCY = "frequency"  # repeat purchase days, x
RECENCY_WEEKS = "recency_weeks"  # first to last purchase day, t_x
AGE_WEEKS = "age_weeks"  # first purchase day to the cutoff, T
AMOUNT_TOTAL = "amount_total"
AMOUNT_FIRST_DAY = "amount_first_day"
REPEAT_MEAN_SPEND = "repeat_mean_spend"  # mean spend per repeat purchase day (NaN without a repeat purchase)
HISTORY_COLUMNS = (
    PURCHASE_DAYS,
    FREQUENCY,
    RECENCY_WEEKS,
    AGE_WEEKS,
    AMOUNT_TOTAL,
    AMOUNT_FIRST_DAY,
    REPEAT_MEAN_SPEND,
)


def _days(events: pd.DataFrame) -> pd.Series:
    missing = [c for c in (ENTITY_ID, EVENT_DAY, AMOUNT) if c not in events.columns]
    if missing:
        raise ValueError(
            f"the event frame lacks {missing}; pass the bronze layer (columns {ENTITY_ID}, {EVENT_DAY}, {AMOUNT})"
        )
    return pd.to_datetime(events[EVENT_DAY]).dt.normalize()


def purchase_days(events: pd.DataFrame, before: dt.date | pd.Timestamp) -> pd.DataFrame:
    """One row per (customer, purchase day) strictly before `before`, with the day's total amount."""
    days = _days(events)
    kept = days < pd.Timestamp(before)
    daily = (
        pd.DataFrame({ENTITY_ID: events.loc[kept, ENTITY_ID].to_numpy(), EVENT_DAY: days[kept].to_numpy()})
        .assign(**{AMOUNT: events.loc[kept, AMOUNT].to_numpy(dtype=float)})
        .groupby([ENTITY_ID, EVENT_DAY], sort=True, as_index=False)[AMOUNT]
        .sum()
    )
    return daily


def purchase_history(events: pd.DataFrame, cutoff: dt.date | pd.Timestamp) -> pd.DataFrame:
    """Per customer with a purchase before `cutoff`: the BTYD summary (x, t_x, T in weeks) and their spend.

    Indexed by customer id (sorted); customers with no purchase before the cutoff are absent.
    """
    daily = purchase_days(events, cutoff)
    if daily.empty:
        raise ValueError(f"no purchase before the cutoff {pd.Timestamp(cutoff).date()}: nothing to summarise")
    grouped = daily.groupby(ENTITY_ID, sort=True)
    first, last = grouped[EVENT_DAY].min(), grouped[EVENT_DAY].max()
    count = grouped[EVENT_DAY].size().astype(float)
    total = grouped[AMOUNT].sum()
    first_day_amount = grouped[AMOUNT].first()  # days are sorted within a customer
    frequency = count - 1.0
    week = pd.Timedelta(days=DAYS_PER_PERIOD)
    history = pd.DataFrame(
        {
            PURCHASE_DAYS: count,
            FREQUENCY: frequency,
            RECENCY_WEEKS: (last - first) / week,
            AGE_WEEKS: (pd.Timestamp(cutoff) - first) / week,
            AMOUNT_TOTAL: total,
            AMOUNT_FIRST_DAY: first_day_amount,
            REPEAT_MEAN_SPEND: ((total - first_day_amount) / frequency).where(frequency > 0),
        }
    )
    history.index.name = ENTITY_ID
    return history


def history_rfm(history: pd.DataFrame) -> RFM:
    """The (x, t_x, T) arrays BG/NBD and Pareto/NBD read, from a `purchase_history` frame."""
    return RFM(
        frequency=history[FREQUENCY].to_numpy(dtype=float),
        recency=history[RECENCY_WEEKS].to_numpy(dtype=float),
        age=history[AGE_WEEKS].to_numpy(dtype=float),
    )


def value_in_window(
    events: pd.DataFrame, customers: pd.Index, start: dt.date | pd.Timestamp, window_days: int
) -> np.ndarray:
    """Amount each of `customers` spent on days start .. start + window_days - 1 (0 for no purchase), in order."""
    if window_days < 1:
        raise ValueError(f"window_days must be at least 1 day; got {window_days}")
    days = _days(events)
    begin = pd.Timestamp(start)
    inside = (days >= begin) & (days < begin + pd.Timedelta(days=window_days))
    spent = events.loc[inside].groupby(ENTITY_ID)[AMOUNT].sum()
    return spent.reindex(customers, fill_value=0.0).to_numpy(dtype=float)
