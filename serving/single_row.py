"""The stored post-processing (BG/NBD blend, then calibration: churnops/postprocess.py) of one row, in scalar maths.

On a one-row array every numpy call of `ScorePostprocess.apply` costs its set-up (about 30 µs in all for a
single-row `/predict`, more than the booster call). Here the same operations run on Python floats, in the same
order, with numpy's own `log`, `exp` and `interp` on scalars: those go through the same loops as on arrays, while
`math.log` and `math.exp` differ from numpy's vectorised ones in the last bit on machines with AVX-512. Python's
`+ - * /` on floats are the IEEE operations numpy's are, so the score is the batch path's, bit for bit;
`SingleRowPostprocess.checked` verifies that on probe rows before a model serves, and
tests/serving/test_single_row.py on many.

A row outside the plain case (a missing or non-finite input, a logarithm of a non-positive number, magnitudes
where the order of infinities matters) goes through `ScorePostprocess.apply` itself: never a different score.
"""

from __future__ import annotations

import logging
import math

import numpy as np

from churnops.postprocess import BGNBD_DAYS_PER_PERIOD, ScorePostprocess

log = logging.getLogger(__name__)

# Inputs beyond this (days, purchase counts) leave the scalar path: far outside any customer history, where
# overflow to infinity could make numpy warn or differ in NaN handling.
_PLAIN_LIMIT = 1e9


class SingleRowPostprocess:
    """`ScorePostprocess.apply` for one booster score and its row, bit-identical to it."""

    def __init__(self, postprocess: ScorePostprocess) -> None:
        self.postprocess = postprocess
        self._blend = postprocess.blend_weight > 0
        if self._blend:
            params = postprocess.bgnbd_params
            assert params is not None and postprocess.bgnbd_column_indices is not None
            self._r, self._alpha, self._b = float(params["r"]), float(params["alpha"]), float(params["b"])
            self._log_a = np.log(params["a"])  # what the array path computes per call
            self._indices = postprocess.bgnbd_column_indices
            self._weight = postprocess.blend_weight
        calibration = postprocess.calibration or {}
        self._method = calibration.get("method", "none")
        if self._method == "isotonic":
            self._x, self._y = postprocess._isotonic_points or (
                np.asarray(calibration["x"]),
                np.asarray(calibration["y"]),
            )
            self._tie_break = float(calibration.get("tie_break_weight", 0.0))
        elif self._method == "platt":
            self._slope, self._intercept = calibration["slope"], calibration["intercept"]
        elif self._method != "none":
            raise ValueError(f"unknown calibration method {self._method!r}")

    @classmethod
    def checked(cls, postprocess: ScorePostprocess, raw: np.ndarray, rows: np.ndarray) -> SingleRowPostprocess | None:
        """The scalar path if it reproduces `postprocess.apply` on these probe rows exactly, else None."""
        try:
            scalar = cls(postprocess)
            mine = np.array([scalar(float(score), row) for score, row in zip(raw, rows, strict=True)])
        except Exception as error:
            log.warning("no scalar post-processing (%s: %s)", type(error).__name__, error)
            return None
        if not np.array_equal(mine, postprocess.apply(raw, rows), equal_nan=True):
            log.warning("scalar post-processing differs from the vectorised one; not using it")
            return None
        return scalar

    def __call__(self, raw: float, row: np.ndarray) -> float:
        score = raw
        if self._blend:
            bgnbd = self._bgnbd(row)
            if bgnbd is None:  # not the plain case: the array path decides, whole
                return float(self.postprocess.apply(np.array([raw]), row[np.newaxis, :])[0])
            score = (1 - self._weight) * raw + self._weight * bgnbd
        return self._calibrated(score)

    def _bgnbd(self, row: np.ndarray) -> float | None:
        """`ScorePostprocess.bgnbd_scores` of the row, or None outside the plain case."""
        active_index, first_index, last_index = self._indices
        active, first, last = float(row[active_index]), float(row[first_index]), float(row[last_index])
        if not (abs(active) < _PLAIN_LIMIT and abs(first) < _PLAIN_LIMIT and abs(last) < _PLAIN_LIMIT):
            return None  # also NaN (missing): every comparison with it is False
        r, alpha, b = self._r, self._alpha, self._b
        # bgnbd_inputs_from_days
        x = max(active - 1.0, 0.0)
        recency = (first - last) / BGNBD_DAYS_PER_PERIOD
        age = first / BGNBD_DAYS_PER_PERIOD
        if not (alpha + age > 0 and alpha + recency > 0):
            return None  # a logarithm of a non-positive number: NaN and a warning on the array path
        # bgnbd_purchase_probability, operation for operation
        log_alpha_age = np.log(alpha + age)
        if x > 0:
            log_odds_dead = (
                self._log_a - np.log(max(b + x - 1, 1e-300)) + (r + x) * (log_alpha_age - np.log(alpha + recency))
            )
            alive = 1.0 / (1.0 + np.exp(min(log_odds_dead, 700.0)))
        else:
            alive = 1.0
        no_purchase_if_alive = np.exp((r + x) * (log_alpha_age - np.log(alpha + age + self.postprocess.horizon_weeks)))
        buys = float(alive * (1.0 - no_purchase_if_alive))
        if not math.isfinite(buys):
            return None
        return 1.0 - buys if self.postprocess.bgnbd_scores_churn else buys

    def _calibrated(self, score: float) -> float:
        """`apply_calibration` of one score."""
        if self._method == "isotonic":
            stepped = float(np.interp(score, self._x, self._y))
            weight = self._tie_break
            return stepped if weight == 0 else (1.0 - weight) * stepped + weight * min(max(score, 0.0), 1.0)
        if self._method == "platt":
            clipped = min(max(score, 1e-7), 1 - 1e-7)
            z = self._slope * np.log(clipped / (1 - clipped)) + self._intercept
            return float(1.0 / (1.0 + np.exp(-z)))
        return score
