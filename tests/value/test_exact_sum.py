"""Exact sums: the BTYD likelihoods summed over one frame (pandas) and over Spark's partitions are the same float,
so the two scoring paths fit the same parameters."""

from __future__ import annotations

import math

import numpy as np

from churnops.jobs.value.exact_sum import exact_sum, exact_sum_parts, total_of_parts


def spread_values(size: int, seed: int = 0) -> np.ndarray:
    """Values over forty orders of magnitude, both signs: a plain float sum depends on their order."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal(size) * 10.0 ** rng.integers(-20, 20, size)


def test_the_sum_is_the_correctly_rounded_sum_of_all_values() -> None:
    values = spread_values(10_000)
    assert exact_sum(values) == math.fsum(values)
    assert np.sum(values) != math.fsum(values)  # the case the module is for: a plain sum rounds along the way


def test_the_sum_does_not_depend_on_how_the_values_are_split_or_ordered() -> None:
    values = spread_values(10_000, seed=1)
    whole = exact_sum(values)
    shuffled = np.random.default_rng(2).permutation(values)
    for batches in (1, 3, 7, 64):
        assert total_of_parts(exact_sum_parts(part) for part in np.array_split(shuffled, batches)) == whole


def test_an_empty_batch_adds_nothing_and_extreme_values_stay_exact() -> None:
    extreme = np.array([np.finfo(float).max / 4, 5e-324, -np.finfo(float).max / 4, 1.0])
    assert total_of_parts([exact_sum_parts(np.array([])), exact_sum_parts(extreme)]) == 1.0 + 5e-324
    assert exact_sum(np.array([])) == 0.0


def test_values_that_are_not_finite_make_the_sum_nan_or_infinite_as_a_float_sum_does() -> None:
    """The optimizer visits parameters where a likelihood term overflows: it must see -inf or NaN, not an error."""
    inf, nan = float("inf"), float("nan")
    finite = exact_sum_parts(np.array([1.0, 2.0]))
    assert total_of_parts([finite, exact_sum_parts(np.array([-inf]))]) == -inf
    assert math.isnan(total_of_parts([exact_sum_parts(np.array([inf])), exact_sum_parts(np.array([-inf]))]))
    assert math.isnan(total_of_parts([finite, exact_sum_parts(np.array([nan, 1.0]))]))
    assert exact_sum(np.array([inf, 3.0])) == inf
