"""Realized performance: once the horizon of a past scoring list has passed, how good were its scores?

For each scoring list (Parquet files of `jobs.score`, or the PostgreSQL score lists when the database is
configured) whose cutoff + horizon lies within the observed data, the outcome of every scored customer is derived
from the committed bronze event log (`churnops.bronze`; the feature job ingests it, this reads only the label
windows' days) with the dataset's own label rule — churn: no event in [cutoff, cutoff + H); propensity: at least
one — and compared with the scores: ROC AUC, precision in the top 10 %, and calibration (mean score vs observed
rate, expected calibration error over ten equal-width score bins).
"""

from __future__ import annotations

import datetime as dt
import logging

import numpy as np
import pandas as pd

from churnops.bronze import EVENT_DAY, EVENT_TYPE, read_bronze_events
from churnops.config import Settings
from churnops.dataset import DatasetContract
from churnops.features import ENTITY_ID
from monitoring.store import MonitoringStore, RealizedPerformance, open_store

log = logging.getLogger(__name__)

CALIBRATION_BINS = 10


def calibration(labels: np.ndarray, scores: np.ndarray, n_bins: int = CALIBRATION_BINS) -> tuple[float, list[dict]]:
    """Expected calibration error (row-weighted |mean score - observed rate| over equal-width score bins) and
    the bins themselves."""
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    index = np.clip(np.searchsorted(edges, scores, side="right") - 1, 0, n_bins - 1)
    error, bins = 0.0, []
    for b in range(n_bins):
        inside = index == b
        if not inside.any():
            continue
        mean_score, observed = float(scores[inside].mean()), float(labels[inside].mean())
        error += inside.mean() * abs(mean_score - observed)
        bins.append(
            {
                "low": float(edges[b]),
                "high": float(edges[b + 1]),
                "n": int(inside.sum()),
                "mean_score": mean_score,
                "observed_rate": observed,
            }
        )
    return float(error), bins


def realized_outcomes(
    events: pd.DataFrame, contract: DatasetContract, customers: pd.Series, cutoff: dt.date
) -> np.ndarray:
    """0/1 outcomes of `customers` at `cutoff` from the bronze events (columns customer_id, event_day,
    event_type), by the contract's label rule."""
    horizon = dt.timedelta(days=contract.label.horizon_days)
    days = pd.to_datetime(events[EVENT_DAY])
    window = (days >= pd.Timestamp(cutoff)) & (days < pd.Timestamp(cutoff + horizon))
    if contract.label.event_type is not None:
        window &= events[EVENT_TYPE] == contract.label.event_type
    active = set(events.loc[window, ENTITY_ID].astype(str))
    had_event = customers.astype(str).isin(active).to_numpy()
    return (~had_event if contract.label.kind == "churn" else had_event).astype(np.int64)


def evaluate_list(
    scores: pd.DataFrame, outcomes: np.ndarray, contract: DatasetContract, logical_date: dt.date
) -> RealizedPerformance:
    """Realized metrics of one scoring list (columns customer_id, score, model_name, model_version)."""
    from jobs.evaluate import precision_at_top

    values = scores["score"].to_numpy(dtype=np.float64)
    both_classes = outcomes.min() != outcomes.max()
    error, bins = calibration(outcomes, values)
    auc = None
    if both_classes:
        from sklearn.metrics import roc_auc_score

        auc = float(roc_auc_score(outcomes, values))
    return RealizedPerformance(
        dataset=contract.name,
        logical_date=logical_date,
        model_name=str(scores["model_name"].iloc[0]),
        model_version=str(scores["model_version"].iloc[0]),
        horizon_days=int(contract.label.horizon_days),
        n_scored=len(values),
        n_positive=int(outcomes.sum()),
        roc_auc=auc,
        precision_at_10=float(precision_at_top(outcomes, values, 0.10)),
        mean_score=float(values.mean()),
        observed_rate=float(outcomes.mean()),
        calibration_error=error,
        calibration_bins=bins,
    )


def scoring_lists(settings: Settings, contract: DatasetContract) -> list[tuple[dt.date, pd.DataFrame]]:
    """(logical date, list) of every stored scoring list: PostgreSQL when configured, else the Parquet files
    (whose logical date is their cutoff)."""
    if settings.database_url is not None:
        from churnops import db

        conn = db.connect(settings, application_name="churnops-realized")
        try:
            frame = pd.read_sql_query(
                "SELECT logical_date, customer_id, cutoff, score, model_name, model_version "
                "FROM churnops.scores WHERE dataset = %(dataset)s",
                conn,
                params={"dataset": contract.name},
            )
        finally:
            conn.close()
        return [(pd.Timestamp(day).date(), group) for day, group in frame.groupby("logical_date")]
    from jobs.score import scores_path

    folder = scores_path(settings, contract.name, dt.date(2000, 1, 1)).parent
    lists = []
    for path in sorted(folder.glob("scores_*.parquet")):
        frame = pd.read_parquet(path)
        lists.append((pd.Timestamp(frame["cutoff"].iloc[0]).date(), frame))
    return lists


def compute_realized_performance(
    settings: Settings, contract: DatasetContract, store: MonitoringStore | None = None
) -> list[RealizedPerformance]:
    """Evaluate every scoring list whose horizon has passed within the observed data; record and return them."""
    if contract.label.horizon_days is None or contract.events is None:
        log.info("dataset %s has no event horizon: realized performance does not apply", contract.name)
        return []
    observed_until = contract.cutoffs.as_of
    horizon = dt.timedelta(days=contract.label.horizon_days)
    matured = [
        (day, frame)
        for day, frame in scoring_lists(settings, contract)
        if pd.Timestamp(frame["cutoff"].iloc[0]).date() + horizon <= observed_until
    ]
    if not matured:
        return []
    # Only the label windows' days and the columns the label rule reads, from the committed bronze layer.
    cutoffs = [pd.Timestamp(frame["cutoff"].iloc[0]).date() for _, frame in matured]
    events = read_bronze_events(
        settings,
        contract.name,
        columns=[ENTITY_ID, EVENT_DAY, EVENT_TYPE],
        first_day=min(cutoffs),
        last_day=max(cutoffs) + horizon - dt.timedelta(days=1),
    )
    results = []
    for logical_date, frame in matured:
        cutoff = pd.Timestamp(frame["cutoff"].iloc[0]).date()
        outcomes = realized_outcomes(events, contract, frame[ENTITY_ID], cutoff)
        results.append(evaluate_list(frame, outcomes, contract, logical_date))
    (store or open_store(settings)).record_realized(results)
    return results
