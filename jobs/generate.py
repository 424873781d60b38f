"""Seeded synthetic customers and event log with a real, learnable churn signal, and an optional regime change.

A subscription business: each customer signs up, visits, buys and calls support at personal rates shaped by plan,
channel and age. Each has a churn date drawn from a hazard that depends on those attributes; in the weeks before
leaving, visits and purchases fade and support calls rise, and after it there are no events. The same seed always
gives the same files.

**The regime change** (`shift_at`, see `PriceRise`): on that day the business raises the price of one plan in one
region (by default `basic` in `north`, about 11 % of customers), where a competitor keeps the old price. Everyone in
that group pays 25 % more per purchase from then on, and in the week the new bill arrives contacts support about
four times on average. And the group now leaves for the competitor at a high rate of its own, by a mechanism the
business had never seen: the customer keeps visiting and buying as usual (no fade), complains to support several
times a week for the two to five weeks before leaving, then goes at once. A model trained before the shift learned
that leavers fade away; it ranks these engaged complainers as safe, so its realized ranking quality drops after the
shift, while the support-call features drift within a week. A model retrained on cutoffs after the shift learns the
new pattern. Everything before `shift_at` (every customer, every event) is exactly what the generator writes
without it for the same seed, and customers outside the group are untouched after it too: the shift draws from a
random stream of its own. Measured effects: docs/benchmarks/regime-shift.md.
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
DEFAULT_START = dt.date(2022, 1, 1)
DEFAULT_END = dt.date(2025, 1, 1)
# Mixed into the seed for the regime change's own random stream, so the base stream is never consumed by it.
SHIFT_STREAM = 1


@dataclass(frozen=True)
class GeneratedData:
    customers: pd.DataFrame
    events: pd.DataFrame


@dataclass(frozen=True)
class PriceRise:
    """The second churn mechanism that starts at the shift date: a price rise for one plan in one region."""

    plan: str = "basic"
    region: str = "north"
    # Purchases by the group cost this much more from the shift on (for customers who join later, from signing up).
    price_increase: float = 0.25
    # Departures to the competitor per month among the group's remaining customers (on top of the usual hazard).
    monthly_leave_hazard: float = 0.4
    # A leaver starts complaining between this many days before leaving (never before the shift, never before
    # signing up) ...
    complaint_lead_days: tuple[float, float] = (14.0, 35.0)
    # ... and calls support this often per week until leaving.
    complaint_calls_per_week: float = 4.0
    # Everyone of the group who was a customer on the shift day, leaving or not, contacts support about the new
    # bill this many times on average within `billing_days` of the shift.
    billing_calls: float = 4.0
    billing_days: float = 7.0

    def __post_init__(self) -> None:
        if self.plan not in PLANS:
            raise ValueError(f"price rise plan {self.plan!r} is not a generated plan; choose one of {PLANS}")
        if self.region not in REGIONS:
            raise ValueError(f"price rise region {self.region!r} is not a generated region; choose one of {REGIONS}")
        low, high = self.complaint_lead_days
        if not 0 < low <= high:
            raise ValueError(f"complaint_lead_days {self.complaint_lead_days} must be (low, high) with 0 < low <= high")


@dataclass(frozen=True)
class Scenario:
    """What `churnops generate` writes for a built-in generated dataset: the period and the regime change."""

    start: dt.date = DEFAULT_START
    end: dt.date = DEFAULT_END
    shift_at: dt.date | None = None


# The built-in generated datasets. `regime_shift` is `synthetic` plus the price rise on Monday 2024-07-22: a weekly
# replay of 26 steps from Monday 2024-06-03 scores 7 cohorts before it and 19 from it on, and the data (to the
# generator's usual end, 2025-01-01) covers the horizon of every cohort the replay scores, so the synthetic
# dataset's period is kept and the two datasets share everything before the shift.
SCENARIOS: dict[str, Scenario] = {
    "synthetic": Scenario(),
    "regime_shift": Scenario(shift_at=dt.date(2024, 7, 22)),
}


@dataclass(frozen=True)
class _Customers:
    """The customer table's columns as arrays, plus what the event draw needs (in days since `start`)."""

    ids: np.ndarray
    plan: np.ndarray
    region: np.ndarray
    channel: np.ndarray
    age: np.ndarray
    signup_day: np.ndarray
    churn_day: np.ndarray
    engagement: np.ndarray
    spend_level: np.ndarray


def generate(
    n_customers: int,
    seed: int = 7,
    start: dt.date = DEFAULT_START,
    end: dt.date = DEFAULT_END,
    fade_days: float = 75.0,
    shift_at: dt.date | None = None,
    price_rise: PriceRise | None = None,
) -> GeneratedData:
    """Generate `n_customers` customers and their events between `start` and `end` (exclusive); from `shift_at`
    on (if given), the price rise (`price_rise`, default `PriceRise()`) adds its own departures."""
    if shift_at is not None and not start < shift_at < end:
        raise ValueError(f"shift_at {shift_at} must lie inside the generated period ({start} to {end})")
    rng = np.random.default_rng(seed)
    span_days = (end - start).days
    customers = _draw_customers(rng, n_customers, span_days)
    events = _draw_events(rng, customers, span_days, fade_days)
    if shift_at is not None:
        shift_rng = np.random.default_rng([seed, SHIFT_STREAM])
        events = _apply_price_rise(
            shift_rng, events, customers, (shift_at - start).days, span_days, price_rise or PriceRise()
        )

    start_ts = pd.Timestamp(start)
    events["customer_id"] = customers.ids[events.pop("owner").to_numpy()]
    events["event_time"] = start_ts + pd.to_timedelta(events.pop("day").to_numpy() * 86400, unit="s").round("s")
    events = events.sort_values(["event_time", "customer_id"], kind="stable", ignore_index=True)
    events = events[["customer_id", "event_time", "event_type", "amount"]]
    table = pd.DataFrame(
        {
            "customer_id": customers.ids,
            "signup_date": (start_ts + pd.to_timedelta(customers.signup_day, unit="D")).normalize(),
            "plan": np.asarray(PLANS)[customers.plan],
            "region": np.asarray(REGIONS)[customers.region],
            "channel": np.asarray(CHANNELS)[customers.channel],
            "age": customers.age,
        }
    )
    return GeneratedData(customers=table, events=events)


def _draw_customers(rng: np.random.Generator, n_customers: int, span_days: int) -> _Customers:
    plan = rng.choice(len(PLANS), size=n_customers, p=[0.55, 0.3, 0.15])
    region = rng.choice(len(REGIONS), size=n_customers)
    channel = rng.choice(len(CHANNELS), size=n_customers, p=[0.5, 0.3, 0.2])
    age = np.clip(rng.normal(41, 12, size=n_customers), 18, 85).round()
    # Customers keep joining over the whole period, a few more at the start (the initial base).
    signup_day = np.where(rng.random(n_customers) < 0.35, 0, rng.integers(0, span_days - 30, size=n_customers))

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
    return _Customers(
        ids=np.arange(1, n_customers + 1),
        plan=plan,
        region=region,
        channel=channel,
        age=age,
        signup_day=signup_day,
        churn_day=signup_day + lifetime_days,  # may lie beyond `end`: still a customer at the end
        engagement=engagement,
        spend_level=spend_level,
    )


def _draw_events(rng: np.random.Generator, customers: _Customers, span_days: int, fade_days: float) -> pd.DataFrame:
    """Events as (owner index, day since start, type, amount), before the customers' ids and timestamps."""
    # Draw candidate events at each customer's full rate, then thin them by the pre-churn fade (a Poisson process
    # with a time-varying rate, sampled exactly).
    signup_day, churn_day, engagement = customers.signup_day, customers.churn_day, customers.engagement
    active_days = np.clip(np.minimum(churn_day, span_days) - signup_day, 0, None)
    type_rates = np.stack([engagement, engagement * 0.35, np.full(len(engagement), 0.08)], axis=1) / 7.0
    frames = []
    for type_index, event_type in enumerate(EVENT_TYPES):
        counts = rng.poisson(type_rates[:, type_index] * active_days)
        owner = np.repeat(np.arange(len(engagement)), counts)
        day = signup_day[owner] + rng.random(owner.size) * active_days[owner]
        days_to_churn = churn_day[owner] - day
        fading = np.clip(days_to_churn / fade_days, 0.0, 1.0)
        if event_type == "support_call":
            keep = rng.random(owner.size) < np.where(days_to_churn < fade_days, 1.0, 0.45)
        else:
            keep = rng.random(owner.size) < 0.15 + 0.85 * fading
        owner, day = owner[keep], day[keep]
        if event_type == "purchase":
            amount = np.round(rng.gamma(shape=2.0, scale=customers.spend_level[owner] / 2.0), 2)
        else:
            amount = np.zeros(owner.size)
        frames.append(pd.DataFrame({"owner": owner, "day": day, "event_type": event_type, "amount": amount}))
    return pd.concat(frames, ignore_index=True)


def _apply_price_rise(
    rng: np.random.Generator,
    events: pd.DataFrame,
    customers: _Customers,
    shift_day: int,
    span_days: int,
    rise: PriceRise,
) -> pd.DataFrame:
    """The group's events from `shift_day` on: dearer purchases, support contacts, departures to the competitor.

    Only rows dated on or after `shift_day` change or appear, so everything before the shift stays as it was.
    """
    in_group = (customers.plan == PLANS.index(rise.plan)) & (customers.region == REGIONS.index(rise.region))
    # Everyone of the group who is a customer at some time after the shift (signed up before `end`).
    exposed = np.flatnonzero(in_group & (customers.churn_day > shift_day) & (customers.signup_day < span_days))
    exposure_start = np.maximum(customers.signup_day[exposed], shift_day).astype(np.float64)
    leave_day = exposure_start + rng.exponential(30.4 / rise.monthly_leave_hazard, size=exposed.size)
    lead_days = rng.uniform(*rise.complaint_lead_days, size=exposed.size)
    # Leaving for the price only matters to those who would not have left earlier anyway, within the period.
    leaves = (leave_day < customers.churn_day[exposed]) & (leave_day < span_days)
    departure = np.full(len(customers.ids), np.inf)
    departure[exposed[leaves]] = leave_day[leaves]

    owner = events["owner"].to_numpy()
    events = events[events["day"].to_numpy() < departure[owner]].copy()
    dearer = np.isin(events["owner"].to_numpy(), exposed) & (events["day"].to_numpy() >= shift_day)
    dearer &= (events["event_type"] == "purchase").to_numpy()
    events.loc[dearer, "amount"] = np.round(events.loc[dearer, "amount"] * (1.0 + rise.price_increase), 2)

    # Complaints: from a few weeks before leaving (not before the price reached the customer) until leaving.
    complaints_from = np.maximum(leave_day[leaves] - lead_days[leaves], exposure_start[leaves])
    complaints = _support_contacts(
        rng, exposed[leaves], complaints_from, leave_day[leaves], rise.complaint_calls_per_week / 7.0
    )
    # Questions about the bill: the week after the shift, from everyone who was already a customer then.
    billed = customers.signup_day[exposed] <= shift_day
    billing_until = np.minimum(np.minimum(exposure_start + rise.billing_days, departure[exposed]), span_days)
    questions = _support_contacts(
        rng, exposed[billed], exposure_start[billed], billing_until[billed], rise.billing_calls / rise.billing_days
    )
    return pd.concat([events, complaints, questions], ignore_index=True)


def _support_contacts(
    rng: np.random.Generator, owners: np.ndarray, start: np.ndarray, end: np.ndarray, rate_per_day: float
) -> pd.DataFrame:
    """Support calls at `rate_per_day` (a Poisson process) between `start` and `end` for each of `owners`."""
    window = np.clip(end - start, 0.0, None)
    counts = rng.poisson(rate_per_day * window)
    owner = np.repeat(owners, counts)
    day = np.repeat(start, counts) + rng.random(owner.size) * np.repeat(window, counts)
    return pd.DataFrame({"owner": owner, "day": day, "event_type": "support_call", "amount": 0.0})


def write_generated(data: GeneratedData, events_path: Path, customers_path: Path) -> None:
    """Write both tables; each file appears whole or not at all."""
    write_parquet_atomically(data.events, events_path)
    write_parquet_atomically(data.customers, customers_path)
