"""The value model trains out of time: its folds, its training rows and its predictions never reach past a cutoff."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from churnops.jobs.value.features import cutoff_inputs
from churnops.jobs.value.metrics import spearman
from churnops.jobs.value.model import ValueModelParams, fit_value_model, training_rows
from churnops.jobs.value.search import train_value_model, value_time_folds

START = pd.Timestamp("2023-01-01")
EVALUATION_CUTOFF = pd.Timestamp("2023-09-01")
HORIZON_DAYS, WINDOW_DAYS = 84, 28
TRAINING_CUTOFFS = tuple(pd.Timestamp("2023-03-05") + pd.Timedelta(days=14 * i) for i in range(11))


def simulate_purchases(customers: int, seed: int) -> pd.DataFrame:
    """A purchase log in the bronze columns: customers arrive over two months, buy at their own Poisson rate
    until they leave, and spend around their own mean (heterogeneous, as in the BTYD stories)."""
    rng = np.random.default_rng(seed)
    rows: list[tuple[str, pd.Timestamp, float]] = []
    end = (EVALUATION_CUTOFF - START).days + HORIZON_DAYS + 30
    for i in range(customers):
        first = rng.uniform(0, 60)
        rate, lifetime, mean_spend = rng.gamma(0.9, 1 / 40), rng.exponential(250), rng.gamma(4.0, 10.0)
        day = first
        while day < min(first + lifetime, end):
            rows.append((f"c{i}", START + pd.Timedelta(days=int(day)), round(rng.gamma(5.0, mean_spend / 5.0), 2)))
            day += rng.exponential(1 / rate)
    return pd.DataFrame(rows, columns=["customer_id", "event_day", "amount"])


@pytest.fixture(scope="module")
def purchases() -> pd.DataFrame:
    return simulate_purchases(700, seed=4)


def future_rewritten(events: pd.DataFrame) -> pd.DataFrame:
    """The same log with everything on or after the evaluation cutoff replaced by wild, different purchases."""
    past = events[pd.to_datetime(events["event_day"]) < EVALUATION_CUTOFF]
    rng = np.random.default_rng(99)
    buyers = rng.choice(past["customer_id"].unique(), 200)
    future = pd.DataFrame(
        {
            "customer_id": buyers,
            "event_day": EVALUATION_CUTOFF + pd.to_timedelta(rng.integers(0, 120, 200), unit="D"),
            "amount": rng.uniform(1_000, 50_000, 200),
        }
    )
    return pd.concat([past, future], ignore_index=True)


def train_and_predict(events: pd.DataFrame) -> np.ndarray:
    """The whole out-of-time path, handed the full log (future included), as a careless caller would."""
    inputs = {c: cutoff_inputs(events, c) for c in TRAINING_CUTOFFS}
    trained = train_value_model(inputs, events, EVALUATION_CUTOFF, HORIZON_DAYS, WINDOW_DAYS, n_trials=2, seed=3)
    return trained.model.predict_at(cutoff_inputs(events, EVALUATION_CUTOFF), HORIZON_DAYS)


def test_training_never_reads_a_purchase_on_or_after_the_evaluation_cutoff(purchases: pd.DataFrame) -> None:
    """Rewriting every purchase from the evaluation cutoff on changes nothing the model learns or predicts."""
    original = train_and_predict(purchases)
    rewritten = train_and_predict(future_rewritten(purchases))
    np.testing.assert_array_equal(original, rewritten)
    assert np.all(original > 0)


def test_training_rows_refuse_a_target_window_that_ends_after_what_is_known(purchases: pd.DataFrame) -> None:
    late = cutoff_inputs(purchases, EVALUATION_CUTOFF - pd.Timedelta(days=10))
    with pytest.raises(ValueError, match="end after 2023-09-01"):
        training_rows([late], purchases, WINDOW_DAYS, known_until=EVALUATION_CUTOFF)


def test_folds_rehearse_the_extrapolation_inside_the_training_period() -> None:
    folds = value_time_folds(TRAINING_CUTOFFS, EVALUATION_CUTOFF, WINDOW_DAYS, HORIZON_DAYS, n_folds=2)
    assert len(folds) == 2
    for fold in folds:
        # Judged on the final model's window, fitted on windows shortened by the same ratio as the final step.
        assert fold.valid_window_days == WINDOW_DAYS
        assert fold.fit_window_days == max(7, round(WINDOW_DAYS * WINDOW_DAYS / HORIZON_DAYS))
        assert fold.valid_cutoff + pd.Timedelta(days=fold.valid_window_days) <= EVALUATION_CUTOFF
        assert all(c + pd.Timedelta(days=fold.fit_window_days) <= fold.valid_cutoff for c in fold.fit_cutoffs)
    assert (folds[1].valid_cutoff - folds[0].valid_cutoff).days >= 28


def test_folds_need_cutoffs_before_the_evaluation_window() -> None:
    with pytest.raises(ValueError, match="no time fold fits"):
        value_time_folds([EVALUATION_CUTOFF - pd.Timedelta(days=7)], EVALUATION_CUTOFF, WINDOW_DAYS, HORIZON_DAYS)


def test_model_ranks_future_spenders_and_forecasts_more_over_a_longer_horizon(purchases: pd.DataFrame) -> None:
    inputs = [cutoff_inputs(purchases, c) for c in TRAINING_CUTOFFS]
    rows = training_rows(inputs, purchases, WINDOW_DAYS, known_until=EVALUATION_CUTOFF)
    model, rounds = fit_value_model(rows, ValueModelParams(rounds=60, min_child_samples=50), seed=1)
    assert rounds == 60
    evaluation = cutoff_inputs(purchases, EVALUATION_CUTOFF)
    predicted = model.predict_at(evaluation, HORIZON_DAYS)
    realised = purchases.assign(event_day=pd.to_datetime(purchases["event_day"]))
    future = realised[realised["event_day"] >= EVALUATION_CUTOFF]
    spent = future.groupby("customer_id")["amount"].sum().reindex(evaluation.history.index, fill_value=0.0)
    assert spearman(spent.to_numpy(), predicted) > 0.3
    assert np.all(model.predict_at(evaluation, 2 * HORIZON_DAYS) > predicted)
