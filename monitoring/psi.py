"""The Population Stability Index exactly as the platform reports it: Evidently's PSI, re-implemented in numpy.

The drift DAG takes its PSI values from Evidently (`ValueDrift(method="psi")`). This module is the small, readable
reference the tests hold Evidently to, and the one place that says what those numbers mean:

- missing values (NaN, ±inf) are dropped from both samples first; the platform tracks the share of missing values
  as its own signal (`missing_share`), because PSI cannot see it;
- a numeric column with more than 20 distinct reference values is cut into equal-width **Sturges** bins
  (ceil(log2 n) + 1 bins, n = reference + current rows) spanning reference and current together — not reference
  deciles, so PSI values are not comparable with a decile-based PSI;
- any other column (categorical, or numeric with at most 20 distinct reference values) uses one bin per value seen
  in either sample;
- a bin share of 0 is replaced by 1e-4 (or, when the smallest non-zero share is itself <= 1e-4, by that share
  divided by 10^6), so a category that appears only in the current data adds a large but finite term;
- PSI = sum over bins of (reference share - current share) * ln(reference share / current share).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

# Evidently bins a numeric column only when its reference has more distinct values than this.
MAX_DISTINCT_FOR_VALUE_BINS = 20
EMPTY_BIN_SHARE = 1e-4


@dataclass(frozen=True)
class BinnedShares:
    """Reference and current shares per bin (before the empty-bin floor) and what the bins are."""

    reference: np.ndarray
    current: np.ndarray
    # Bin edges for numeric binning, or the values for per-value bins.
    bins: list[float] | list[str]
    numeric_bins: bool


def drop_missing(values: pd.Series) -> pd.Series:
    """The values PSI looks at: NaN and ±inf removed."""
    return values.replace([np.inf, -np.inf], np.nan).dropna()


def sturges_edges(values: np.ndarray) -> np.ndarray:
    """Equal-width bin edges over `values`: ceil(log2 n) + 1 bins (Sturges' rule, as numpy's `bins="sturges"`)."""
    low, high = float(values.min()), float(values.max())
    if low == high:
        return np.array([low - 0.5, high + 0.5])
    n_bins = math.ceil(math.log2(values.size)) + 1
    return np.linspace(low, high, n_bins + 1)


def _shares_in_bins(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    # Half-open bins [e_i, e_i+1), the last one closed: a value equal to the maximum belongs to the last bin.
    index = np.searchsorted(edges, values, side="right") - 1
    index = np.clip(index, 0, len(edges) - 2)
    return np.bincount(index, minlength=len(edges) - 1) / values.size


def binned_shares(reference: pd.Series, current: pd.Series, numeric: bool) -> BinnedShares:
    """Shares of reference and current (missing values dropped) in the bins Evidently's PSI uses."""
    reference, current = drop_missing(reference), drop_missing(current)
    if reference.empty or current.empty:
        raise ValueError("PSI needs at least one non-missing value in both the reference and the current data")
    if numeric and reference.nunique() > MAX_DISTINCT_FOR_VALUE_BINS:
        ref_values = reference.to_numpy(dtype=np.float64)
        cur_values = current.to_numpy(dtype=np.float64)
        edges = sturges_edges(np.concatenate([ref_values, cur_values]))
        return BinnedShares(
            _shares_in_bins(ref_values, edges), _shares_in_bins(cur_values, edges), edges.tolist(), True
        )
    keys = sorted(set(reference.unique()) | set(current.unique()), key=str)
    ref_counts, cur_counts = reference.value_counts(), current.value_counts()
    return BinnedShares(
        np.array([ref_counts.get(k, 0) for k in keys], dtype=np.float64) / len(reference),
        np.array([cur_counts.get(k, 0) for k in keys], dtype=np.float64) / len(current),
        [str(k) for k in keys],
        False,
    )


def _floor_empty_bins(shares: np.ndarray) -> np.ndarray:
    smallest = shares[shares > 0].min()
    floor = smallest / 10**6 if smallest <= EMPTY_BIN_SHARE else EMPTY_BIN_SHARE
    return np.where(shares == 0, floor, shares)


def psi_from_shares(reference: np.ndarray, current: np.ndarray) -> float:
    """PSI of two share vectors over the same bins, after flooring empty bins."""
    ref, cur = _floor_empty_bins(reference), _floor_empty_bins(current)
    return float(np.sum((ref - cur) * np.log(ref / cur)))


def psi(reference: pd.Series, current: pd.Series, numeric: bool) -> float:
    """PSI of one column between reference and current, as Evidently computes it (see the module docstring)."""
    shares = binned_shares(reference, current, numeric)
    return psi_from_shares(shares.reference, shares.current)


def missing_share(values: pd.Series) -> float:
    """Share of rows with a missing (NaN/None) or infinite value; 0 for an empty column."""
    if len(values) == 0:
        return 0.0
    missing = values.isna()
    if pd.api.types.is_float_dtype(values):
        missing |= np.isinf(values.to_numpy(dtype=np.float64, na_value=np.nan))
    return float(missing.mean())
