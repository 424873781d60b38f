"""The boosted hazard model learns purchase timing under censoring, and out-of-time training never sees the
evaluation period."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from churnops.features import CUTOFF, ENTITY_ID
from churnops.jobs.survival import bin_trees
from churnops.jobs.survival.bin_trees import BinTrees
from churnops.jobs.survival.boosting import REPORTED_HORIZONS_DAYS, HazardBoostingModel, fit_hazard_model
from churnops.jobs.survival.data import DURATION, EVENT, out_of_time_targets, survival_frame
from churnops.jobs.survival.hazard import TimeBins, all_bins_inputs
from churnops.jobs.survival.metrics import harrell_c_index
from churnops.jobs.survival.tune import time_folds
from churnops.schema import FeatureSchema

PARAMS = {"learning_rate": 0.1, "num_leaves": 7, "min_child_samples": 50, "seed": 1}
BINS = TimeBins.regular(15, 45)


def simulated(n: int, seed: int, follow_up: int = 60) -> tuple[pd.DataFrame, np.ndarray]:
    """Customers whose daily purchase rate falls with recency; every follow-up ends after `follow_up` days."""
    rng = np.random.default_rng(seed)
    recency = rng.integers(1, 120, size=n).astype(float)
    noise = rng.normal(size=n)
    rate = 0.04 * np.exp(-recency / 40)
    times = np.ceil(rng.exponential(1 / rate))
    frame = pd.DataFrame(
        {
            "days_since_last_event": recency,
            "noise": noise,
            DURATION: np.minimum(times, follow_up).astype(int),
            EVENT: (times <= follow_up).astype(int),
        }
    )
    return frame, rate


def test_model_ranks_customers_by_their_true_rate_and_matches_the_true_probabilities() -> None:
    train, _ = simulated(4000, seed=1)
    test, rate = simulated(2000, seed=2)
    schema = FeatureSchema.fit(train, ["days_since_last_event", "noise"], [])
    model, rounds = fit_hazard_model(train, schema, BINS, PARAMS, 60)
    assert rounds == 60 and model.horizon_days == 60
    outputs = model.predict_customers(test)
    assert list(outputs.columns) == [
        *(f"p_buy_{t}d" for t in REPORTED_HORIZONS_DAYS),
        "median_days_to_next_purchase",
        "median_beyond_horizon",
    ]
    truth_30 = 1 - np.exp(-rate * 30)
    np.testing.assert_allclose(outputs["p_buy_30d"].mean(), truth_30.mean(), atol=0.02)
    assert np.corrcoef(outputs["p_buy_30d"], truth_30)[0, 1] > 0.9
    risk = outputs["p_buy_30d"].to_numpy()
    assert harrell_c_index(test[DURATION], test[EVENT], risk) > harrell_c_index(test[DURATION], test[EVENT], -risk)
    # Everyone's true median (ln 2 / rate >= 17 days) is near or past 60 days: most are beyond the horizon.
    assert outputs["median_beyond_horizon"].mean() > 0.5
    assert outputs["p_buy_30d"].le(outputs["p_buy_90d"]).all() and outputs["p_buy_90d"].le(outputs["p_buy_180d"]).all()


def test_censored_customers_are_not_treated_as_non_buyers() -> None:
    """Half the customers are followed 10 days only. Dropping them or treating them as non-buyers would bias
    P(buy by 30 days); the model, which sees them as at risk for 10 days, stays close to the truth."""
    frame, rate = simulated(6000, seed=3)
    short = np.arange(len(frame)) % 2 == 0
    cut = short & (frame[DURATION] > 10)
    frame.loc[cut, DURATION], frame.loc[cut, EVENT] = 10, 0
    schema = FeatureSchema.fit(frame, ["days_since_last_event"], [])
    model, _ = fit_hazard_model(frame, schema, BINS, PARAMS, 60)
    predicted = model.predict_customers(frame)["p_buy_30d"].mean()
    assert predicted == pytest.approx((1 - np.exp(-rate * 30)).mean(), abs=0.02)


def purchase_log(after_evaluation: list[tuple[str, str]]) -> pd.DataFrame:
    before = [("a", "2024-01-05"), ("a", "2024-02-20"), ("b", "2024-01-10"), ("c", "2024-02-01"), ("c", "2024-03-25")]
    rows = before + after_evaluation
    return pd.DataFrame({ENTITY_ID: [r[0] for r in rows], "event_day": [dt.date.fromisoformat(r[1]) for r in rows]})


def recency_features(events: pd.DataFrame, cutoffs: list[dt.date]) -> pd.DataFrame:
    frames = []
    for cutoff in cutoffs:
        seen = events[events["event_day"] < cutoff]
        last = seen.groupby(ENTITY_ID)["event_day"].max()
        recency = [(cutoff - d).days for d in last]
        frames.append(
            pd.DataFrame({ENTITY_ID: last.index, CUTOFF: pd.Timestamp(cutoff), "days_since_last_event": recency})
        )
    return pd.concat(frames, ignore_index=True)


def test_training_never_sees_an_event_on_or_after_the_evaluation_cutoff() -> None:
    evaluation_cutoff = dt.date(2024, 4, 1)
    cutoffs = [dt.date(2024, 1, 20), dt.date(2024, 2, 10), dt.date(2024, 3, 1)]
    quiet = purchase_log([])
    busy = purchase_log([("a", "2024-04-01"), ("b", "2024-04-02"), ("c", "2024-05-01"), ("b", "2024-06-30")])
    frames = [
        survival_frame(recency_features(log, cutoffs), out_of_time_targets(log, cutoffs, evaluation_cutoff))
        for log in (quiet, busy)
    ]
    pd.testing.assert_frame_equal(frames[0], frames[1])
    last_day = pd.to_datetime(frames[1][CUTOFF]) + pd.to_timedelta(frames[1][DURATION] - 1, unit="D")
    assert (last_day < pd.Timestamp(evaluation_cutoff)).all()
    # Inside the window: a's purchase on 02-20 (from two cutoffs) and c's on 03-25 (from two); after it, nothing.
    assert frames[1][EVENT].sum() == 4
    fold = time_folds(frames[1], [dt.date(2024, 3, 1)])[0]
    fold_last = pd.to_datetime(fold.train[CUTOFF]) + pd.to_timedelta(fold.train[DURATION] - 1, unit="D")
    assert (fold_last < pd.Timestamp("2024-03-01")).all()
    schema = FeatureSchema.fit(frames[0], ["days_since_last_event"], [])
    params = {**PARAMS, "min_child_samples": 1, "min_data_in_bin": 1}
    models = [fit_hazard_model(f, schema, BINS, params, 5)[0] for f in frames]
    np.testing.assert_array_equal(models[0].rates(frames[0]), models[1].rates(frames[0]))


def test_training_cutoffs_on_or_after_the_evaluation_cutoff_are_refused() -> None:
    with pytest.raises(ValueError, match="not before the evaluation cutoff"):
        out_of_time_targets(purchase_log([]), [dt.date(2024, 4, 1)], dt.date(2024, 4, 1))


def test_rates_predicted_bin_by_bin_equal_the_booster_on_every_customer_in_every_bin() -> None:
    """Scoring rewrites one matrix per bin instead of building customers x bins rows, and evaluates a tree only in
    the bins it can tell apart: the same inputs and leaves, summed in another order (equal to rounding), including
    the time-since columns advanced to each bin's start."""
    train, _ = simulated(2000, seed=3)
    test, _ = simulated(500, seed=4)
    schema = FeatureSchema.fit(train, ["days_since_last_event", "noise"], [])
    model, _ = fit_hazard_model(train, schema, BINS, PARAMS, 20)
    assert model.shifted  # the advanced columns are part of what is checked
    np.testing.assert_allclose(model.rates(test), whole_booster_rates(model, test), rtol=1e-12, atol=0)


def whole_booster_rates(model: HazardBoostingModel, frame: pd.DataFrame) -> np.ndarray:
    """Every tree of the booster on every customer in every bin: what `rates` must equal."""
    shifted = [model.schema.columns.index(column) for column in model.shifted]
    every_bin = all_bins_inputs(model.schema.encode_frame(frame), model.bins, shifted)
    expected = np.exp(model.base_log_rate + model.booster.predict(every_bin, raw_score=True))
    return expected.reshape(len(frame), len(model.bins))


def test_rates_equal_the_whole_booster_with_missing_recency_many_bins_and_early_stopping() -> None:
    """The bins a tree cannot tell apart depend on the range of the advanced columns in the scored rows; customers
    with no recency at all (NaN), many bins and a booster cut at its best iteration must not change the numbers."""
    train, _ = simulated(3000, seed=5, follow_up=200)
    valid, _ = simulated(1000, seed=6, follow_up=200)
    test, _ = simulated(800, seed=7, follow_up=200)
    test.loc[test.index % 7 == 0, "days_since_last_event"] = np.nan
    schema = FeatureSchema.fit(train, ["days_since_last_event", "noise"], [])
    model, rounds = fit_hazard_model(train, schema, TimeBins.regular(10, 190), PARAMS, 300, valid, 5)
    assert rounds < 300  # stopped early
    np.testing.assert_allclose(model.rates(test), whole_booster_rates(model, test), rtol=1e-12, atol=0)
    for narrow in (
        test.iloc[:1],
        test[test["days_since_last_event"] > 100],
        test[test["days_since_last_event"].isna()],
    ):
        np.testing.assert_allclose(model.rates(narrow), whole_booster_rates(model, narrow), rtol=1e-12, atol=0)


def test_rates_predicted_in_blocks_of_close_recency_equal_the_whole_booster(monkeypatch: pytest.MonkeyPatch) -> None:
    """A large list is predicted in blocks of close values of the advanced columns (narrower ranges, fewer bins
    per tree); small blocks here make a 1,200-row list go through that path."""
    monkeypatch.setattr(bin_trees, "ROWS_PER_BLOCK", 100)
    train, _ = simulated(3000, seed=10, follow_up=200)
    test, _ = simulated(1200, seed=11, follow_up=200)
    test.loc[test.index % 5 == 0, "days_since_last_event"] = np.nan
    schema = FeatureSchema.fit(train, ["days_since_last_event", "noise"], [])
    model, _ = fit_hazard_model(train, schema, TimeBins.regular(10, 190), PARAMS, 60)
    order, blocks = bin_trees.row_blocks(schema.encode_frame(test)[:, [0]])
    assert len(blocks) == bin_trees.SPLITS_PER_COLUMN and sorted(order) == list(range(len(test)))
    np.testing.assert_allclose(model.rates(test), whole_booster_rates(model, test), rtol=1e-12, atol=0)


def test_every_tree_counts_once_in_every_bin_and_trees_blind_to_the_bins_are_evaluated_once() -> None:
    train, _ = simulated(2000, seed=8, follow_up=200)
    schema = FeatureSchema.fit(train, ["days_since_last_event", "noise"], [])
    bins = TimeBins.regular(15, 180)
    model, _ = fit_hazard_model(train, schema, bins, PARAMS, 40)
    bin_feature = len(schema.columns)
    trees = BinTrees.of(model.booster, bin_feature)
    assert trees is not None
    groups = trees.groups(bins.starts, {bin_feature + 1: (1.0, 119.0)})
    per_bin = [sum(len(group.trees) for group in groups if k in group.bins) for k in range(len(bins))]
    assert per_bin == [model.booster.num_trees()] * len(bins)
    evaluated = sum(len(group.trees) for group in groups)
    assert evaluated < model.booster.num_trees() * len(bins)
    blind = fit_hazard_model(train, schema, bins, PARAMS, 40, advance_time_since=False)[0]
    # Without advanced columns and with the bin start dropped by a constant input, every tree is evaluated once.
    constant_start = BinTrees.of(blind.booster, bin_feature=-1)
    assert constant_start is not None
    assert sum(len(g.trees) for g in constant_start.groups(bins.starts, {})) == blind.booster.num_trees()


def test_a_booster_that_is_not_a_plain_sum_of_trees_is_predicted_whole_in_every_bin() -> None:
    train, _ = simulated(2000, seed=9)
    schema = FeatureSchema.fit(train, ["days_since_last_event", "noise"], [])
    model, _ = fit_hazard_model(train, schema, BINS, {**PARAMS, "linear_tree": True}, 10)
    assert BinTrees.of(model.booster, len(schema.columns)) is None
    np.testing.assert_allclose(model.rates(train), whole_booster_rates(model, train), rtol=1e-12, atol=0)


def test_predictions_of_a_frame_are_the_same_in_one_call_in_batches_and_on_one_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Spark predicts a list batch by batch on one core per task (`score_spark_columns`), the pandas path the whole
    frame on every core: each row's columns depend on that row only (up to the float rounding of the trees' sum in
    another order), and the number of threads changes nothing."""
    monkeypatch.setattr(bin_trees, "ROWS_PER_BLOCK", 150)  # several blocks per call, as a large list has
    train, _ = simulated(3000, seed=11, follow_up=200)
    test, _ = simulated(1500, seed=12, follow_up=200)
    test.loc[test.index % 9 == 0, "days_since_last_event"] = np.nan
    schema = FeatureSchema.fit(train, ["days_since_last_event", "noise"], [])
    model, _ = fit_hazard_model(train, schema, TimeBins.regular(10, 190), PARAMS, 80)
    whole = model.predict_customers(test)
    batched = pd.concat([model.predict_customers(test.iloc[i : i + 400], threads=1) for i in range(0, 1500, 400)])
    pd.testing.assert_frame_equal(model.predict_customers(test, threads=1), whole, check_exact=True)
    assert batched["median_beyond_horizon"].tolist() == whole["median_beyond_horizon"].tolist()
    numbers = [column for column in whole.columns if column != "median_beyond_horizon"]
    np.testing.assert_allclose(batched[numbers].to_numpy(), whole[numbers].to_numpy(), rtol=1e-12, atol=0)
    assert whole["median_days_to_next_purchase"].notna().any() and whole["median_beyond_horizon"].any()
