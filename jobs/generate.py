"""Seeded synthetic customers and event log with a real, learnable churn signal.

A subscription business: each customer signs up, visits, buys and calls support at personal rates shaped by plan,
channel and age. Each has a churn date drawn from a hazard that depends on those attributes; in the weeks before
leaving, visits and purchases fade and support calls rise, and after it there are no events. The same seed always
gives the same files.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from churnops.storage import write_parquet_atomically

PLANS = ("basic", "plus", "premium")
REGIONS = ("north", "south", "east", "west", "central")
CHANNELS = ("web", "store", "partner")
EVENT_TYPES = ("visit", "purchase", "support_call")


@dataclass(frozen=True)
class GeneratedData:
    customers: pd.DataFrame
    events: pd.DataFrame


def generate(
    n_customers: int,
    seed: int = 7,
    start: dt.date = dt.date(2022, 1, 1),
    end: dt.date = dt.date(2025, 1, 1),
    fade_days: float = 75.0,
) -> GeneratedData:
    """Generate `n_customers` customers and their events between `start` and `end` (exclusive)."""
    rng = np.random.default_rng(seed)
    span_days = (end - start).days
    ids = np.arange(1, n_customers + 1)

    plan = rng.choice(len(PLANS), size=n_customers, p=[0.55, 0.3, 0.15])
    region = rng.choice(len(REGIONS), size=n_customers)
    channel = rng.choice(len(CHANNELS), size=n_customers, p=[0.5, 0.3, 0.2])
    age = np.clip(rng.normal(41, 12, size=n_customers), 18, 85).round()
    # Customers keep joining over the whole period, a few more at the start (the initial base).
    signup_day = np.where(
        rng.random(n_customers) < 0.35, 0, rng.integers(0, span_days - 30, size=n_customers)
    )

    # Engagement: visits per week; richer plans and older customers are steadier.
    engagement = rng.lognormal(mean=np.log(0.9) + 0.25 * plan, sigma=0.9)
    spend_level = rng.lognormal(mean=np.log(25) + 0.5 * plan, sigma=0.4)
    # Monthly churn hazard: higher for basic plans, partner channel, young and disengaged customers.
    monthly_hazard = 0.035 * np.exp(
        -0.45 * plan
        + 0.35 * (channel == 2)
        - 0.012 * (age - 41)
        - 0.35 * np.log(engagement / 0.9)
        + 0.12 * (region == 1)
    )
    lifetime_days = rng.exponential(30.4 / monthly_hazard)
    churn_day = signup_day + lifetime_days  # may lie beyond `end`: still a customer at the end

    # Draw candidate events at each customer's full rate, then thin them by the pre-churn fade (a Poisson process
    # with a time-varying rate, sampled exactly).
    active_until = np.minimum(churn_day, span_days)
    active_days = np.clip(active_until - signup_day, 0, None)
    type_rates = np.stack([engagement, engagement * 0.35, np.full(n_customers, 0.08)], axis=1) / 7.0
    frames = []
    for type_index, event_type in enumerate(EVENT_TYPES):
        counts = rng.poisson(type_rates[:, type_index] * active_days)
        owner = np.repeat(np.arange(n_customers), counts)
        day = signup_day[owner] + rng.random(owner.size) * active_days[owner]
        days_to_churn = churn_day[owner] - day
        fading = np.clip(days_to_churn / fade_days, 0.0, 1.0)
        if event_type == "support_call":
            keep = rng.random(owner.size) < np.where(days_to_churn < fade_days, 1.0, 0.45)
        else:
            keep = rng.random(owner.size) < 0.15 + 0.85 * fading
        owner, day = owner[keep], day[keep]
        if event_type == "purchase":
            amount = np.round(rng.gamma(shape=2.0, scale=spend_level[owner] / 2.0), 2)
        else:
            amount = np.zeros(owner.size)
        frames.append(pd.DataFrame({"owner": owner, "day": day, "event_type": event_type, "amount": amount}))

    events = pd.concat(frames, ignore_index=True)
    events["customer_id"] = ids[events.pop("owner").to_numpy()]
    start_ts = pd.Timestamp(start)
    events["event_time"] = start_ts + pd.to_timedelta(events.pop("day").to_numpy() * 86400, unit="s").round(
        "s"
    )
    events = events.sort_values(["event_time", "customer_id"], kind="stable", ignore_index=True)
    events = events[["customer_id", "event_time", "event_type", "amount"]]

    customers = pd.DataFrame(
        {
            "customer_id": ids,
            "signup_date": (start_ts + pd.to_timedelta(signup_day, unit="D")).normalize(),
            "plan": np.asarray(PLANS)[plan],
            "region": np.asarray(REGIONS)[region],
            "channel": np.asarray(CHANNELS)[channel],
            "age": age,
        }
    )
    return GeneratedData(customers=customers, events=events)


def write_generated(data: GeneratedData, events_path: Path, customers_path: Path) -> None:
    """Write both tables; each file appears whole or not at all."""
    write_parquet_atomically(data.events, events_path)
    write_parquet_atomically(data.customers, customers_path)
