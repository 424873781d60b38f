"""Discrete-time hazards on person-period rows: time bins, the expansion, and survival curves from hazard rates.

The model behind them is the piecewise-exponential one: within time bin k a customer at risk buys at a constant
daily rate lambda_k(x), so the chance of buying in a bin they enter is 1 - exp(-lambda_k * width) (a
complementary log-log discrete hazard) and the survival curve is S(t) = exp(-sum_k lambda_k * overlap of bin k with
(0, t]). Each customer contributes one row per bin they are at risk in, with a 0/1 "bought in this bin" outcome and
the days they were at risk in it (the exposure): a customer censored, or buying, inside a bin is exposed only up to
that day, so censoring mid-bin is exact and never counts as "did not buy". A Poisson fit of the outcome with
log(exposure) as offset is then the exact likelihood (Whitehead 1980; Friedman 1982).

Times are in days from the cutoff, day 1 being the cutoff day (see `churnops.jobs.survival.data`). The last bin is
open-ended: its rate continues for every later day, which is how a curve reaches beyond the longest follow-up
the model was trained on.

Pure numpy, no pandas: serving can expand a customer's encoded features the same way training did.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

LN2 = math.log(2.0)
# Name of the appended input column holding each row's bin start (days from the cutoff).
BIN_START = "days_from_cutoff"
AT_BIN_START = "{}_at_bin_start"


@dataclass(frozen=True)
class TimeBins:
    """Bin starts in days, `(0, s1, s2, ...)`: bin k covers days (starts[k], starts[k+1]]; the last is open-ended."""

    starts: tuple[int, ...]

    def __post_init__(self) -> None:
        if not self.starts or self.starts[0] != 0:
            raise ValueError(f"time bins must start at day 0, got {self.starts}")
        if any(b <= a for a, b in zip(self.starts, self.starts[1:], strict=False)):
            raise ValueError(f"time bin starts must strictly increase, got {self.starts}")

    @classmethod
    def regular(cls, width_days: int, last_start_days: int) -> TimeBins:
        """Bins `width_days` wide; the open-ended last one starts at the largest multiple not above the given day."""
        if width_days < 1:
            raise ValueError(f"bin width must be at least 1 day, got {width_days}")
        return cls(tuple(range(0, last_start_days + 1, width_days)))

    @property
    def ends(self) -> np.ndarray:
        return np.append(np.asarray(self.starts[1:], dtype=float), np.inf)

    def __len__(self) -> int:
        return len(self.starts)


@dataclass(frozen=True)
class PersonPeriods:
    """The expansion of n subjects: for each row, its subject (index into the input), bin, exposure and outcome."""

    subject: np.ndarray
    bin: np.ndarray
    exposure_days: np.ndarray
    event: np.ndarray


def expand_person_periods(durations: np.ndarray, events: np.ndarray, bins: TimeBins) -> PersonPeriods:
    """One row per subject and bin the subject is at risk in (bins starting before their duration).

    Exposure = days at risk inside the bin (up to the purchase or the censoring day); outcome 1 only in the bin
    holding an observed purchase. Rows are ordered by subject, then bin.
    """
    durations = np.asarray(durations, dtype=float)
    events = np.asarray(events, dtype=np.int64)
    if durations.shape != events.shape:
        raise ValueError(f"durations {durations.shape} and events {events.shape} differ in shape")
    if len(durations) and durations.min() < 1:
        raise ValueError("durations are in days counting the cutoff day as day 1; every duration must be >= 1")
    if not np.isin(events, (0, 1)).all():
        raise ValueError("events must be 0 (censored) or 1 (purchase observed)")
    starts = np.asarray(bins.starts, dtype=float)
    at_risk_bins = np.searchsorted(starts, durations, side="left")  # bins with start < duration
    subject = np.repeat(np.arange(len(durations)), at_risk_bins)
    within = np.arange(len(subject)) - np.repeat(np.cumsum(at_risk_bins) - at_risk_bins, at_risk_bins)
    end = np.minimum(bins.ends[within], durations[subject])
    exposure = end - starts[within]
    last = within == at_risk_bins[subject] - 1
    return PersonPeriods(
        subject=subject,
        bin=within,
        exposure_days=exposure,
        event=(last & (events[subject] == 1)).astype(np.int64),
    )


def hazard_inputs(
    matrix: np.ndarray, bins: TimeBins, subject: np.ndarray, bin_index: np.ndarray, shifted_columns: Sequence[int]
) -> np.ndarray:
    """Model input of person-period rows: the subject's encoded features, the bin start, and each time-since column
    (e.g. days since the last purchase) advanced to the bin start — a tree cannot add two columns itself."""
    start = np.asarray(bins.starts, dtype=float)[bin_index]
    base = matrix[subject]
    shifted = [base[:, i] + start for i in shifted_columns]
    return np.column_stack([base, start, *shifted]) if shifted else np.column_stack([base, start])


def all_bins_inputs(matrix: np.ndarray, bins: TimeBins, shifted_columns: Sequence[int]) -> np.ndarray:
    """Inputs for every subject in every bin (subject-major), to predict whole curves."""
    n, k = len(matrix), len(bins)
    return hazard_inputs(matrix, bins, np.repeat(np.arange(n), k), np.tile(np.arange(k), n), shifted_columns)


def cumulative_hazard(rates: np.ndarray, bins: TimeBins, days: np.ndarray) -> np.ndarray:
    """H(t) = sum_k rate_k * |(start_k, end_k] ∩ (0, t]| for rates of shape (n, bins); returns (n, len(days))."""
    rates = np.asarray(rates, dtype=float)
    if rates.ndim != 2 or rates.shape[1] != len(bins):
        raise ValueError(f"rates must have shape (n, {len(bins)} bins), got {rates.shape}")
    if (rates < 0).any():
        raise ValueError("hazard rates must be non-negative")
    days = np.asarray(days, dtype=float)
    starts = np.asarray(bins.starts, dtype=float)
    overlap = np.clip(np.minimum(days[:, None], bins.ends[None, :]) - starts[None, :], 0.0, None)  # (days, bins)
    return rates @ overlap.T


def survival_curves(rates: np.ndarray, bins: TimeBins, days: np.ndarray) -> np.ndarray:
    """S(t) = P(no purchase in days 1..t) for each subject (rows) and day (columns)."""
    return np.exp(-cumulative_hazard(rates, bins, days))


def median_days(rates: np.ndarray, bins: TimeBins, horizon_days: float) -> np.ndarray:
    """Day t at which S(t) = 1/2 (linear cumulative hazard inside a bin); NaN when S stays above 1/2 to the horizon.

    The horizon is the longest follow-up the model learned from: a median past it would rest on extrapolation only.
    """
    rates = np.asarray(rates, dtype=float)
    starts = np.asarray(bins.starts, dtype=float)
    widths = np.diff(np.append(starts, np.inf))
    spans = rates * np.where(np.isinf(widths), 0.0, widths)  # the open-ended last bin adds nothing before it
    at_start = np.concatenate([np.zeros((len(rates), 1)), np.cumsum(spans, axis=1)[:, :-1]], axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        crossing = starts[None, :] + (LN2 - at_start) / rates
        inside = (at_start < LN2) & (crossing <= starts[None, :] + widths[None, :])
    first = np.where(inside.any(axis=1), inside.argmax(axis=1), -1)
    result = np.where(first >= 0, crossing[np.arange(len(rates)), np.maximum(first, 0)], np.nan)
    return np.where(result <= horizon_days, result, np.nan)
