"""Evaluation measures a model the way the issue asks: metrics agree with references, the threshold follows its
objective, calibration is kept only when it helps, the retro-test summarises stability, and DeLong's paired test of
two AUCs agrees with sklearn and a paired bootstrap."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from scipy.stats import rankdata
from sklearn.metrics import average_precision_score, brier_score_loss, log_loss, roc_auc_score

from churnops.jobs.evaluate import (
    binary_metrics,
    choose_threshold,
    compare_aucs,
    fit_calibration,
    ks_statistic,
    select_calibration,
    stability,
)
from churnops.metrics import precision_at_top, recall_at_top
from churnops.postprocess import apply_calibration


def noisy_scores(n: int = 4000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    latent = rng.normal(size=n)
    labels = (latent + rng.normal(size=n) > 1.0).astype(int)
    return labels, 1 / (1 + np.exp(-(latent - 1.5)))


def test_metrics_agree_with_sklearn_and_scipy() -> None:
    labels, scores = noisy_scores()
    metrics = binary_metrics(labels, scores)
    assert metrics["roc_auc"] == pytest.approx(roc_auc_score(labels, scores))
    assert metrics["pr_auc"] == pytest.approx(average_precision_score(labels, scores))
    assert metrics["log_loss"] == pytest.approx(log_loss(labels, scores))
    assert metrics["brier"] == pytest.approx(brier_score_loss(labels, scores))
    assert metrics["ks"] == pytest.approx(stats.ks_2samp(scores[labels == 1], scores[labels == 0]).statistic)
    assert ks_statistic(labels, scores) == metrics["ks"]


def test_top_decile_precision_recall_and_lift_describe_the_campaign_list() -> None:
    labels, scores = noisy_scores()
    metrics = binary_metrics(labels, scores)
    top = np.argsort(-scores)[: len(scores) // 10]
    assert metrics["precision_at_10"] == pytest.approx(labels[top].mean())
    assert metrics["recall_at_10"] == pytest.approx(labels[top].sum() / labels.sum())
    assert metrics["lift_at_10"] == pytest.approx(labels[top].mean() / labels.mean())
    assert recall_at_top(labels, scores, 0.05) < metrics["recall_at_10"]


def test_threshold_for_a_top_fraction_budget_flags_that_share_of_customers() -> None:
    labels, scores = noisy_scores()
    threshold = choose_threshold(labels, scores, "top_fraction", top_fraction=0.05)
    assert np.mean(scores >= threshold) == pytest.approx(0.05, abs=0.001)


def test_threshold_for_f1_maximises_f1() -> None:
    labels, scores = noisy_scores()
    threshold = choose_threshold(labels, scores, "f1")

    def f1(t: float) -> float:
        flagged = scores >= t
        tp = (flagged & (labels == 1)).sum()
        return 2 * tp / (flagged.sum() + labels.sum())

    assert f1(threshold) >= max(f1(t) for t in np.quantile(scores, np.linspace(0.5, 0.99, 50)))


def test_calibration_is_chosen_when_scores_are_distorted_and_not_when_they_are_already_calibrated() -> None:
    rng = np.random.default_rng(3)
    true_probability = rng.uniform(0.02, 0.6, 6000)
    labels = (rng.random(6000) < true_probability).astype(int)
    calibration, briers = select_calibration(labels, true_probability, seed=0)
    assert calibration["method"] == "none"
    # Up-weighting positives (scale_pos_weight) inflates scores: calibration must win and fix the Brier score.
    inflated = true_probability**0.4
    calibration, briers = select_calibration(labels, inflated, seed=0)
    assert calibration["method"] in {"platt", "isotonic"}
    assert briers[calibration["method"]] < briers["none"]
    assert brier_score_loss(labels, apply_calibration(calibration, inflated)) < brier_score_loss(labels, inflated)


def test_calibration_maps_are_strictly_increasing_so_ranking_metrics_do_not_change() -> None:
    labels, scores = noisy_scores()
    # The map is fitted on one part of the scores and applied to all of them, including scores beyond the range it
    # was fitted on (as on a later cutoff whose customers are more predictable): isotonic steps are flat there and
    # inside each step, so a map that only never decreases would tie customers and lower the ROC AUC.
    fitted_on = (scores > np.quantile(scores, 0.05)) & (scores < np.quantile(scores, 0.95))
    for method in ("platt", "isotonic"):
        calibration = fit_calibration(labels[fitted_on], scores[fitted_on], method)
        mapped = apply_calibration(calibration, scores)
        assert np.all(np.diff(mapped[np.argsort(scores)]) > 0), method
        assert roc_auc_score(labels, mapped) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12), method
        assert precision_at_top(labels, mapped, 0.05) == precision_at_top(labels, scores, 0.05), method


def test_stability_reports_gini_spread_across_cutoffs() -> None:
    summary = stability({"2024-01-01": 0.50, "2024-02-01": 0.56, "2024-03-01": 0.53})
    assert summary["gini_spread"] == pytest.approx(0.06)
    assert summary["gini_mean"] == pytest.approx(0.53)
    assert summary["gini_std"] == pytest.approx(0.03)


def test_metrics_refuse_labels_with_a_single_class() -> None:
    with pytest.raises(ValueError, match="both classes"):
        binary_metrics(np.zeros(10), np.linspace(0, 1, 10))


def paired_scores(n: int, seed: int, first_strength: float, second_strength: float):
    """Labels and two models' probabilities sharing most of their noise (as two models of the same data do)."""
    rng = np.random.default_rng(seed)
    labels = (rng.random(n) < 0.3).astype(np.int64)
    shared = rng.normal(size=n)
    signal = labels - 0.3

    def probability(strength: float) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(1.0 - strength * signal - shared - 0.3 * rng.normal(size=n)))

    return labels, probability(first_strength), probability(second_strength)


def test_delong_aucs_equal_sklearns_including_tied_scores() -> None:
    labels, first, second = paired_scores(2000, seed=8, first_strength=2.0, second_strength=1.5)
    tied = np.round(second, 1)  # a handful of distinct values: many ties within and across classes
    comparison = compare_aucs(labels, first, tied)
    assert comparison.auc_first == pytest.approx(roc_auc_score(labels, first), abs=1e-12)
    assert comparison.auc_second == pytest.approx(roc_auc_score(labels, tied), abs=1e-12)


def _rank_sum_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Mann-Whitney's U over scipy's ranks: an AUC computed independently of `compare_aucs`."""
    positives = labels == 1
    m, n = positives.sum(), (~positives).sum()
    return float((rankdata(scores)[positives].sum() - m * (m + 1) / 2) / (m * n))


@pytest.mark.parametrize(("n", "seed"), [(3000, 9), (600, 10)])
def test_delong_standard_error_and_interval_match_a_paired_bootstrap(n: int, seed: int) -> None:
    labels, first, second = paired_scores(n, seed=seed, first_strength=2.0, second_strength=1.7)
    comparison = compare_aucs(labels, first, second)
    rng = np.random.default_rng(seed)
    differences = []
    for _ in range(1000):
        rows = rng.integers(0, n, n)
        if labels[rows].min() == labels[rows].max():
            continue
        differences.append(_rank_sum_auc(labels[rows], first[rows]) - _rank_sum_auc(labels[rows], second[rows]))
    bootstrap_se = float(np.std(differences, ddof=1))
    assert comparison.standard_error == pytest.approx(bootstrap_se, rel=0.1)
    low, high = np.quantile(differences, [0.025, 0.975])
    assert comparison.ci_low == pytest.approx(low, abs=0.25 * bootstrap_se)
    assert comparison.ci_high == pytest.approx(high, abs=0.25 * bootstrap_se)


def test_delong_refuses_labels_of_one_class() -> None:
    with pytest.raises(ValueError, match="both classes"):
        compare_aucs(np.ones(5), np.arange(5.0), np.arange(5.0))
