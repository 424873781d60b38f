"""The survival report: Kaplan-Meier curves by predicted risk band against the model's mean predicted curves, the
calibration of P(buy by t), and the metrics table of the model beside its baselines.

Plots use matplotlib's Agg backend (no display). Risk bands are the platform's (`churnops.banding`): the top 10 %
of customers by risk are "high", the next 20 % "medium", the rest "low", so a survival list bands customers the way
a churn list does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from churnops.banding import DEFAULT_BAND, DEFAULT_RISK_BANDS
from churnops.jobs.survival.data import DURATION, EVENT
from churnops.jobs.survival.metrics import HORIZONS_DAYS, SurvivalPredictions, calibration_table

METRIC_COLUMNS = ("c_index", "auc_30d", "auc_90d", "auc_180d", "integrated_brier", "calibration_error_90d")


def risk_bands(risk: np.ndarray) -> np.ndarray:
    """The platform's named bands by risk quantile within this list (high = top 10 %, medium = next 20 %)."""
    risk = np.asarray(risk, dtype=float)
    quantile = (pd.Series(risk).rank(method="first").to_numpy() - 0.5) / len(risk)
    bands = np.full(len(risk), DEFAULT_BAND, dtype=object)
    for name, cut in sorted(DEFAULT_RISK_BANDS.items(), key=lambda item: item[1]):
        bands[quantile >= cut] = name
    return bands


def kaplan_meier_curve(durations: np.ndarray, events: np.ndarray, days: np.ndarray) -> np.ndarray:
    """Kaplan-Meier S(t) on a daily grid."""
    durations, events = np.asarray(durations), np.asarray(events)
    at_risk = (durations[None, :] >= days[:, None]).sum(axis=1)
    buyers = ((durations[None, :] == days[:, None]) & (events[None, :] == 1)).sum(axis=1)
    factors = np.where(at_risk > 0, 1.0 - buyers / np.maximum(at_risk, 1), 1.0)
    return np.cumprod(factors)


def plot_km_by_band(
    frame: pd.DataFrame, predictions: Mapping[str, SurvivalPredictions], path: Path, title: str
) -> None:
    """One panel per model: observed Kaplan-Meier curve of each risk band (solid) and the band's mean predicted
    curve (dashed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    durations, events = frame[DURATION].to_numpy(), frame[EVENT].to_numpy()
    figure, axes = plt.subplots(1, len(predictions), figsize=(5.5 * len(predictions), 4.2), squeeze=False)
    colours = {"high": "tab:red", "medium": "tab:orange", DEFAULT_BAND: "tab:blue"}
    for axis, (name, predicted) in zip(axes[0], predictions.items(), strict=True):
        bands = risk_bands(predicted.risk)
        for band, colour in colours.items():
            inside = bands == band
            observed = kaplan_meier_curve(durations[inside], events[inside], predicted.days)
            axis.step(predicted.days, 1 - observed, where="post", color=colour, label=f"{band}: observed (KM)")
            axis.plot(
                predicted.days,
                1 - predicted.survival[inside].mean(axis=0),
                "--",
                color=colour,
                label=f"{band}: predicted",
            )
        axis.set(title=name, xlabel="days from the cutoff", ylabel="P(bought by day t)", ylim=(0, 1))
        axis.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7, loc="upper left")
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def plot_calibration(frame: pd.DataFrame, predictions: Mapping[str, SurvivalPredictions], path: Path) -> None:
    """Predicted against Kaplan-Meier observed P(buy by t) by decile of the prediction, one panel per horizon."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    durations, events = frame[DURATION].to_numpy(), frame[EVENT].to_numpy()
    figure, axes = plt.subplots(1, len(HORIZONS_DAYS), figsize=(4.5 * len(HORIZONS_DAYS), 4.2), squeeze=False)
    for axis, day in zip(axes[0], HORIZONS_DAYS, strict=True):
        for name, predicted in predictions.items():
            table = calibration_table(durations, events, predicted.p_buy_by(day), day)
            axis.plot(table["predicted"], table["observed"], "o-", label=name, markersize=3)
        axis.plot([0, 1], [0, 1], ":", color="grey")
        axis.set(title=f"P(buy by day {day})", xlabel="predicted (decile mean)", ylabel="observed (Kaplan-Meier)")
        axis.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def metrics_markdown(metrics: Mapping[str, Mapping[str, float]], columns: Sequence[str] = METRIC_COLUMNS) -> list[str]:
    """A Markdown table: one row per model, the given metric columns (4 decimals; missing = —)."""
    lines = ["| model | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns)]
    for name, values in metrics.items():
        cells = [f"{values[c]:.4f}" if c in values else "—" for c in columns]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines
