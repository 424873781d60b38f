"""Classical survival baselines the boosted model is compared with, on the same customers.

- **Cox PH** (lifelines `CoxPHFitter`) and a **Weibull AFT** model (lifelines `WeibullAFTFitter`) on six RFM
  covariates, fitted on the same out-of-time training rows as the boosted model. Cox's baseline hazard is known only
  up to the longest training follow-up, so its curves stay flat after it; the Weibull curve is parametric and goes on.
- **BG/NBD** (`churnops.jobs.baselines`): P(buy by day t) is its probability of at least one purchase in (T, T + t],
  from parameters fitted on the evaluated cutoff's purchase history alone (no outcome), as the churn baselines do.

Every baseline returns `SurvivalPredictions` on the same daily grid; its risk is minus the restricted mean
purchase-free days on that grid, as for the boosted model, so the C-index ranks every model the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from churnops.jobs.baselines import bgnbd_purchase_probability, fit_bgnbd, rfm_from_features
from churnops.jobs.survival.data import DURATION, EVENT
from churnops.jobs.survival.metrics import SurvivalPredictions, restricted_mean_days

# Six RFM covariates (frequency, recency, tenure, monetary, recent activity), on a log scale: the snapshot columns.
RFM_COVARIATES = (
    "active_days_all",
    "days_since_last_event",
    "days_since_first_event",
    "amount_mean_all",
    "amount_sum_all",
    "active_days_90d",
)
# A small ridge keeps the fit stable: several covariates move together (frequency, total spend).
COX_PENALIZER = 0.01


@dataclass(frozen=True)
class RFMScaler:
    """log1p of the RFM columns, standardised with the training rows' mean and standard deviation."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, frame: pd.DataFrame) -> RFMScaler:
        logged = _logged(frame)
        return cls(mean=logged.mean(axis=0), std=np.where(logged.std(axis=0) > 0, logged.std(axis=0), 1.0))

    def transform(self, frame: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame((_logged(frame) - self.mean) / self.std, columns=list(RFM_COVARIATES), index=frame.index)


def _logged(frame: pd.DataFrame) -> np.ndarray:
    missing = [c for c in RFM_COVARIATES if c not in frame.columns]
    if missing:
        raise ValueError(f"the survival baselines need the RFM columns {missing}; use an event-log feature snapshot")
    values = frame[list(RFM_COVARIATES)].to_numpy(dtype=float)
    return np.log1p(np.nan_to_num(np.maximum(values, 0.0), nan=0.0))


@dataclass(frozen=True)
class LifelinesBaseline:
    """A fitted lifelines regression model (Cox PH or Weibull AFT) on the scaled RFM covariates."""

    name: str
    fitter: Any
    scaler: RFMScaler

    def predict(self, frame: pd.DataFrame, days: np.ndarray) -> SurvivalPredictions:
        curves = self.fitter.predict_survival_function(self.scaler.transform(frame), times=days)
        survival = np.clip(curves.to_numpy().T, 0.0, 1.0)
        return SurvivalPredictions(days=days, survival=survival, risk=-restricted_mean_days(survival, days))

    def summary(self) -> dict[str, float]:
        return {
            str("_".join(map(str, k)) if isinstance(k, tuple) else k): float(v) for k, v in self.fitter.params_.items()
        }


def fit_lifelines_baseline(train: pd.DataFrame, kind: str) -> LifelinesBaseline:
    """Fit `cox` (Cox PH, Efron ties, small ridge) or `weibull_aft` on the training rows' durations and events."""
    from lifelines import CoxPHFitter, WeibullAFTFitter

    scaler = RFMScaler.fit(train)
    data = scaler.transform(train).assign(**{DURATION: train[DURATION].to_numpy(), EVENT: train[EVENT].to_numpy()})
    if kind == "cox":
        fitter = CoxPHFitter(penalizer=COX_PENALIZER)
    elif kind == "weibull_aft":
        fitter = WeibullAFTFitter(penalizer=COX_PENALIZER)
    else:
        raise ValueError(f"unknown lifelines baseline {kind!r}; use 'cox' or 'weibull_aft'")
    fitter.fit(data, duration_col=DURATION, event_col=EVENT)
    return LifelinesBaseline(name=kind, fitter=fitter, scaler=scaler)


def bgnbd_predictions(evaluated: pd.DataFrame, days: np.ndarray) -> tuple[SurvivalPredictions, dict[str, float]]:
    """BG/NBD fitted on the evaluated rows' purchase history; S(t) = 1 - P(at least one purchase by day t)."""
    rfm = rfm_from_features(evaluated)
    params = fit_bgnbd(rfm)
    buys = np.column_stack([bgnbd_purchase_probability(params, rfm, float(d)) for d in days])
    survival = np.clip(1.0 - buys, 0.0, 1.0)
    return SurvivalPredictions(
        days=days, survival=survival, risk=-restricted_mean_days(survival, days)
    ), params.as_dict()
