"""Sums of floats that do not depend on how the values are split or ordered: the BTYD fits' likelihoods are summed
over one frame by the pandas path and over many partitions by Spark (`churnops.jobs.score_spark_value`), and the
optimizer must see the same number either way, or the fitted parameters, and every value prediction, drift apart.

Each value is m x 2^(e - 53) with m a 53-bit integer (`numpy.frexp`). Per exponent e the integers are summed
exactly (split into two halves so that int64 cannot overflow below 2^36 values), which gives a handful of integers
per batch (`exact_sum_parts`); their total is one exact rational, rounded once to the nearest float
(`total_of_parts`). Whatever the batches, the result is the correctly rounded sum of all values.
"""

from __future__ import annotations

from collections.abc import Iterable
from fractions import Fraction

import numpy as np
import pandas as pd

EXPONENT, HIGH, LOW = "exponent", "high", "low"
PARTS_SCHEMA = f"{EXPONENT} long, {HIGH} long, {LOW} long"
_MANTISSA_BITS = 53
_HALF_BITS = 26
_NOT_FINITE = 1 << 40  # the exponent of the row standing for NaN or infinite values (binary exponents are small)
_NAN = 2


def exact_sum_parts(values: np.ndarray) -> pd.DataFrame:
    """The exact sum of `values` as integer parts per binary exponent (columns exponent, high, low); values that
    are not finite make the sum NaN or infinite, as in a float sum."""
    values = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(values)
    if not finite.all():  # the sum is NaN or infinite, as a float sum would be: one row says which
        total = float(np.sum(values[~finite]))
        kind = _NAN if np.isnan(total) else int(np.sign(total))
        return pd.DataFrame({EXPONENT: [_NOT_FINITE], HIGH: [kind], LOW: [0]}, dtype=np.int64)
    mantissas, exponents = np.frexp(values)
    integers = np.ldexp(mantissas, _MANTISSA_BITS).astype(np.int64)  # exact: 53 bits
    high = integers >> _HALF_BITS  # floor division, so low is in [0, 2^26) whatever the sign
    low = integers - (high << _HALF_BITS)
    order = np.argsort(exponents, kind="stable")
    keys, starts = np.unique(exponents[order], return_index=True)
    if len(order) == 0:
        return pd.DataFrame({EXPONENT: [], HIGH: [], LOW: []}, dtype=np.int64)
    high_sums = np.add.reduceat(high[order], starts)
    low_sums = np.add.reduceat(low[order], starts)
    return pd.DataFrame({EXPONENT: keys.astype(np.int64), HIGH: high_sums, LOW: low_sums})


def total_of_parts(parts: pd.DataFrame | Iterable[pd.DataFrame]) -> float:
    """The correctly rounded float of the exact sum the parts (of one or many batches) stand for."""
    frame = parts if isinstance(parts, pd.DataFrame) else pd.concat(list(parts), ignore_index=True)
    not_finite = frame[EXPONENT] == _NOT_FINITE
    if not_finite.any():
        kinds = set(frame.loc[not_finite, HIGH].astype(int))
        return float("nan") if _NAN in kinds or kinds == {1, -1} else float("inf") * kinds.pop()
    total = Fraction(0)
    for exponent, high, low in frame[[EXPONENT, HIGH, LOW]].itertuples(index=False):
        integer = (int(high) << _HALF_BITS) + int(low)
        total += Fraction(integer) * Fraction(2) ** (int(exponent) - _MANTISSA_BITS)
    return float(total)


def exact_sum(values: np.ndarray) -> float:
    """The correctly rounded sum of `values` (the same float as summing their parts batch by batch)."""
    return total_of_parts(exact_sum_parts(values))
