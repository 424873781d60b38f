"""Every value metric against hand-computed figures on tiny data, ties, and the shared bootstrap resamples."""

from __future__ import annotations

import numpy as np
import pytest

from churnops.jobs.value.metrics import (
    METRIC_NAMES,
    bootstrap_metrics,
    mae,
    normalized_gini,
    revenue_capture,
    rmse,
    spearman,
    total_ratio,
    value_metrics,
)

# Four customers: two spent nothing, one $10, one $30; the model ranks the $10 one first.
ACTUAL = np.array([0.0, 10.0, 0.0, 30.0])
PREDICTED = np.array([0.1, 0.4, 0.2, 0.3])


def test_spearman_uses_average_ranks_for_tied_values() -> None:
    # Ranks: actual (1.5, 3, 1.5, 4), predicted (1, 4, 2, 3); deviations from 2.5 give
    # sum of products 3.5, sums of squares 4.5 and 5: 3.5 / sqrt(22.5).
    assert spearman(ACTUAL, PREDICTED) == pytest.approx(3.5 / np.sqrt(22.5))


def test_spearman_of_a_constant_prediction_is_undefined() -> None:
    assert np.isnan(spearman(ACTUAL, np.zeros(4)))


def test_revenue_capture_is_the_share_of_value_in_the_top_of_the_list() -> None:
    assert revenue_capture(ACTUAL, PREDICTED, 0.25) == pytest.approx(10 / 40)  # top 1: the $10 customer
    assert revenue_capture(ACTUAL, PREDICTED, 0.50) == pytest.approx(40 / 40)  # top 2: $10 and $30
    assert revenue_capture(ACTUAL, ACTUAL, 0.25) == pytest.approx(30 / 40)  # the oracle takes the $30 first


def test_revenue_capture_counts_a_tie_across_the_boundary_at_its_mean() -> None:
    """Whichever order a sort gives tied customers, the tie counts at its mean: 1 place of a 4-way tie worth $10."""
    tied = np.ones(4)
    assert revenue_capture(np.array([10.0, 0.0, 0.0, 0.0]), tied, 0.25) == pytest.approx(0.25)
    assert revenue_capture(np.array([0.0, 0.0, 0.0, 10.0]), tied, 0.25) == pytest.approx(0.25)


def test_normalized_gini_is_the_lorenz_area_over_the_perfect_orders() -> None:
    # Model order ($10, $30, 0, 0): cumulative shares (.25, 1, 1, 1) minus (.25, .5, .75, 1) -> mean 0.1875.
    # Perfect order ($30, $10, 0, 0): (.75, 1, 1, 1) minus the same -> mean 0.3125.
    assert normalized_gini(ACTUAL, PREDICTED) == pytest.approx(0.1875 / 0.3125)
    assert normalized_gini(ACTUAL, ACTUAL) == pytest.approx(1.0)
    assert normalized_gini(ACTUAL, -ACTUAL) < 0
    assert normalized_gini(ACTUAL, np.ones(4)) == pytest.approx(0.0)  # one tie: no ranking at all


def test_mae_rmse_and_total_ratio_by_hand() -> None:
    # Errors: -0.1, 9.6, -0.2, 29.7.
    assert mae(ACTUAL, PREDICTED) == pytest.approx(39.6 / 4)
    assert rmse(ACTUAL, PREDICTED) == pytest.approx(np.sqrt((0.01 + 92.16 + 0.04 + 882.09) / 4))
    assert total_ratio(ACTUAL, PREDICTED) == pytest.approx(1.0 / 40)


def test_value_metrics_reports_every_metric_consistently_with_the_single_functions() -> None:
    metrics = value_metrics(ACTUAL, PREDICTED)
    assert tuple(metrics) == METRIC_NAMES
    assert metrics["spearman"] == pytest.approx(spearman(ACTUAL, PREDICTED))
    assert metrics["capture_top_10"] == pytest.approx(revenue_capture(ACTUAL, PREDICTED, 0.10))
    assert metrics["capture_top_20"] == pytest.approx(revenue_capture(ACTUAL, PREDICTED, 0.20))
    assert metrics["normalized_gini"] == pytest.approx(normalized_gini(ACTUAL, PREDICTED))
    assert metrics["mae"] == pytest.approx(mae(ACTUAL, PREDICTED))


def test_metrics_refuse_mismatched_or_missing_values() -> None:
    with pytest.raises(ValueError, match="one length"):
        value_metrics(ACTUAL, PREDICTED[:3])
    with pytest.raises(ValueError, match="finite"):
        value_metrics(ACTUAL, np.array([0.1, np.nan, 0.2, 0.3]))
    with pytest.raises(ValueError, match="fraction"):
        revenue_capture(ACTUAL, PREDICTED, 1.5)


def test_bootstrap_scores_every_model_on_the_same_resamples() -> None:
    rng = np.random.default_rng(0)
    actual = rng.gamma(0.3, 50.0, 400) * (rng.random(400) < 0.4)
    good = actual + rng.normal(0, 5, 400)
    predictions = {"good": good, "copy": good.copy(), "noise": rng.random(400)}
    result = bootstrap_metrics(actual, predictions, 200, seed=3, reference="good")
    # Identical predictions scored on identical resamples get identical intervals, metric by metric, and their
    # paired difference is exactly zero in every resample.
    for metric in METRIC_NAMES:
        assert result.estimates["good"][metric] == result.estimates["copy"][metric]
        assert (result.differences["copy"][metric].low, result.differences["copy"][metric].high) == (0.0, 0.0)
    # The point estimate is the metric on all customers, and it lies inside its interval.
    estimate = result.estimates["good"]["spearman"]
    assert estimate.value == pytest.approx(spearman(actual, good))
    assert estimate.low <= estimate.value <= estimate.high
    assert result.estimates["noise"]["spearman"].high < estimate.low
    ahead = result.differences["noise"]["spearman"]
    assert ahead.value == pytest.approx(estimate.value - result.estimates["noise"]["spearman"].value)
    assert ahead.low > 0
    assert "good" not in result.differences


def test_bootstrap_refuses_a_reference_that_is_not_a_prediction() -> None:
    with pytest.raises(ValueError, match="reference 'model'"):
        bootstrap_metrics(ACTUAL, {"m": PREDICTED}, 10, reference="model")


def test_bootstrap_is_reproducible_from_its_seed() -> None:
    actual = np.arange(50, dtype=float)
    predicted = actual[::-1].copy()
    first = bootstrap_metrics(actual, {"m": predicted}, 50, seed=7)
    assert first == bootstrap_metrics(actual, {"m": predicted}, 50, seed=7)
    assert first != bootstrap_metrics(actual, {"m": predicted}, 50, seed=8)
