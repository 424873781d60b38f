"""The range of each numeric feature seen in training, stored with the model, and the check of new rows against it.

Training records `observed_ranges` in the model metadata (`FEATURE_RANGES_KEY`); the API flags, refuses or clips
values outside them (`serving.out_of_range_policy`). A tree model extrapolates flat beyond the training range, but
the stored blend (BG/NBD) does not, and a value far outside it is more often a unit or parsing mistake than a
customer. Models registered before ranges were recorded have none: nothing is checked for them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

FEATURE_RANGES_KEY = "feature_ranges"


def observed_ranges(matrix: np.ndarray, numeric: tuple[str, ...] | list[str]) -> dict[str, list[float]]:
    """{feature: [min, max]} of the numeric columns (the first `len(numeric)` of an encoded matrix), NaN ignored;
    a column with no value at all has no range."""
    ranges = {}
    for i, name in enumerate(numeric):
        column = matrix[:, i]
        present = column[~np.isnan(column)]
        if present.size:
            ranges[name] = [float(present.min()), float(present.max())]
    return ranges


@dataclass(frozen=True)
class InputRanges:
    """Training ranges aligned with the first columns of an encoded matrix (NaN bounds = not checked)."""

    names: tuple[str, ...]
    low: np.ndarray
    high: np.ndarray

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any], numeric: tuple[str, ...]) -> InputRanges | None:
        stored = metadata.get(FEATURE_RANGES_KEY)
        if not stored:
            return None
        low = np.array([float(stored[name][0]) if name in stored else np.nan for name in numeric])
        high = np.array([float(stored[name][1]) if name in stored else np.nan for name in numeric])
        return cls(names=tuple(numeric), low=low, high=high)

    def outside(self, matrix: np.ndarray) -> np.ndarray:
        """Boolean (rows, numeric features): the value is present and outside the training range."""
        values = matrix[:, : len(self.names)]
        # Comparisons with NaN (a missing value or an unchecked feature) are False, silently: neither is flagged.
        # (No np.errstate here: entering it cost more than the whole check, on every request.)
        return (values < self.low) | (values > self.high)

    def clip(self, matrix: np.ndarray) -> np.ndarray:
        """A copy with the numeric values clipped into their ranges (missing values stay missing)."""
        clipped = matrix.copy()
        values = clipped[:, : len(self.names)]
        low = np.where(np.isnan(self.low), -np.inf, self.low)
        high = np.where(np.isnan(self.high), np.inf, self.high)
        np.clip(values, low, high, out=values)  # NaN stays NaN
        return clipped

    def describe(self, name: str) -> str:
        i = self.names.index(name)
        return f"[{self.low[i]:g}, {self.high[i]:g}]"
