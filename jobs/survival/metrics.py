"""How a survival model is judged: concordance, time-dependent AUC, integrated Brier score and calibration.

Every function takes the observed (duration, event) of the evaluated customers and the model's predictions for
them, so the survival champion and each baseline are measured the same way on the same rows. "Risk" is oriented
towards the event: a higher risk means an earlier expected purchase.

- Harrell's C (lifelines `concordance_index`): the share of comparable pairs — the earlier time an observed
  purchase — in which the earlier buyer has the higher risk.
- Cumulative/dynamic AUC at t (scikit-survival `cumulative_dynamic_auc`): customers who bought by t against those
  still without a purchase after t, with inverse-probability-of-censoring weights; without censoring before t it
  equals the ROC AUC of the "bought by day t" label.
- Integrated Brier score (scikit-survival `integrated_brier_score`): the IPCW Brier score of S(t) averaged over days.
- Calibration at t: customers grouped into deciles of predicted P(buy by t); per decile the mean prediction
  against the Kaplan-Meier estimate of the same probability, which stays unbiased under censoring.

The censoring distribution for the IPCW weights is estimated on the evaluated rows themselves: it describes their
follow-up, and no outcome is used to fit anything a model sees.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from churnops.jobs.survival.data import DURATION, EVENT

HORIZONS_DAYS = (30, 90, 180)
CALIBRATION_GROUPS = 10


def _outcomes(durations: np.ndarray, events: np.ndarray, last_day: float) -> np.ndarray:
    """sksurv outcomes, every follow-up censored the day after `last_day` (the last day a metric looks at).

    With one administrative end of follow-up, the censoring survival G drops to zero on that day, and sksurv
    refuses a zero weight for a purchase made on it. Censoring everything at `last_day + 1` changes no metric
    up to `last_day` (cases, controls and their weights there stay the same) and keeps G positive where it is used.
    """
    from sksurv.util import Surv

    durations = np.asarray(durations, dtype=float)
    beyond = durations > last_day + 1
    return Surv.from_arrays(
        event=np.asarray(events).astype(bool) & (durations <= last_day), time=np.where(beyond, last_day + 1, durations)
    )


def harrell_c_index(durations: np.ndarray, events: np.ndarray, risk: np.ndarray) -> float:
    """Harrell's concordance of `risk` (higher = purchase expected sooner) with the observed times."""
    from lifelines.utils import concordance_index

    return float(concordance_index(np.asarray(durations, dtype=float), -np.asarray(risk, dtype=float), events))


def time_dependent_auc(
    durations: np.ndarray, events: np.ndarray, risk_by_day: np.ndarray, days: Sequence[int]
) -> dict[int, float]:
    """Cumulative/dynamic AUC at each day; column j of `risk_by_day` is the risk used at `days[j]` (e.g. P(buy by
    that day)), or pass one column to use the same risk at every day."""
    from sksurv.metrics import cumulative_dynamic_auc

    outcomes = _outcomes(durations, events, float(max(days)))
    risk_by_day = np.asarray(risk_by_day, dtype=float).reshape(len(outcomes), -1)
    if risk_by_day.shape[1] not in (1, len(days)):
        raise ValueError(f"risk_by_day has {risk_by_day.shape[1]} columns; pass 1 or one per day ({len(days)})")
    estimate = risk_by_day[:, 0] if risk_by_day.shape[1] == 1 else risk_by_day
    aucs, _ = cumulative_dynamic_auc(outcomes, outcomes, estimate, np.asarray(days, dtype=float))
    return {int(d): float(a) for d, a in zip(days, aucs, strict=True)}


def integrated_brier(durations: np.ndarray, events: np.ndarray, survival: np.ndarray, days: np.ndarray) -> float:
    """Integrated Brier score of the survival curves (customers by `days`); `days` must lie inside the follow-up."""
    from sksurv.metrics import integrated_brier_score

    outcomes = _outcomes(durations, events, float(np.max(days)))
    return float(integrated_brier_score(outcomes, outcomes, np.asarray(survival, dtype=float), np.asarray(days)))


def kaplan_meier_at(durations: np.ndarray, events: np.ndarray, day: float) -> float:
    """Kaplan-Meier estimate of S(day): the observed share still without a purchase after `day` days."""
    durations, events = np.asarray(durations, dtype=float), np.asarray(events, dtype=np.int64)
    times = np.unique(durations[(events == 1) & (durations <= day)])
    at_risk = (durations[None, :] >= times[:, None]).sum(axis=1)
    buyers = ((durations[None, :] == times[:, None]) & (events[None, :] == 1)).sum(axis=1)
    return float(np.prod(1.0 - buyers / at_risk)) if len(times) else 1.0


def calibration_table(
    durations: np.ndarray, events: np.ndarray, p_buy: np.ndarray, day: int, groups: int = CALIBRATION_GROUPS
) -> pd.DataFrame:
    """Per decile of predicted P(buy by `day`): customers, mean prediction, Kaplan-Meier observed P(buy by day)."""
    p_buy = np.asarray(p_buy, dtype=float)
    ranks = pd.Series(p_buy).rank(method="first").to_numpy()
    group = np.minimum((ranks - 1) * groups // len(p_buy), groups - 1).astype(int)
    rows = []
    for g in range(groups):
        inside = group == g
        observed = 1.0 - kaplan_meier_at(durations[inside], events[inside], day)
        rows.append({"group": g + 1, "n": int(inside.sum()), "predicted": p_buy[inside].mean(), "observed": observed})
    return pd.DataFrame(rows)


def calibration_error(table: pd.DataFrame) -> float:
    """Customer-weighted mean |predicted - observed| over the groups of a calibration table."""
    return float(np.average(np.abs(table["predicted"] - table["observed"]), weights=table["n"]))


@dataclass(frozen=True)
class SurvivalPredictions:
    """What a model predicts for the evaluated customers: S(t) on `days` (1, 2, ...) and a horizon-free risk."""

    days: np.ndarray
    survival: np.ndarray
    risk: np.ndarray

    def p_buy_by(self, day: int) -> np.ndarray:
        index = int(np.searchsorted(self.days, day))
        if index >= len(self.days) or self.days[index] != day:
            raise ValueError(f"day {day} is not on the prediction grid (days {self.days[0]}..{self.days[-1]})")
        return 1.0 - self.survival[:, index]


def restricted_mean_days(survival: np.ndarray, days: np.ndarray) -> np.ndarray:
    """Expected purchase-free days within the grid, sum of S(t) over daily steps (restricted mean survival time)."""
    if not np.array_equal(days, np.arange(1, len(days) + 1)):
        raise ValueError("restricted_mean_days needs the daily grid 1, 2, ..., T")
    return np.asarray(survival, dtype=float).sum(axis=1)


def survival_metrics(
    frame: pd.DataFrame, predictions: SurvivalPredictions, horizons_days: Sequence[int] = HORIZONS_DAYS
) -> dict[str, float]:
    """C-index, AUC at each horizon (30/90/180 days by default) inside the follow-up, integrated Brier score and
    calibration error at those days, for one model."""
    durations, events = frame[DURATION].to_numpy(), frame[EVENT].to_numpy()
    follow_up = int(durations.max())
    horizons = [t for t in horizons_days if t < follow_up]
    aucs = time_dependent_auc(durations, events, np.column_stack([predictions.p_buy_by(t) for t in horizons]), horizons)
    brier_days = predictions.days[predictions.days < follow_up]
    in_grid = np.isin(predictions.days, brier_days)
    metrics = {
        "c_index": harrell_c_index(durations, events, predictions.risk),
        **{f"auc_{t}d": aucs[t] for t in horizons},
        "integrated_brier": integrated_brier(durations, events, predictions.survival[:, in_grid], brier_days),
    }
    for t in horizons:
        table = calibration_table(durations, events, predictions.p_buy_by(t), t)
        metrics[f"calibration_error_{t}d"] = calibration_error(table)
    return metrics
