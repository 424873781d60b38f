"""The survival search runs on time folds inside the training period and returns what the refit needs."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from churnops.features import CUTOFF
from churnops.jobs.survival.data import DURATION, EVENT
from churnops.jobs.survival.tune import fit_setup, search, split_params, time_folds
from churnops.schema import FeatureSchema
from tests.survival.test_boosting import simulated

CUTOFFS = [dt.date(2024, 1, 1), dt.date(2024, 1, 31), dt.date(2024, 3, 1)]
END = dt.date(2024, 3, 31)


def stacked() -> pd.DataFrame:
    """Simulated customers at three cutoffs, each followed up to 2024-03-30."""
    frames = []
    for i, cutoff in enumerate(CUTOFFS):
        frame, _ = simulated(800, seed=10 + i, follow_up=(END - cutoff).days)
        frames.append(frame.assign(**{CUTOFF: pd.Timestamp(cutoff)}))
    return pd.concat(frames, ignore_index=True)


def test_time_folds_fit_earlier_cutoffs_censored_before_the_validation_cutoff() -> None:
    training = stacked()
    fold = time_folds(training, [CUTOFFS[2]])[0]
    assert set(pd.to_datetime(fold.train[CUTOFF]).dt.date) == set(CUTOFFS[:2])
    last_day = pd.to_datetime(fold.train[CUTOFF]) + pd.to_timedelta(fold.train[DURATION] - 1, unit="D")
    assert (last_day < pd.Timestamp(CUTOFFS[2])).all()
    assert len(fold.valid) == 800 and (pd.to_datetime(fold.valid[CUTOFF]).dt.date == CUTOFFS[2]).all()
    with pytest.raises(ValueError, match="needs training cutoffs before it"):
        time_folds(training, [CUTOFFS[0]])


def test_search_returns_the_best_trial_and_its_rounds_and_the_setup_refits() -> None:
    training = stacked()
    schema = FeatureSchema.fit(training, ["days_since_last_event", "noise"], [])
    seen: list[int] = []
    found = search(
        time_folds(training, CUTOFFS[1:]),
        schema,
        n_trials=3,
        seed=0,
        last_bin_start=60,
        on_trial=lambda number, params, result: seen.append(number),
    )
    assert seen == [0, 1, 2] and len(found.trials) == 3
    assert found.best_cv_c_index == max(t["mean_c_index"] for t in found.trials)
    assert found.best_cv_c_index > 0.55 and found.best_rounds >= 1
    setup = split_params(found.best_params, seed=0, last_bin_start=60)
    model, rounds = fit_setup(setup, training, schema, found.best_rounds)
    assert rounds == found.best_rounds
    assert model.shifted == (("days_since_last_event",) if found.best_params["advance_time_since"] else ())
    assert np.isfinite(model.rates(training.head(5))).all() and EVENT in training
