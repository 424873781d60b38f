"""Which cutoffs the value model of a run trains and is evaluated on: the evaluation cutoff's whole value horizon
is observed, and every training window ends by it."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest

from churnops.config import Settings
from churnops.dataset import load_contract
from churnops.jobs.value.pipeline import NotEnoughHistoryError, value_cutoffs


def test_cdnow_evaluates_at_the_pinned_cutoff_with_the_39_weeks_after_it_observed() -> None:
    contract = load_contract("cdnow", Settings())
    cutoffs = value_cutoffs(contract, dt.date(1998, 7, 1), observed_until=dt.date(1998, 7, 1))
    assert cutoffs.evaluation == pd.Timestamp("1997-10-01")
    assert cutoffs.window_days == 91
    assert len(cutoffs.training) == contract.cutoffs.train_cutoffs
    assert all(c + pd.Timedelta(days=91) <= cutoffs.evaluation for c in cutoffs.training)


def test_synthetic_evaluates_at_the_latest_cutoff_whose_horizon_is_observed() -> None:
    contract = load_contract("synthetic", Settings())
    cutoffs = value_cutoffs(contract, dt.date(2025, 1, 1), observed_until=dt.date(2025, 1, 1))
    assert cutoffs.evaluation == pd.Timestamp("2024-07-01")  # + 182 days = 2024-12-30; 2024-08-01 would not fit
    assert cutoffs.window_days == contract.label.horizon_days
    assert cutoffs.training[-1] == pd.Timestamp("2024-05-01")  # + 60 days ends by the evaluation cutoff
    assert len(cutoffs.training) == contract.cutoffs.train_cutoffs


def test_a_run_before_a_whole_horizon_is_observed_is_told_so() -> None:
    contract = load_contract("synthetic", Settings())
    with pytest.raises(NotEnoughHistoryError, match="182-day value horizon"):
        value_cutoffs(contract, dt.date(2023, 10, 1), observed_until=dt.date(2023, 10, 1))
