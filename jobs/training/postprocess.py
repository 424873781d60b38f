"""Post-processing chosen on the training folds, never on the evaluation rows: the BG/NBD blend weight, the
calibration map and the decision threshold.

The chosen family's configuration (LightGBM's best trial with fixed rounds, or the logistic regression) is
refitted on each retro split and scored on its validation rows; those out-of-fold predictions choose the blend
weight (best mean fold ROC AUC), then, pooled over every retro fold, the calibration (none / Platt / isotonic,
kept only if it lowers the cross-fitted Brier score) and the threshold for the configured objective. Pooling fits
the map on predictions of the final configuration from every fold model rather than on one fold model's, and on
all the out-of-fold rows there are. What is chosen is stored with the model
(`churnops.postprocess.ScorePostprocess`) and applied wherever the model scores.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from churnops.config import TrainingSettings
from churnops.dataset import DatasetContract
from churnops.jobs.evaluate import choose_threshold, select_calibration
from churnops.jobs.training.data import EncodedView, Split, TrainingData
from churnops.postprocess import apply_calibration

# Fits one model family's chosen configuration on the masked training rows of a view; the result has `predict`.
FitOnRows = Callable[[EncodedView, np.ndarray, np.ndarray], Any]

BLEND_WEIGHTS = tuple(round(w, 1) for w in np.arange(0.0, 1.0, 0.1))


@dataclass(frozen=True)
class FoldPredictions:
    """The chosen configuration refitted on one retro split and scored on its validation rows."""

    split: Split
    labels: np.ndarray
    raw: np.ndarray
    bgnbd: np.ndarray | None


@dataclass(frozen=True)
class Postprocessing:
    """The choices made on the folds, and what each alternative scored there (for the report)."""

    blend_weight: float
    blend_auc_by_weight: dict[str, float]
    calibration: dict[str, Any]
    calibration_brier_by_method: dict[str, float]
    threshold: float
    threshold_objective: str

    def blended(self, raw: np.ndarray, bgnbd: np.ndarray | None) -> np.ndarray:
        """The model's scores blended with BG/NBD's at the chosen weight (unchanged without BG/NBD)."""
        if self.blend_weight == 0 or bgnbd is None:
            return raw
        return (1 - self.blend_weight) * raw + self.blend_weight * bgnbd


def bgnbd_scores(frame: pd.DataFrame, contract: DatasetContract) -> tuple[np.ndarray, dict[str, float]] | None:
    """BG/NBD label-oriented scores for one cutoff's rows, fitted on those rows' history (no labels used)."""
    from churnops.jobs.baselines import bgnbd_purchase_probability, fit_bgnbd, has_rfm, rfm_from_features

    if contract.label.horizon_days is None or not has_rfm(frame):
        return None
    rfm = rfm_from_features(frame)
    params = fit_bgnbd(rfm)
    buys = bgnbd_purchase_probability(params, rfm, contract.label.horizon_days)
    return (1.0 - buys if contract.label.kind == "churn" else buys), params.as_dict()


def fold_predictions(
    data: TrainingData, contract: DatasetContract, view: EncodedView, fit: FitOnRows
) -> list[FoldPredictions]:
    """Refit the chosen family's configuration on every retro split and score its validation rows (BG/NBD too,
    for time data)."""
    folds = []
    for split in data.retro_splits:
        model = fit(view, data.y_train, split.fit)
        bgnbd = bgnbd_scores(data.train[split.valid], contract) if data.validation == "out_of_time" else None
        raw = model.predict(view.x_train[split.valid])
        folds.append(FoldPredictions(split, data.y_train[split.valid], raw, bgnbd and bgnbd[0]))
    return folds


def choose_blend(folds: list[FoldPredictions]) -> tuple[float, dict[str, float]]:
    """The BG/NBD blend weight with the best mean ROC AUC over the retro folds (0 = the model alone)."""
    from sklearn.metrics import roc_auc_score

    if any(f.bgnbd is None for f in folds):
        return 0.0, {}
    by_weight = {
        str(w): float(np.mean([roc_auc_score(f.labels, (1 - w) * f.raw + w * f.bgnbd) for f in folds]))  # type: ignore[operator]
        for w in BLEND_WEIGHTS
    }
    best = max(BLEND_WEIGHTS, key=lambda w: (round(by_weight[str(w)], 6), -w))
    return float(best), by_weight


def choose_postprocessing(folds: list[FoldPredictions], training: TrainingSettings, seed: int) -> Postprocessing:
    """Blend weight by mean fold ROC AUC; calibration and threshold on the blended predictions of every retro fold,
    pooled."""
    blend_weight, blend_auc_by_weight = choose_blend(folds)
    uncalibrated = Postprocessing(blend_weight, blend_auc_by_weight, {"method": "none"}, {}, 0.0, "")
    labels = np.concatenate([f.labels for f in folds])
    scores = np.concatenate([uncalibrated.blended(f.raw, f.bgnbd) for f in folds])
    calibration, brier_by_method = select_calibration(labels, scores, seed)
    objective = training.threshold_objective
    top_fraction = float(training.threshold_top_fraction)
    threshold = choose_threshold(labels, apply_calibration(calibration, scores), objective, top_fraction)
    return Postprocessing(
        blend_weight=blend_weight,
        blend_auc_by_weight=blend_auc_by_weight,
        calibration=calibration,
        calibration_brier_by_method=brier_by_method,
        threshold=threshold,
        threshold_objective=objective if objective == "f1" else f"top {top_fraction:.0%}",
    )


def stored_postprocess(
    chosen: Postprocessing, eval_bgnbd: tuple[np.ndarray, dict[str, float]] | None, contract: DatasetContract
) -> dict[str, Any]:
    """The JSON stored in the model metadata (`churnops.postprocess.ScorePostprocess.from_metadata` reads it);
    the blend carries the BG/NBD parameters fitted on the evaluation cutoff's history."""
    stored: dict[str, Any] = {"calibration": chosen.calibration}
    if chosen.blend_weight > 0 and eval_bgnbd is not None:
        stored["blend"] = {
            "weight": chosen.blend_weight,
            "bgnbd": eval_bgnbd[1],
            "horizon_days": contract.label.horizon_days,
            "label": contract.label.kind,
        }
    return stored
