"""Drift measurement: injected drift is flagged on exactly the shifted features; the HTML report shows them."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from churnops.config import MonitoringSettings
from churnops.jobs.inject_drift import shift_columns
from churnops.monitoring.measure import SCORE_COLUMN, measure_drift
from tests.monitoring.conftest import CATEGORICAL, NUMERIC, customer_frame

IMPORTANCES = {
    "spend_30d": 0.35,
    "visits_30d": 0.25,
    "age": 0.05,
    "days_since_last_event": 0.25,
    "support_calls_90d": 0.05,
    "plan": 0.04,
    "region": 0.01,
}


@pytest.fixture(scope="module")
def reference():
    return customer_frame(4000, seed=10)


def test_injected_drift_flags_the_shifted_features_and_not_the_untouched_ones(reference, tmp_path: Path) -> None:
    # A fresh sample of the same population: untouched columns differ only by sampling noise.
    current = shift_columns(
        customer_frame(3000, seed=11), {"spend_30d": 60.0, "age": 15.0}, new_categories={"region": "offshore"}
    )
    result = measure_drift(reference, current, NUMERIC, CATEGORICAL, IMPORTANCES, MonitoringSettings())

    flagged = {f.feature for f in result.features if f.drifted}
    assert flagged == {"spend_30d", "age", "region"}
    untouched = [f for f in result.features if f.feature not in flagged]
    assert all(f.psi < MonitoringSettings().psi_warn for f in untouched), [(f.feature, f.psi) for f in untouched]
    # Weighted by importance: spend (0.35) + age (0.05) + region (0.01) of a total of 1.
    assert result.weighted_drifted_share == pytest.approx(0.41)
    assert set(result.important_drifted) == {"spend_30d", "age", "region"}


def test_no_injected_drift_flags_nothing(reference) -> None:
    result = measure_drift(
        reference, customer_frame(3000, seed=12), NUMERIC, CATEGORICAL, IMPORTANCES, MonitoringSettings()
    )
    assert [f.feature for f in result.features if f.drifted] == []
    assert result.weighted_drifted_share == 0.0
    assert result.important_drifted == []


def test_missing_values_are_their_own_drift_signal(reference) -> None:
    current = customer_frame(3000, seed=13)
    current.loc[current.sample(frac=0.25, random_state=3).index, "visits_30d"] = np.nan
    result = measure_drift(reference, current, NUMERIC, CATEGORICAL, IMPORTANCES, MonitoringSettings())
    visits = next(f for f in result.features if f.feature == "visits_30d")
    assert visits.missing_drifted and not visits.psi_drifted
    assert visits.missing_share == pytest.approx(0.25, abs=0.01) and visits.missing_share_reference == 0.0


def test_a_feature_missing_from_current_counts_as_drifted_not_as_an_error(reference) -> None:
    current = customer_frame(3000, seed=14).drop(columns=["support_calls_90d"])
    result = measure_drift(reference, current, NUMERIC, CATEGORICAL, IMPORTANCES, MonitoringSettings())
    calls = next(f for f in result.features if f.feature == "support_calls_90d")
    assert calls.psi is None and calls.missing_share == 1.0 and calls.drifted


def test_score_distribution_psi_is_measured(reference) -> None:
    rng = np.random.default_rng(0)
    result = measure_drift(
        reference,
        customer_frame(3000, seed=15),
        NUMERIC,
        CATEGORICAL,
        IMPORTANCES,
        MonitoringSettings(),
        reference_scores=rng.beta(2, 8, len(reference)),
        current_scores=rng.beta(4, 6, 3000),
    )
    assert result.score_psi is not None and result.score_psi > 0.2
    assert SCORE_COLUMN not in {f.feature for f in result.features}


def test_html_report_exists_and_names_the_drifted_features(reference, tmp_path: Path) -> None:
    current = shift_columns(customer_frame(3000, seed=16), {"days_since_last_event": 30.0})
    report = tmp_path / "report.html"
    result = measure_drift(reference, current, NUMERIC, CATEGORICAL, IMPORTANCES, MonitoringSettings(), report)

    assert [f.feature for f in result.features if f.drifted] == ["days_since_last_event"]
    html = report.read_text()
    assert "<html" in html[:1000].lower()
    # Evidently renders one test verdict per column: "fail" marks a column whose PSI reached the threshold.
    verdicts = dict(
        re.findall(r'"title": "Value Drift for column (\w+)", "description": "[^"]*", "state": "(\w+)"', html)
    )
    assert set(verdicts) == set(NUMERIC + CATEGORICAL)
    assert {column for column, state in verdicts.items() if state == "fail"} == {"days_since_last_event"}
