"""The survival frame: time from a cutoff to the next purchase, censored where the follow-up ends, never later."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from churnops.features import CUTOFF, ENTITY_ID
from churnops.jobs.survival.data import (
    DURATION,
    EVENT,
    assert_follow_up_before,
    censor_before,
    cutoffs_every,
    survival_frame,
    survival_targets,
)

CUT = dt.date(2024, 3, 1)
END = dt.date(2024, 3, 31)  # 31 days of follow-up


def log(*rows: tuple[str, str, str | None]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            ENTITY_ID: [r[0] for r in rows],
            "event_day": [dt.date.fromisoformat(r[1]) for r in rows],
            "event_type": pd.array([r[2] for r in rows], dtype="string"),
        }
    )


def by_customer(targets: pd.DataFrame) -> dict[str, tuple[int, int]]:
    return {r[ENTITY_ID]: (int(r[DURATION]), int(r[EVENT])) for _, r in targets.iterrows()}


def test_next_purchase_after_the_cutoff_ends_the_duration_counting_the_cutoff_day_as_day_one() -> None:
    events = log(
        ("a", "2024-02-10", None),
        ("a", "2024-03-01", None),  # on the cutoff day: day 1
        ("b", "2024-02-20", None),
        ("b", "2024-03-10", None),  # day 10
        ("b", "2024-03-20", None),  # a later purchase does not matter
    )
    assert by_customer(survival_targets(events, [CUT], END)) == {"a": (1, 1), "b": (10, 1)}


def test_customer_without_purchase_in_the_follow_up_is_censored_at_its_end_not_counted_as_a_non_buyer() -> None:
    events = log(("a", "2024-02-10", None), ("a", "2024-04-01", None))  # bought after the data's end
    assert by_customer(survival_targets(events, [CUT], END)) == {"a": (31, 0)}


def test_only_customers_seen_before_the_cutoff_are_in_the_population() -> None:
    events = log(("a", "2024-02-10", None), ("new", "2024-03-05", None))
    assert set(survival_targets(events, [CUT], END)[ENTITY_ID]) == {"a"}


def test_a_label_event_type_decides_which_events_end_a_duration() -> None:
    events = log(("a", "2024-02-10", "visit"), ("a", "2024-03-03", "visit"), ("a", "2024-03-07", "purchase"))
    assert by_customer(survival_targets(events, [CUT], END, event_type="purchase")) == {"a": (7, 1)}


def test_several_cutoffs_each_get_their_own_follow_up() -> None:
    events = log(("a", "2024-02-10", None), ("a", "2024-03-20", None))
    targets = survival_targets(events, [dt.date(2024, 2, 15), CUT], END)
    assert list(zip(targets[DURATION], targets[EVENT], strict=True)) == [(35, 1), (20, 1)]


def test_a_cutoff_after_the_last_observed_day_is_refused() -> None:
    with pytest.raises(ValueError, match="no follow-up day"):
        survival_targets(log(("a", "2024-02-10", None)), [dt.date(2024, 4, 2)], END)


def test_missing_event_log_columns_are_named() -> None:
    with pytest.raises(ValueError, match="event_day"):
        survival_targets(pd.DataFrame({ENTITY_ID: ["a"]}), [CUT], END)


def test_censor_before_turns_events_on_or_after_the_boundary_into_censoring_the_day_before() -> None:
    targets = pd.DataFrame(
        {
            ENTITY_ID: ["early", "on", "late", "quiet"],
            CUTOFF: pd.Timestamp(CUT),
            DURATION: [5, 11, 20, 31],
            EVENT: [1, 1, 1, 0],
        }
    )
    censored = censor_before(targets, dt.date(2024, 3, 11))  # days 1..10 stay visible
    assert list(censored[DURATION]) == [5, 10, 10, 10]
    assert list(censored[EVENT]) == [1, 0, 0, 0]
    assert_follow_up_before(censored, dt.date(2024, 3, 11))
    with pytest.raises(ValueError, match="censor_before"):
        assert_follow_up_before(targets, dt.date(2024, 3, 11))


def test_every_feature_row_needs_a_target() -> None:
    targets = survival_targets(log(("a", "2024-02-10", None)), [CUT], END)
    features = pd.DataFrame({ENTITY_ID: ["a", "b"], CUTOFF: [pd.Timestamp(CUT)] * 2, "x": [1.0, 2.0]})
    with pytest.raises(ValueError, match="no survival target"):
        survival_frame(features, targets)
    joined = survival_frame(features.iloc[:1], targets)
    assert joined[[DURATION, EVENT]].to_numpy().tolist() == [[31, 0]]


def test_cutoffs_count_back_from_the_evaluation_cutoff() -> None:
    assert cutoffs_every(dt.date(2024, 3, 31), 10, dt.date(2024, 3, 5)) == [
        dt.date(2024, 3, 11),
        dt.date(2024, 3, 21),
    ]
    yearly = cutoffs_every(dt.date(2024, 12, 1), 15, dt.date(2024, 1, 1))
    assert yearly[-1] == dt.date(2024, 11, 16) and yearly[0] >= dt.date(2024, 1, 1)
    assert set(np.diff(pd.to_datetime(yearly)).astype("timedelta64[D]").astype(int)) == {15}
