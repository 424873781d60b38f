"""Ranking metrics that several rooms share: training's evaluation and monitoring's realized performance measure a
list the way a campaign uses it — by its top customers."""

from __future__ import annotations

import numpy as np


def top_indices(scores: np.ndarray, fraction: float) -> np.ndarray:
    """Indices of the top `fraction` of customers by score (at least one), highest first, ties by position."""
    k = max(1, int(round(len(scores) * fraction)))
    return np.argsort(-np.asarray(scores), kind="stable")[:k]


def precision_at_top(labels: np.ndarray, scores: np.ndarray, fraction: float) -> float:
    """Share of positives among the top `fraction` of customers by score (the list a campaign would target)."""
    return float(np.asarray(labels)[top_indices(np.asarray(scores), fraction)].mean())


def recall_at_top(labels: np.ndarray, scores: np.ndarray, fraction: float) -> float:
    """Share of all positives that the top `fraction` of customers by score catches."""
    labels = np.asarray(labels)
    return float(labels[top_indices(np.asarray(scores), fraction)].sum() / labels.sum())


# What the evaluation rows are (`DatasetContract.validation`), as metric names and text call them: a later cutoff
# for event data ("oot_roc_auc", "out-of-time ROC AUC"); a stratified holdout for entity data, which has no time
# axis ("holdout_roc_auc", "holdout ROC AUC").
_EVALUATION_NAMES = {"out_of_time": ("oot", "out-of-time"), "stratified_holdout": ("holdout", "holdout")}


def evaluation_prefix(validation: str) -> str:
    """The prefix of the evaluation metrics' names in MLflow: `oot` or `holdout`."""
    return _EVALUATION_NAMES[validation][0]


def evaluation_label(validation: str) -> str:
    """How text names the evaluation: "out-of-time" or "holdout"."""
    return _EVALUATION_NAMES[validation][1]
