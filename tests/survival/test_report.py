"""The survival report: risk bands, Kaplan-Meier by band against predicted curves, calibration, metrics table."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from churnops.jobs.survival.data import DURATION, EVENT
from churnops.jobs.survival.metrics import SurvivalPredictions
from churnops.jobs.survival.report import (
    kaplan_meier_curve,
    metrics_markdown,
    plot_calibration,
    plot_km_by_band,
    risk_bands,
)
from tests.survival.test_metrics import sample


def test_risk_bands_are_the_platforms_top_ten_and_next_twenty_percent() -> None:
    bands = risk_bands(np.arange(100.0))
    assert (bands[90:] == "high").all() and (bands[70:90] == "medium").all() and (bands[:70] == "low").all()


def test_kaplan_meier_curve_steps_down_only_on_purchase_days() -> None:
    curve = kaplan_meier_curve(np.array([2, 3, 3, 5]), np.array([1, 0, 1, 0]), np.arange(1, 7))
    np.testing.assert_allclose(curve, [1, 0.75, 0.75 * 2 / 3, 0.5, 0.5, 0.5])


def test_report_figures_and_table_are_written(tmp_path: Path) -> None:
    durations, events, x = sample(n=300, follow_up=200)
    days = np.arange(1, 201)
    survival = np.exp(-np.outer(np.exp(0.8 * x) / 30, days))
    predictions = {"model": SurvivalPredictions(days, survival, x), "flat": SurvivalPredictions(days, survival, -x)}
    frame = pd.DataFrame({DURATION: durations, EVENT: events})
    plot_km_by_band(frame, predictions, tmp_path / "km.png", "test")
    plot_calibration(frame, predictions, tmp_path / "calibration.png")
    assert (tmp_path / "km.png").stat().st_size > 10_000 and (tmp_path / "calibration.png").stat().st_size > 10_000
    table = metrics_markdown({"model": {"c_index": 0.71234, "auc_90d": 0.8}}, ("c_index", "auc_30d", "auc_90d"))
    assert table[2] == "| model | 0.7123 | — | 0.8000 |"
