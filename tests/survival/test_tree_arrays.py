"""Trees evaluated with numpy give exactly LightGBM's raw scores: every split kind, missing values and categories."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pytest

from churnops.jobs.survival.bin_trees import _split_model_text
from churnops.jobs.survival.tree_arrays import as_read, predict_trees


def booster_with_every_split_kind(missing_as_zero: bool) -> tuple[lgb.Booster, np.ndarray]:
    """A booster on numeric columns with NaN, zeros and tiny values, and a categorical column with many categories
    (bitsets of more than one word), negative and missing categories; scored rows with the same oddities."""
    rng = np.random.default_rng(7)
    n = 4000
    numeric = rng.normal(size=(n, 3))
    numeric[rng.random(n) < 0.15, 0] = np.nan
    numeric[rng.random(n) < 0.2, 1] = 0.0
    numeric[rng.random(n) < 0.05, 2] = 1e-40  # read as 0 by LightGBM
    category = rng.integers(0, 70, size=n).astype(float)
    category[rng.random(n) < 0.05] = np.nan
    features = np.column_stack([numeric, category])
    target = np.nan_to_num(numeric[:, 0]) + (numeric[:, 1] == 0) + (category % 3 == 0) + rng.normal(scale=0.5, size=n)
    params = {
        "objective": "regression",
        "num_leaves": 7,
        "min_data_in_leaf": 20,
        "cat_smooth": 1,
        "min_data_per_group": 5,
        "max_cat_threshold": 64,
        "zero_as_missing": missing_as_zero,
        "verbosity": -1,
        "seed": 3,
    }
    booster = lgb.train(params, lgb.Dataset(features, target, categorical_feature=[3]), num_boost_round=40)
    scored = np.column_stack([rng.normal(size=(1500, 3)), rng.integers(-3, 90, size=1500).astype(float)])
    scored[::7, 0] = np.nan
    scored[::5, 1] = 0.0
    scored[::11, 1] = -1e-36
    scored[::13, 2] = np.nan
    scored[::9, 3] = np.nan
    scored[::17, 3] = -0.5  # truncated to category 0, as LightGBM's int cast does
    return booster, scored


@pytest.mark.parametrize("missing_as_zero", [False, True])
def test_numpy_trees_equal_lightgbm_raw_scores_bit_for_bit(missing_as_zero: bool) -> None:
    booster, scored = booster_with_every_split_kind(missing_as_zero)
    _, trees = _split_model_text(booster.model_to_string())
    assert trees is not None
    kinds = {int(d) & 1 for tree in trees for d in tree.decision_types}
    missing_types = {(int(d) >> 2) & 3 for tree in trees for d in tree.decision_types}
    assert kinds == {0, 1}  # numerical and categorical splits are both exercised
    assert missing_types >= ({1} if missing_as_zero else {2})

    columns = {feature: as_read(scored[:, feature]) for feature in range(scored.shape[1])}
    predicted = predict_trees([tree.arrays for tree in trees], columns.__getitem__, len(scored))
    expected = booster.predict(scored, raw_score=True)
    assert np.array_equal(predicted, expected)


def test_a_column_within_the_zero_threshold_is_read_as_zero() -> None:
    values = np.array([1e-36, -1e-36, 0.5, np.nan, -2.0])
    read = as_read(values)
    assert read[0] == 0.0 and read[1] == 0.0 and read[2] == 0.5 and np.isnan(read[3]) and read[4] == -2.0
    untouched = np.array([1.0, np.nan])
    assert as_read(untouched) is untouched


def test_a_column_with_one_value_in_every_row_may_be_given_as_a_float() -> None:
    """The bin start is one number per bin: the splits on it pick a side for all rows at once."""
    booster, scored = booster_with_every_split_kind(missing_as_zero=False)
    _, trees = _split_model_text(booster.model_to_string())
    assert trees is not None
    for constant in (-1.0, 0.0, 0.3, np.nan):
        scored[:, 0] = constant
        columns = {feature: as_read(scored[:, feature]) for feature in range(1, scored.shape[1])}

        def column(feature: int, columns: dict = columns, constant: float = constant) -> np.ndarray | float:
            return constant if feature == 0 else columns[feature]

        predicted = predict_trees([tree.arrays for tree in trees], column, len(scored))
        assert np.array_equal(predicted, booster.predict(scored, raw_score=True))
