"""What a registered model does to the booster's probability before anyone sees it: an optional blend with the
BG/NBD purchase probability, then an optional calibration map.

A registered model's score is `calibrate(blend(booster(x), bgnbd(x)))`. Both steps are chosen on the training time
folds and stored as JSON in the model metadata (see `ScorePostprocess`); training, batch scoring and the API all
apply them through this module, so a score means the same wherever it is computed. Everything is numpy on a
handful of numbers (microseconds per row) and imports nothing of MLflow or Spark, because serving evaluates it on
every request.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# Snapshot columns BG/NBD reads (declared in churnops.features); BG/NBD time runs in weeks.
BGNBD_INPUT_COLUMNS = ("active_days_all", "days_since_first_event", "days_since_last_event")
BGNBD_DAYS_PER_PERIOD = 7.0


def bgnbd_purchase_probability(
    params: Mapping[str, float], frequency: np.ndarray, recency: np.ndarray, age: np.ndarray, horizon: float
) -> np.ndarray:
    """BG/NBD probability of at least one purchase in (T, T + horizon] given (x, t_x, T); all times in weeks.

    = P(alive at T) * (1 - E[exp(-lambda * horizon)]): a BG/NBD customer can only drop out right after a purchase,
    and given alive the purchase rate's posterior is Gamma(r + x, alpha + T). Lives in the core, not in
    jobs/baselines.py, because a served model blending with BG/NBD evaluates it per request.
    """
    r, alpha, a, b = params["r"], params["alpha"], params["a"], params["b"]
    x = frequency
    log_odds_dead = (
        np.log(a) - np.log(np.maximum(b + x - 1, 1e-300)) + (r + x) * (np.log(alpha + age) - np.log(alpha + recency))
    )
    alive = np.where(x > 0, 1.0 / (1.0 + np.exp(np.minimum(log_odds_dead, 700.0))), 1.0)
    no_purchase_if_alive = np.exp((r + x) * (np.log(alpha + age) - np.log(alpha + age + horizon)))
    return alive * (1.0 - no_purchase_if_alive)


def bgnbd_inputs_from_days(
    active_days: np.ndarray, days_since_first: np.ndarray, days_since_last: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x, t_x, T) in weeks from the RFM features: purchase days count as transactions (x = active days - 1)."""
    return (
        np.maximum(active_days - 1.0, 0.0),
        (days_since_first - days_since_last) / BGNBD_DAYS_PER_PERIOD,
        days_since_first / BGNBD_DAYS_PER_PERIOD,
    )


@dataclass(frozen=True)
class ScorePostprocess:
    """What a registered model does after the booster: blend with BG/NBD, then calibrate. Both optional.

    Stored as JSON in the model metadata: `{"blend": {"weight", "bgnbd": {r, alpha, a, b}, "horizon_days", "label"},
    "calibration": {"method": "platt", "slope", "intercept"} | {"method": "isotonic", "x", "y", "tie_break_weight"}}`.
    """

    blend_weight: float = 0.0
    bgnbd_params: dict[str, float] | None = None
    horizon_weeks: float = 0.0
    # For a churn label the blended BG/NBD score is P(no purchase), for propensity P(at least one purchase).
    bgnbd_scores_churn: bool = False
    bgnbd_column_indices: tuple[int, int, int] | None = None
    calibration: dict[str, Any] | None = None
    # An isotonic map's points as arrays, converted once: the API applies the map on every request.
    _isotonic_points: tuple[np.ndarray, np.ndarray] | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.calibration and self.calibration.get("method") == "isotonic":
            points = (np.asarray(self.calibration["x"]), np.asarray(self.calibration["y"]))
            object.__setattr__(self, "_isotonic_points", points)

    @classmethod
    def from_metadata(cls, raw: Mapping[str, Any] | None, columns: list[str]) -> ScorePostprocess | None:
        if not raw:
            return None
        blend = raw.get("blend") or {}
        indices = None
        if blend.get("weight", 0.0) > 0:
            missing = [c for c in BGNBD_INPUT_COLUMNS if c not in columns]
            if missing:
                raise ValueError(f"the model blends with BG/NBD but its schema lacks {missing}")
            indices = tuple(columns.index(c) for c in BGNBD_INPUT_COLUMNS)
        return cls(
            blend_weight=float(blend.get("weight", 0.0)),
            bgnbd_params=blend.get("bgnbd"),
            horizon_weeks=float(blend.get("horizon_days", 0.0)) / BGNBD_DAYS_PER_PERIOD,
            bgnbd_scores_churn=blend.get("label") == "churn",
            bgnbd_column_indices=indices,  # type: ignore[arg-type]
            calibration=raw.get("calibration"),
        )

    def bgnbd_scores(self, matrix: np.ndarray) -> np.ndarray:
        assert self.bgnbd_params is not None and self.bgnbd_column_indices is not None
        active, first, last = (matrix[:, i] for i in self.bgnbd_column_indices)
        with np.errstate(invalid="ignore", divide="ignore"):
            buys = bgnbd_purchase_probability(
                self.bgnbd_params, *bgnbd_inputs_from_days(active, first, last), self.horizon_weeks
            )
        return 1.0 - buys if self.bgnbd_scores_churn else buys

    def blend(self, raw: np.ndarray, matrix: np.ndarray) -> np.ndarray:
        if self.blend_weight <= 0:
            return raw
        bgnbd = self.bgnbd_scores(matrix)
        # A row without an event history (missing RFM) keeps the booster's score.
        return np.where(np.isfinite(bgnbd), (1 - self.blend_weight) * raw + self.blend_weight * bgnbd, raw)

    def apply(self, raw: np.ndarray, matrix: np.ndarray) -> np.ndarray:
        return apply_calibration(self.calibration, self.blend(raw, matrix), self._isotonic_points)


def apply_calibration(
    calibration: Mapping[str, Any] | None,
    scores: np.ndarray,
    isotonic_points: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """Map scores through a stored calibration: Platt (logistic on the logit) or isotonic (piecewise linear;
    `isotonic_points` are its x and y as arrays when the caller has them converted already)."""
    if not calibration or calibration.get("method", "none") == "none":
        return scores
    if calibration["method"] == "platt":
        clipped = np.clip(scores, 1e-7, 1 - 1e-7)
        z = calibration["slope"] * np.log(clipped / (1 - clipped)) + calibration["intercept"]
        return 1.0 / (1.0 + np.exp(-z))
    if calibration["method"] == "isotonic":
        x, y = isotonic_points or (np.asarray(calibration["x"]), np.asarray(calibration["y"]))
        stepped = np.interp(scores, x, y)
        # Isotonic steps are flat (and flat beyond the fitted range), so on their own they tie every score inside a
        # step and change the ranking; mixing in a sliver of the raw score makes the map strictly increasing.
        weight = float(calibration.get("tie_break_weight", 0.0))
        return stepped if weight == 0 else (1.0 - weight) * stepped + weight * np.clip(scores, 0.0, 1.0)
    raise ValueError(f"unknown calibration method {calibration['method']!r}")
