"""The seeded generator and its regime change: unchanged without a shift, identical before it, and after it a
second churn mechanism (a price rise) that only the chosen plan and region follow."""

from __future__ import annotations

import datetime as dt
import hashlib

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from churnops.jobs.generate import SCENARIOS, GeneratedData, PriceRise, generate

CUSTOMERS = 600
SEED = 7
SHIFT = SCENARIOS["regime_shift"].shift_at
assert SHIFT is not None
SHIFT_TS = pd.Timestamp(SHIFT)
DAY = pd.Timedelta(days=1)


@pytest.fixture(scope="module")
def unshifted() -> GeneratedData:
    return generate(CUSTOMERS, seed=SEED)


@pytest.fixture(scope="module")
def shifted() -> GeneratedData:
    return generate(CUSTOMERS, seed=SEED, shift_at=SHIFT)


def digest(frame: pd.DataFrame) -> str:
    return hashlib.sha256(pd.util.hash_pandas_object(frame, index=True).to_numpy().tobytes()).hexdigest()[:16]


def group_ids(data: GeneratedData, rise: PriceRise = PriceRise()) -> set[int]:
    customers = data.customers
    return set(customers.loc[(customers["plan"] == rise.plan) & (customers["region"] == rise.region), "customer_id"])


def last_event(data: GeneratedData) -> pd.Series:
    return data.events.groupby("customer_id")["event_time"].max()


def weekly_rate(events: pd.DataFrame, event_type: str, windows: dict[int, tuple[pd.Timestamp, pd.Timestamp]]) -> float:
    """Events of `event_type` per week over each customer's own window, pooled over the customers."""
    typed = events[events["event_type"] == event_type]
    count, days = 0, 0.0
    for customer, (start, end) in windows.items():
        times = typed.loc[typed["customer_id"] == customer, "event_time"]
        count += int(((times >= start) & (times < end)).sum())
        days += (end - start) / DAY
    return 7 * count / days


def test_without_a_shift_the_generator_writes_what_it_always_wrote(unshifted: GeneratedData):
    # Digests of generate(600, seed=7) taken with the generator as it was before the regime change existed.
    assert digest(unshifted.customers) == "fdb82e83d1ad9562"
    assert digest(unshifted.events) == "12f4f344e1db2a23"


def test_everything_before_the_shift_is_identical_with_and_without_it(unshifted: GeneratedData, shifted: GeneratedData):
    pd.testing.assert_frame_equal(shifted.customers, unshifted.customers)
    before = unshifted.events[unshifted.events["event_time"] < SHIFT_TS]
    pd.testing.assert_frame_equal(shifted.events[shifted.events["event_time"] < SHIFT_TS], before)
    assert len(before) > 50_000


def test_customers_outside_the_group_are_untouched_after_the_shift(unshifted: GeneratedData, shifted: GeneratedData):
    group = group_ids(shifted)
    assert 0.08 < len(group) / CUSTOMERS < 0.15

    def outside(data: GeneratedData) -> pd.DataFrame:
        return data.events[~data.events["customer_id"].isin(group)].reset_index(drop=True)

    pd.testing.assert_frame_equal(outside(shifted), outside(unshifted))


def test_the_group_leaves_far_more_often_after_the_shift(unshifted: GeneratedData, shifted: GeneratedData):
    recent = unshifted.events[unshifted.events["event_time"].between(SHIFT_TS - 28 * DAY, SHIFT_TS, inclusive="left")]
    active_group = sorted(group_ids(unshifted) & set(recent["customer_id"]))
    assert len(active_group) >= 20

    def gone_within_90_days(data: GeneratedData) -> float:
        return float((last_event(data).loc[active_group] < SHIFT_TS + 90 * DAY).mean())

    assert gone_within_90_days(unshifted) < 0.25
    assert gone_within_90_days(shifted) > gone_within_90_days(unshifted) + 0.4


def price_leavers(unshifted: GeneratedData, shifted: GeneratedData) -> list[int]:
    """Group customers who left for the price: gone a month or more earlier than they would have, and not in the
    week of the bill questions."""
    before, after = last_event(unshifted), last_event(shifted)
    return [
        customer
        for customer in sorted(group_ids(shifted))
        if customer in before.index
        and after[customer] < before[customer] - 28 * DAY
        and after[customer] >= SHIFT_TS + 28 * DAY
    ]


def test_leavers_complain_for_weeks_before_leaving(unshifted: GeneratedData, shifted: GeneratedData):
    leavers = price_leavers(unshifted, shifted)
    assert len(leavers) >= 8
    left = last_event(shifted)
    before_leaving = {c: (left[c] - 14 * DAY, left[c]) for c in leavers}
    before_shift = dict.fromkeys(leavers, (SHIFT_TS - 90 * DAY, SHIFT_TS))
    calls_before_leaving = weekly_rate(shifted.events, "support_call", before_leaving)
    assert calls_before_leaving > 2.0
    assert calls_before_leaving > 20 * weekly_rate(shifted.events, "support_call", before_shift)


def test_leavers_keep_visiting_until_they_leave_unlike_the_old_mechanism(
    unshifted: GeneratedData, shifted: GeneratedData
):
    leavers = price_leavers(unshifted, shifted)
    left = last_event(shifted)
    visits_before_leaving = weekly_rate(shifted.events, "visit", {c: (left[c] - 28 * DAY, left[c]) for c in leavers})
    visits_before_shift = weekly_rate(shifted.events, "visit", dict.fromkeys(leavers, (SHIFT_TS - 28 * DAY, SHIFT_TS)))
    assert visits_before_leaving > 0.8 * visits_before_shift

    # The old mechanism: customers who left well before the shift had faded in their last weeks.
    old_left = last_event(unshifted)
    churners = old_left[(old_left > pd.Timestamp("2023-01-01")) & (old_left < SHIFT_TS - 28 * DAY)].index
    last_weeks = weekly_rate(unshifted.events, "visit", {c: (old_left[c] - 28 * DAY, old_left[c]) for c in churners})
    months_before = weekly_rate(
        unshifted.events, "visit", {c: (old_left[c] - 140 * DAY, old_left[c] - 112 * DAY) for c in churners}
    )
    assert last_weeks < 0.7 * months_before


def test_the_group_pays_more_for_the_same_purchases_after_the_shift(unshifted: GeneratedData, shifted: GeneratedData):
    group = group_ids(shifted)

    def group_purchases(data: GeneratedData, after_shift: bool) -> pd.DataFrame:
        events = data.events
        when = events["event_time"] >= SHIFT_TS if after_shift else events["event_time"] < SHIFT_TS
        return events[(events["event_type"] == "purchase") & events["customer_id"].isin(group) & when]

    after = group_purchases(unshifted, True).merge(
        group_purchases(shifted, True), on=["customer_id", "event_time"], suffixes=("_old", "_new")
    )
    assert len(after) > 50
    np.testing.assert_allclose(after["amount_new"], np.round(after["amount_old"] * 1.25, 2))


def test_a_shift_outside_the_generated_period_is_refused():
    with pytest.raises(ValueError, match="shift_at 2026-01-01 must lie inside the generated period"):
        generate(50, shift_at=dt.date(2026, 1, 1))


def test_a_price_rise_for_a_plan_that_does_not_exist_is_refused():
    with pytest.raises(ValueError, match="plan 'gold' is not a generated plan"):
        PriceRise(plan="gold")


def test_generate_command_writes_the_regime_shift_dataset_with_its_shift(tmp_path):
    from churnops.cli import app

    result = CliRunner().invoke(
        app, ["generate", "--dataset", "regime_shift", "--customers", "300"], env={"CHURNOPS_HOME": str(tmp_path)}
    )
    assert result.exit_code == 0, result.output
    written = pd.read_parquet(tmp_path / "data" / "regime_shift" / "events.parquet")
    expected = generate(300, seed=SEED, shift_at=SHIFT).events
    pd.testing.assert_frame_equal(written, expected, check_dtype=False)
    assert not written.equals(generate(300, seed=SEED).events.astype(written.dtypes.to_dict()))


def test_generate_command_takes_a_shift_date_for_any_generated_dataset(tmp_path):
    from churnops.cli import app

    result = CliRunner().invoke(
        app,
        ["generate", "--dataset", "synthetic", "--customers", "300", "--shift-at", "2024-03-04"],
        env={"CHURNOPS_HOME": str(tmp_path)},
    )
    assert result.exit_code == 0, result.output
    written = pd.read_parquet(tmp_path / "data" / "synthetic" / "events.parquet")
    expected = generate(300, seed=SEED, shift_at=dt.date(2024, 3, 4)).events
    pd.testing.assert_frame_equal(written, expected, check_dtype=False)
