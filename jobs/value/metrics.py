"""How well predicted customer values match the values customers then spent: plain functions of two arrays.

- `spearman`: rank correlation (average ranks for ties); NaN when either side is constant (e.g. predicting $0).
- `revenue_capture`: the share of all realised value held by the top `fraction` of customers by prediction.
- `normalized_gini`: the Gini of the realised values ordered by prediction, over the Gini of the perfect order.
- `mae`, `rmse`: in the value's own unit (dollars).
- `total_ratio`: predicted total over realised total (1 = right in the large). MAE is lowest at each customer's
  median, which is $0 for most customers, so a forecast that under-predicts the total can have the lower MAE;
  this column shows when that is the case.

Capture and Gini depend on the order of customers, and a model often ties many of them (a rule giving everyone
without a purchase the same value). The order inside a tie is not the model's: both count a tied group at its
mean realised value, which is the expectation over every order of the tie, so no metric rewards how a sort happens
to break ties. `bootstrap_metrics` draws the customer resamples once and scores every model on the same ones, so
the intervals of two models are comparable.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from scipy import stats

TOP_FRACTIONS = ((0.10, "10"), (0.20, "20"))
METRIC_NAMES = ("spearman", "capture_top_10", "capture_top_20", "normalized_gini", "mae", "rmse", "total_ratio")


def _arrays(actual: np.ndarray, predicted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    actual, predicted = np.asarray(actual, dtype=np.float64), np.asarray(predicted, dtype=np.float64)
    if actual.shape != predicted.shape or actual.ndim != 1:
        raise ValueError(
            f"actual and predicted must be 1-d and of one length; got {actual.shape} and {predicted.shape}"
        )
    if len(actual) == 0:
        raise ValueError("no customers to evaluate: actual and predicted are empty")
    if not (np.isfinite(actual).all() and np.isfinite(predicted).all()):
        raise ValueError("actual and predicted values must be finite numbers (found NaN or infinity)")
    return actual, predicted


def _actual_in_predicted_order(actual: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """Realised values sorted by prediction, highest first, each tied group replaced by its mean."""
    order = np.argsort(-predicted, kind="stable")
    sorted_predicted, sorted_actual = predicted[order], actual[order]
    starts = np.flatnonzero(np.r_[True, sorted_predicted[1:] != sorted_predicted[:-1]])
    sizes = np.diff(np.r_[starts, len(actual)])
    return np.repeat(np.add.reduceat(sorted_actual, starts) / sizes, sizes)


def spearman(actual: np.ndarray, predicted: np.ndarray) -> float:
    """Spearman rank correlation with average ranks for ties; NaN if either array is constant."""
    actual, predicted = _arrays(actual, predicted)
    return _pearson(stats.rankdata(actual), stats.rankdata(predicted))


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    x, y = x - x.mean(), y - y.mean()
    norm = np.sqrt(np.dot(x, x) * np.dot(y, y))
    return float(np.dot(x, y) / norm) if norm > 0 else float("nan")


def revenue_capture(actual: np.ndarray, predicted: np.ndarray, fraction: float) -> float:
    """Share of the total realised value held by the top `fraction` of customers by prediction (round(n *
    fraction) customers, at least one); a tie across the boundary contributes its mean value per place."""
    actual, predicted = _arrays(actual, predicted)
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1]; got {fraction}")
    total = actual.sum()
    if total <= 0:
        return float("nan")
    k = max(1, int(round(len(actual) * fraction)))
    return float(_actual_in_predicted_order(actual, predicted)[:k].sum() / total)


def _gini(ordered_actual: np.ndarray) -> float:
    """Area between the cumulative share of value (customers in the given order) and the diagonal, over n."""
    n = len(ordered_actual)
    cumulative_share = np.cumsum(ordered_actual) / ordered_actual.sum()
    return float(np.mean(cumulative_share - np.arange(1, n + 1) / n))


def normalized_gini(actual: np.ndarray, predicted: np.ndarray) -> float:
    """Gini of the realised values in predicted order over the Gini of the perfect order (1 = perfect ranking,
    0 = no better than random); NaN when every realised value is the same or their sum is not positive."""
    actual, predicted = _arrays(actual, predicted)
    if actual.sum() <= 0 or actual.min() == actual.max():
        return float("nan")
    best = _gini(np.sort(actual)[::-1])
    return _gini(_actual_in_predicted_order(actual, predicted)) / best


def mae(actual: np.ndarray, predicted: np.ndarray) -> float:
    actual, predicted = _arrays(actual, predicted)
    return float(np.mean(np.abs(actual - predicted)))


def rmse(actual: np.ndarray, predicted: np.ndarray) -> float:
    actual, predicted = _arrays(actual, predicted)
    return float(np.sqrt(np.mean((actual - predicted) ** 2)))


def total_ratio(actual: np.ndarray, predicted: np.ndarray) -> float:
    """Sum of predictions over sum of realised values; NaN when nothing was realised."""
    actual, predicted = _arrays(actual, predicted)
    total = actual.sum()
    return float(predicted.sum() / total) if total > 0 else float("nan")


def value_metrics(actual: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """Every value metric (`METRIC_NAMES`) of one prediction."""
    actual, predicted = _arrays(actual, predicted)
    return _metrics(actual, predicted, stats.rankdata(actual))


def _metrics(actual: np.ndarray, predicted: np.ndarray, actual_ranks: np.ndarray) -> dict[str, float]:
    ordered = _actual_in_predicted_order(actual, predicted)
    total = actual.sum()
    metrics = {"spearman": _pearson(actual_ranks, stats.rankdata(predicted))}
    for fraction, name in TOP_FRACTIONS:
        k = max(1, int(round(len(actual) * fraction)))
        metrics[f"capture_top_{name}"] = float(ordered[:k].sum() / total) if total > 0 else float("nan")
    spread = total > 0 and actual.min() < actual.max()
    metrics["normalized_gini"] = _gini(ordered) / _gini(np.sort(actual)[::-1]) if spread else float("nan")
    errors = actual - predicted
    metrics["mae"] = float(np.mean(np.abs(errors)))
    metrics["rmse"] = float(np.sqrt(np.mean(errors**2)))
    metrics["total_ratio"] = float(predicted.sum() / total) if total > 0 else float("nan")
    return metrics


@dataclass(frozen=True)
class MetricEstimate:
    """A metric on all customers and its bootstrap percentile interval."""

    value: float
    low: float
    high: float


@dataclass(frozen=True)
class Bootstrap:
    """Every metric of every prediction with its interval, and each prediction's paired difference to a reference."""

    estimates: dict[str, dict[str, MetricEstimate]]
    # differences[name][metric]: metric(reference) - metric(name), point and interval over the same resamples.
    differences: dict[str, dict[str, MetricEstimate]]


def _interval(draws: np.ndarray, value: float, level: float) -> MetricEstimate:
    tail = (1 - level) / 2 * 100
    finite = draws[np.isfinite(draws)]
    low, high = np.percentile(finite, [tail, 100 - tail]) if len(finite) else (np.nan, np.nan)
    return MetricEstimate(value=value, low=float(low), high=float(high))


def bootstrap_metrics(
    actual: np.ndarray,
    predictions: Mapping[str, np.ndarray],
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    reference: str | None = None,
) -> Bootstrap:
    """Every metric of every named prediction with a percentile bootstrap interval at `level`.

    Resample i draws the same customers (with replacement, seeded) for every model, so two models are measured on
    identical data. With `reference` (one of the names), each other prediction also gets the paired difference
    metric(reference) - metric(it), whose interval is what says whether the reference is really ahead.
    """
    if n_resamples < 1 or not 0 < level < 1:
        raise ValueError(f"need n_resamples >= 1 and 0 < level < 1; got {n_resamples}, {level}")
    if reference is not None and reference not in predictions:
        raise ValueError(f"reference {reference!r} is not one of the predictions {list(predictions)}")
    actual = np.asarray(actual, dtype=np.float64)
    arrays = {name: _arrays(actual, p)[1] for name, p in predictions.items()}
    draws = {name: {m: np.empty(n_resamples) for m in METRIC_NAMES} for name in arrays}
    rng = np.random.default_rng(seed)
    for i in range(n_resamples):
        rows = rng.integers(0, len(actual), len(actual))
        sample, sample_ranks = actual[rows], stats.rankdata(actual[rows])
        for name, predicted in arrays.items():
            for metric, value in _metrics(sample, predicted[rows], sample_ranks).items():
                draws[name][metric][i] = value
    points = {name: value_metrics(actual, predicted) for name, predicted in arrays.items()}
    estimates = {name: {m: _interval(draws[name][m], points[name][m], level) for m in METRIC_NAMES} for name in arrays}
    differences: dict[str, dict[str, MetricEstimate]] = {}
    if reference is not None:
        for name in (n for n in arrays if n != reference):
            differences[name] = {
                m: _interval(draws[reference][m] - draws[name][m], points[reference][m] - points[name][m], level)
                for m in METRIC_NAMES
            }
    return Bootstrap(estimates=estimates, differences=differences)
