"""Evaluation metrics for binary churn/propensity scores, and the decision threshold.

Plain functions of (labels, scores) arrays, so training, the promotion gate and realized-performance monitoring
all measure a model the same way.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import average_precision_score, brier_score_loss, log_loss, roc_auc_score


def precision_at_top(labels: np.ndarray, scores: np.ndarray, fraction: float) -> float:
    """Share of positives among the top `fraction` of customers by score (the list a campaign would target)."""
    k = max(1, int(round(len(scores) * fraction)))
    top = np.argsort(-scores, kind="stable")[:k]
    return float(labels[top].mean())


def binary_metrics(labels: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """ROC AUC, Gini, PR AUC, log loss, Brier, KS and precision/lift at the top 5 % and 10 %."""
    labels = np.asarray(labels, dtype=np.int64)
    scores = np.asarray(scores, dtype=np.float64)
    if labels.min() == labels.max():
        raise ValueError("evaluation needs both classes among the labels; got only one")
    auc = float(roc_auc_score(labels, scores))
    base_rate = float(labels.mean())
    order = np.argsort(-scores, kind="stable")
    cum_pos = np.cumsum(labels[order]) / labels.sum()
    cum_neg = np.cumsum(1 - labels[order]) / (1 - labels).sum()
    metrics = {
        "roc_auc": auc,
        "gini": 2 * auc - 1,
        "pr_auc": float(average_precision_score(labels, scores)),
        "log_loss": float(log_loss(labels, np.clip(scores, 1e-7, 1 - 1e-7))),
        "brier": float(brier_score_loss(labels, scores)),
        "ks": float(np.max(np.abs(cum_pos - cum_neg))),
        "base_rate": base_rate,
        "n": float(len(labels)),
    }
    for fraction, name in ((0.05, "5"), (0.10, "10")):
        precision = precision_at_top(labels, scores, fraction)
        metrics[f"precision_at_{name}"] = precision
        metrics[f"lift_at_{name}"] = precision / base_rate if base_rate > 0 else float("nan")
    return metrics


def f1_threshold(labels: np.ndarray, scores: np.ndarray) -> float:
    """The score threshold that maximises F1 on the given (validation) predictions."""
    order = np.argsort(-scores, kind="stable")
    sorted_scores, sorted_labels = scores[order], labels[order]
    true_pos = np.cumsum(sorted_labels)
    predicted_pos = np.arange(1, len(scores) + 1)
    f1 = 2 * true_pos / (predicted_pos + labels.sum())
    return float(sorted_scores[int(np.argmax(f1))])
