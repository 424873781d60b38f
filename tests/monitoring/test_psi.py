"""The PSI the platform reports: reference-decile bins, read against the usual 0.1 / 0.2 thresholds — which hold
on samples that did not drift (re-runs of the generator) and trip on ones that did."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pandas as pd
import pytest

from churnops.config import MonitoringSettings
from churnops.dataset import load_contract
from churnops.features import CUTOFF, model_feature_columns
from churnops.jobs.generate import generate
from churnops.jobs.reference_duckdb import compute_reference_features
from churnops.monitoring.psi import QUANTILE_BINS, binned_shares, missing_share, psi, quantile_edges


def test_continuous_columns_use_the_reference_deciles() -> None:
    rng = np.random.default_rng(1)
    reference, current = pd.Series(rng.gamma(2.0, 10.0, 5000)), pd.Series(rng.gamma(2.0, 10.0, 3000) + 40)
    shares = binned_shares(reference, current, numeric=True)

    assert shares.numeric_bins and len(shares.bins) == QUANTILE_BINS - 1
    assert np.allclose(shares.bins, np.quantile(reference, np.linspace(0.1, 0.9, 9)))
    assert np.allclose(shares.reference, 0.1, atol=0.001)  # every bin holds a tenth of the reference
    # Values beyond the reference range land in the open outer bins, never outside every bin.
    assert shares.current.sum() == pytest.approx(1) and shares.current[-1] > 0.5


def test_a_mass_point_keeps_its_share_in_one_bin() -> None:
    values = np.concatenate([np.zeros(600), np.linspace(1, 100, 400)])
    edges = quantile_edges(values)
    assert len(edges) == len(np.unique(edges)) < QUANTILE_BINS - 1
    shares = binned_shares(pd.Series(values), pd.Series(values), numeric=True)
    assert shares.reference[0] == pytest.approx(0.6)
    assert psi(pd.Series(values), pd.Series(values), numeric=True) == 0.0


def test_category_psi_matches_the_formula_by_hand() -> None:
    reference = pd.Series(["a"] * 50 + ["b"] * 50)
    current = pd.Series(["a"] * 20 + ["b"] * 80)
    by_hand = (0.2 - 0.5) * math.log(0.2 / 0.5) + (0.8 - 0.5) * math.log(0.8 / 0.5)
    assert psi(reference, current, numeric=False) == pytest.approx(by_hand)


def test_a_category_new_in_current_gets_the_empty_bin_floor() -> None:
    reference = pd.Series(["a"] * 50 + ["b"] * 50)
    current = pd.Series(["a"] * 40 + ["b"] * 40 + ["c"] * 20)
    by_hand = (0.4 - 0.5) * math.log(0.4 / 0.5) * 2 + (0.2 - 1e-4) * math.log(0.2 / 1e-4)
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


def generated_features(tmp_path, seed: int, customers: int, cutoff: dt.date, contract) -> pd.DataFrame:
    """Features of one generator run at one cutoff, through the DuckDB twin of the feature job."""
    events = generate(customers, seed=seed).events
    bronze = events.assign(
        customer_id=events["customer_id"].astype(str), event_day=events["event_time"].dt.normalize().dt.date
    )
    path = tmp_path / f"events-{seed}.parquet"
    bronze.to_parquet(path, index=False, coerce_timestamps="us")
    frame = compute_reference_features(contract, [path], [cutoff], observed_until=dt.date(2025, 1, 1))
    return frame[frame[CUTOFF] == pd.Timestamp(cutoff)]


def test_the_thresholds_hold_on_a_rerun_of_the_generator_and_trip_on_a_shift(tmp_path, settings_for_psi) -> None:
    contract = load_contract("synthetic", settings_for_psi)
    contract = contract.model_copy(update={"entities": None})  # event features only: the generator's own draws
    numeric, categorical = model_feature_columns(contract)
    cutoff = dt.date(2024, 9, 1)
    first = generated_features(tmp_path, 1, 3000, cutoff, contract)
    second = generated_features(tmp_path, 2, 3000, cutoff, contract)
    values = {c: psi(first[c], second[c], numeric=True) for c in numeric if first[c].notna().any()}
    values |= {c: psi(first[c], second[c], numeric=False) for c in categorical}
    thresholds = MonitoringSettings()
    worst = max(values, key=values.get)
    print(f"no-drift re-run: largest PSI {values[worst]:.4f} ({worst}) over {len(values)} features")  # noqa: T201
    assert values[worst] < thresholds.psi_warn, sorted(values.items(), key=lambda kv: -kv[1])[:5]

    shifted = second.assign(amount_sum_30d=second["amount_sum_30d"] * 3)  # prices tripled
    assert psi(first["amount_sum_30d"], shifted["amount_sum_30d"], numeric=True) >= thresholds.psi_drift


@pytest.fixture
def settings_for_psi(tmp_path):
    from churnops.config import Settings

    return Settings(home=tmp_path / "home")
