"""The Population Stability Index as the platform reports it: bins fixed by the reference's quantiles.

PSI = sum over bins of (current share - reference share) * ln(current share / reference share). The common rules of
thumb — below 0.1 stable, 0.1 to 0.2 worth a look, above 0.2 shifted — were made for this form: bins are the
reference's deciles, so every bin holds a tenth of the reference and a value counts the same wherever it lies.
(Evidently's PSI cuts equal-width bins over reference and current together, so its values cannot be read against
those thresholds; the platform uses Evidently only for the HTML report.)

- Missing values (NaN, ±inf) are dropped from both samples; the share of missing values is its own signal
  (`missing_share`), because PSI cannot see it.
- A numeric column with more than `MAX_DISTINCT_FOR_VALUE_BINS` distinct reference values gets up to
  `QUANTILE_BINS` bins whose inner edges are the reference's quantiles (repeated edges merge, so a column with a
  mass point keeps it in one bin); the outer bins are open, so current values beyond the reference range count.
- Any other column (categorical, or numeric with few distinct values) uses one bin per value seen in either sample.
- An empty bin's share is floored at `EMPTY_BIN_SHARE`, so a category that appears on one side only adds a large but
  finite term.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

QUANTILE_BINS = 10
MAX_DISTINCT_FOR_VALUE_BINS = 20
EMPTY_BIN_SHARE = 1e-4


@dataclass(frozen=True)
class BinnedShares:
    """Reference and current shares per bin (before the empty-bin floor) and what the bins are."""

    reference: np.ndarray
    current: np.ndarray
    # Inner bin edges for numeric binning, or the values for per-value bins.
    bins: list[float] | list[str]
    numeric_bins: bool


def drop_missing(values: pd.Series) -> pd.Series:
    """The values PSI looks at: NaN and ±inf removed."""
    return values.replace([np.inf, -np.inf], np.nan).dropna()


def quantile_edges(reference: np.ndarray, bins: int = QUANTILE_BINS) -> np.ndarray:
    """The inner edges of up to `bins` reference-quantile bins (repeated quantiles merged)."""
    inner = np.quantile(reference, np.linspace(0, 1, bins + 1)[1:-1], method="linear")
    return np.unique(inner)


def _shares_in_bins(values: np.ndarray, inner_edges: np.ndarray) -> np.ndarray:
    # Bin i holds edge[i-1] < v <= edge[i]; the first and last bins are open-ended.
    index = np.searchsorted(inner_edges, values, side="left")
    return np.bincount(index, minlength=len(inner_edges) + 1) / values.size


def binned_shares(reference: pd.Series, current: pd.Series, numeric: bool) -> BinnedShares:
    """Shares of reference and current (missing values dropped) in the bins PSI uses."""
    reference, current = drop_missing(reference), drop_missing(current)
    if reference.empty or current.empty:
        raise ValueError("PSI needs at least one non-missing value in both the reference and the current data")
    if numeric and reference.nunique() > MAX_DISTINCT_FOR_VALUE_BINS:
        ref_values = reference.to_numpy(dtype=np.float64)
        cur_values = current.to_numpy(dtype=np.float64)
        edges = quantile_edges(ref_values)
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


def psi_from_shares(reference: np.ndarray, current: np.ndarray) -> float:
    """PSI of two share vectors over the same bins, after flooring empty bins."""
    ref, cur = np.maximum(reference, EMPTY_BIN_SHARE), np.maximum(current, EMPTY_BIN_SHARE)
    return float(np.sum((cur - ref) * np.log(cur / ref)))


def psi(reference: pd.Series, current: pd.Series, numeric: bool) -> float:
    """PSI of one column between reference and current (see the module docstring)."""
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
