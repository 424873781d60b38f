"""Evaluation of binary churn/propensity scores: metrics, the decision threshold, calibration and stability.

Plain functions of (labels, scores) arrays, so training, the promotion gate, the report and realized-performance
monitoring all measure a model the same way. `compare_aucs` is DeLong's test of two models' ROC AUCs on the same
rows, which the promotion gate uses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any, Literal

import numpy as np
from sklearn.metrics import average_precision_score, brier_score_loss, log_loss, roc_auc_score

from churnops.metrics import precision_at_top, recall_at_top, top_indices
from churnops.postprocess import apply_calibration

TOP_FRACTIONS = ((0.05, "5"), (0.10, "10"))
ThresholdObjective = Literal["f1", "top_fraction"]
CalibrationMethod = Literal["none", "platt", "isotonic"]
# Share of the raw score mixed into an isotonic map so it is strictly increasing: a calibration must never reorder
# (or tie) customers, or it would change the ROC AUC the model was selected for. It moves a probability by at most
# this much. Without it, every score above the fitted range maps to the same value (docs/model-selection.md).
ISOTONIC_TIE_BREAK_WEIGHT = 1e-4


def ks_statistic(labels: np.ndarray, scores: np.ndarray) -> float:
    """Kolmogorov-Smirnov distance between the score distributions of positives and negatives."""
    labels, scores = np.asarray(labels), np.asarray(scores, dtype=np.float64)
    grid = np.unique(scores)
    positives = np.searchsorted(np.sort(scores[labels == 1]), grid, side="right") / (labels == 1).sum()
    negatives = np.searchsorted(np.sort(scores[labels == 0]), grid, side="right") / (labels == 0).sum()
    return float(np.max(np.abs(positives - negatives)))


def binary_metrics(labels: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """ROC AUC, Gini, PR AUC, log loss, Brier, KS and precision/recall/lift at the top 5 % and 10 %."""
    labels = np.asarray(labels, dtype=np.int64)
    scores = np.asarray(scores, dtype=np.float64)
    if labels.min() == labels.max():
        raise ValueError("evaluation needs both classes among the labels; got only one")
    auc = float(roc_auc_score(labels, scores))
    base_rate = float(labels.mean())
    metrics = {
        "roc_auc": auc,
        "gini": 2 * auc - 1,
        "pr_auc": float(average_precision_score(labels, scores)),
        "log_loss": float(log_loss(labels, np.clip(scores, 1e-7, 1 - 1e-7), labels=[0, 1])),
        "brier": float(brier_score_loss(labels, np.clip(scores, 0.0, 1.0))),
        "ks": ks_statistic(labels, scores),
        "base_rate": base_rate,
        "n": float(len(labels)),
    }
    for fraction, name in TOP_FRACTIONS:
        precision = precision_at_top(labels, scores, fraction)
        metrics[f"precision_at_{name}"] = precision
        metrics[f"recall_at_{name}"] = recall_at_top(labels, scores, fraction)
        metrics[f"lift_at_{name}"] = precision / base_rate
    return metrics


def f1_threshold(labels: np.ndarray, scores: np.ndarray) -> float:
    """The score threshold that maximises F1 on the given (validation) predictions."""
    order = np.argsort(-scores, kind="stable")
    sorted_scores, sorted_labels = scores[order], labels[order]
    true_pos = np.cumsum(sorted_labels)
    predicted_pos = np.arange(1, len(scores) + 1)
    f1 = 2 * true_pos / (predicted_pos + labels.sum())
    return float(sorted_scores[int(np.argmax(f1))])


def choose_threshold(
    labels: np.ndarray, scores: np.ndarray, objective: ThresholdObjective = "f1", top_fraction: float = 0.10
) -> float:
    """The decision threshold for a configured objective, chosen on validation predictions.

    `f1`: maximise F1. `top_fraction`: a campaign budget — flag the top `top_fraction` of customers, so the
    threshold is the score of the last customer inside that budget on the validation list.
    """
    if objective == "f1":
        return f1_threshold(np.asarray(labels), np.asarray(scores))
    if objective == "top_fraction":
        scores = np.asarray(scores)
        return float(scores[top_indices(scores, top_fraction)[-1]])
    raise ValueError(f"unknown threshold objective {objective!r}; use 'f1' or 'top_fraction'")


def fit_calibration(labels: np.ndarray, scores: np.ndarray, method: CalibrationMethod) -> dict[str, Any]:
    """Fit a calibration map on (labels, scores); the result is JSON stored with the model and applied by
    `churnops.postprocess.apply_calibration`."""
    if method == "none":
        return {"method": "none"}
    if method == "platt":
        from sklearn.linear_model import LogisticRegression

        clipped = np.clip(scores, 1e-7, 1 - 1e-7)
        logit = np.log(clipped / (1 - clipped)).reshape(-1, 1)
        model = LogisticRegression(C=1e6, max_iter=1000).fit(logit, labels)
        return {"method": "platt", "slope": float(model.coef_[0, 0]), "intercept": float(model.intercept_[0])}
    if method == "isotonic":
        from sklearn.isotonic import IsotonicRegression

        model = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(scores, labels)
        return {
            "method": "isotonic",
            "x": [float(v) for v in model.X_thresholds_],
            "y": [float(v) for v in model.y_thresholds_],
            "tie_break_weight": ISOTONIC_TIE_BREAK_WEIGHT,
        }
    raise ValueError(f"unknown calibration method {method!r}")


def select_calibration(labels: np.ndarray, scores: np.ndarray, seed: int) -> tuple[dict[str, Any], dict[str, float]]:
    """Choose none / Platt / isotonic by cross-fitted Brier score on validation predictions, then refit the winner
    on all of them. Returns (calibration, Brier per method).

    Two halves: each method is fitted on one half and scored on the other, both ways round, so a map is never
    judged on the rows it was fitted on. Calibration is kept only if it beats the raw scores there. The caller
    passes out-of-fold predictions from the training period: choosing on the out-of-time data would leak it into
    the model.
    """
    labels, scores = np.asarray(labels), np.asarray(scores, dtype=np.float64)
    halves = np.random.default_rng(seed).permutation(len(labels)) % 2 == 0
    briers: dict[str, float] = {}
    for method in ("none", "platt", "isotonic"):
        squared = 0.0
        for fit_half in (halves, ~halves):
            calibration = fit_calibration(labels[fit_half], scores[fit_half], method)  # type: ignore[arg-type]
            mapped = apply_calibration(calibration, scores[~fit_half])
            squared += float(np.sum((mapped - labels[~fit_half]) ** 2))
        briers[method] = squared / len(labels)
    best = min(briers, key=lambda m: (briers[m], m != "none"))
    return fit_calibration(labels, scores, best), briers  # type: ignore[arg-type]


def stability(gini_by_cutoff: dict[str, float]) -> dict[str, float]:
    """Summary of a retro-test: Gini mean, standard deviation, min, max and spread (max - min) across cutoffs."""
    values = np.asarray(list(gini_by_cutoff.values()), dtype=np.float64)
    return {
        "gini_mean": float(values.mean()),
        "gini_std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
        "gini_min": float(values.min()),
        "gini_max": float(values.max()),
        "gini_spread": float(values.max() - values.min()),
    }


@dataclass(frozen=True)
class PairedAucComparison:
    """Two models' ROC AUCs on the same rows, their difference (first minus second) and its uncertainty."""

    auc_first: float
    auc_second: float
    difference: float
    standard_error: float
    confidence: float
    ci_low: float
    ci_high: float
    # Two-sided, for "the two AUCs are equal"; below 1 - confidence exactly when the interval excludes 0.
    p_value: float


def _midranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks with ties sharing the mean of the ranks they span."""
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    return ((ends - counts + 1 + ends) / 2.0)[inverse]


def compare_aucs(
    labels: np.ndarray, first: np.ndarray, second: np.ndarray, confidence: float = 0.95
) -> PairedAucComparison:
    """DeLong's test for two correlated ROC AUCs (DeLong, DeLong & Clarke-Pearson 1988), by midranks (Sun & Xu 2014).

    Each AUC is the mean of a per-positive and a per-negative "structural component"; the covariance of those
    components across the two models gives the variance of the AUC difference without resampling, in
    O(n log n). Exact for the U-statistic; tests/training/test_evaluate.py checks it against a paired bootstrap.
    """
    labels = np.asarray(labels).astype(bool)
    positives, negatives = int(labels.sum()), int((~labels).sum())
    if positives == 0 or negatives == 0:
        raise ValueError("comparing ROC AUCs needs both classes among the labels; got only one")
    aucs, per_positive, per_negative = [], [], []
    for scores in (np.asarray(first, dtype=np.float64), np.asarray(second, dtype=np.float64)):
        pos, neg = scores[labels], scores[~labels]
        overall = _midranks(np.concatenate([pos, neg]))
        # Share of negatives each positive outranks (ties count half), and of positives each negative is below.
        v_pos = (overall[:positives] - _midranks(pos)) / negatives
        v_neg = 1.0 - (overall[positives:] - _midranks(neg)) / positives
        aucs.append(float(v_pos.mean()))
        per_positive.append(v_pos)
        per_negative.append(v_neg)
    covariance = np.cov(per_positive) / positives + np.cov(per_negative) / negatives
    variance = float(covariance[0, 0] + covariance[1, 1] - 2 * covariance[0, 1])
    difference = aucs[0] - aucs[1]
    standard_error = math.sqrt(max(variance, 0.0))
    z_critical = NormalDist().inv_cdf(0.5 + confidence / 2)
    if standard_error > 0:
        p_value = math.erfc(abs(difference) / standard_error / math.sqrt(2))
    else:  # the two models rank every pair alike: no uncertainty about a difference that is then exactly 0
        p_value = 1.0 if difference == 0 else 0.0
    return PairedAucComparison(
        auc_first=aucs[0],
        auc_second=aucs[1],
        difference=difference,
        standard_error=standard_error,
        confidence=confidence,
        ci_low=difference - z_critical * standard_error,
        ci_high=difference + z_critical * standard_error,
        p_value=p_value,
    )
