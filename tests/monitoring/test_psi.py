"""The PSI the platform reports (Evidently's) equals an independent computation on the same bins."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from monitoring.drift import _evidently_psi
from monitoring.psi import binned_shares, missing_share, psi, sturges_edges
from tests.monitoring.conftest import CATEGORICAL, NUMERIC, customer_frame


def test_evidently_psi_equals_the_reference_computation_on_every_column() -> None:
    reference = customer_frame(3000, seed=1)
    current = customer_frame(2500, seed=2)
    current["spend_30d"] *= 1.4
    current["age"] += 6
    current.loc[current.sample(frac=0.2, random_state=0).index, "region"] = "offshore"

    from_evidently = _evidently_psi(reference, current, NUMERIC, CATEGORICAL, threshold=0.2, report_path=None)

    assert set(from_evidently) == set(NUMERIC + CATEGORICAL)
    for column, value in from_evidently.items():
        expected = psi(reference[column], current[column], numeric=column in NUMERIC)
        assert value == pytest.approx(expected, rel=1e-9, abs=1e-12), column


def test_numeric_columns_use_sturges_bins_over_both_samples() -> None:
    reference, current = pd.Series(np.linspace(0, 10, 700)), pd.Series(np.linspace(5, 20, 300))
    shares = binned_shares(reference, current, numeric=True)
    assert shares.numeric_bins
    assert len(shares.bins) - 1 == math.ceil(math.log2(1000)) + 1
    assert shares.bins[0] == 0 and shares.bins[-1] == 20
    assert np.allclose(shares.bins, np.histogram_bin_edges(np.concatenate([reference, current]), bins="sturges"))
    assert shares.reference.sum() == pytest.approx(1) and shares.current.sum() == pytest.approx(1)
    assert len(sturges_edges(np.array([3.0, 3.0]))) == 2


def test_category_psi_matches_the_formula_by_hand() -> None:
    reference = pd.Series(["a"] * 50 + ["b"] * 50)
    current = pd.Series(["a"] * 20 + ["b"] * 80)
    by_hand = (0.5 - 0.2) * math.log(0.5 / 0.2) + (0.5 - 0.8) * math.log(0.5 / 0.8)
    assert psi(reference, current, numeric=False) == pytest.approx(by_hand)


def test_a_category_new_in_current_gets_the_empty_bin_floor() -> None:
    reference = pd.Series(["a"] * 50 + ["b"] * 50)
    current = pd.Series(["a"] * 40 + ["b"] * 40 + ["c"] * 20)
    by_hand = (0.5 - 0.4) * math.log(0.5 / 0.4) * 2 + (1e-4 - 0.2) * math.log(1e-4 / 0.2)
    assert psi(reference, current, numeric=False) == pytest.approx(by_hand)


def test_missing_values_do_not_move_psi_but_move_the_missing_share() -> None:
    rng = np.random.default_rng(5)
    reference = pd.Series(rng.normal(size=2000))
    current = reference.copy()
    current[current.sample(frac=0.3, random_state=1).index] = np.nan
    assert psi(reference, current, numeric=True) < 0.01
    assert missing_share(reference) == 0.0
    assert missing_share(current) == pytest.approx(0.3)
    assert missing_share(pd.Series([1.0, np.inf, np.nan, 2.0])) == 0.5
