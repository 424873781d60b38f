"""Realized performance per cohort: once the horizon of a past scoring list has passed, how good were its scores?

Each scoring list (Parquet files of `churnops.jobs.score`, or the PostgreSQL score lists when the database is
configured) is evaluated once, on the first monitoring run whose date and data cover its whole horizon (cutoff + horizon
on or before both the run date and the day after the latest event): the outcome of every scored customer is derived from
the committed bronze event log (`churnops.bronze`; the feature job ingests it, this reads only the label windows'
days) with the dataset's own label rule — churn: no event in [cutoff, cutoff + H);
propensity: at least one — and compared with the scores: ROC AUC, precision in the top 10 %, and calibration
(mean score vs observed rate, expected calibration error over ten equal-width score bins). Lists already evaluated
are not evaluated again, so the series over time is one point per cohort. Each listed customer's outcome is kept
with the evaluation (`churnops.realized_outcomes`, or Parquet beside the JSON records), for the customer page.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

from churnops.bronze import EVENT_DAY, EVENT_TYPE, read_bronze_events, watermark
from churnops.config import Settings
from churnops.dataset import DatasetContract
from churnops.features import ENTITY_ID
from churnops.metrics import precision_at_top
from churnops.monitoring.store import ListOutcomes, MonitoringStore, RealizedPerformance, open_store
from churnops.paths import scores_folder

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
    scores: pd.DataFrame,
    outcomes: np.ndarray,
    contract: DatasetContract,
    logical_date: dt.date,
    list_kind: str = "regular",
) -> RealizedPerformance:
    """Realized metrics of one scoring list (columns customer_id, score, model_name, model_version)."""
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
        list_kind=list_kind,
    )


@dataclass(frozen=True)
class StoredList:
    logical_date: dt.date
    list_kind: str
    cutoff: dt.date
    frame: pd.DataFrame


def scoring_lists(settings: Settings, contract: DatasetContract) -> list[StoredList]:
    """Every stored scoring list: PostgreSQL when configured, else the Parquet files (dated by their cutoff)."""
    if settings.database_url is not None:
        from churnops import db

        conn = db.connect(settings, application_name="churnops-realized")
        try:
            frame = pd.read_sql_query(
                "SELECT logical_date, list_kind, customer_id, cutoff, score, model_name, model_version "
                # `adhoc` lists score files from outside the dataset (`churnops score --input`): not judged here.
                "FROM churnops.scores WHERE dataset = %(dataset)s AND list_kind IN ('regular', 'backfill')",
                conn,
                params={"dataset": contract.name},
            )
        finally:
            conn.close()
        return [
            StoredList(pd.Timestamp(day).date(), kind, pd.Timestamp(group["cutoff"].iloc[0]).date(), group)
            for (day, kind), group in frame.groupby(["logical_date", "list_kind"])
        ]
    lists = []
    for path in sorted(scores_folder(settings, contract.name).glob("scores_*.parquet")):
        frame = pd.read_parquet(path)
        cutoff = pd.Timestamp(frame["cutoff"].iloc[0]).date()
        kind = "backfill" if path.stem.endswith("_backfill") else "regular"
        lists.append(StoredList(cutoff, kind, cutoff, frame))
    return lists


def compute_realized_performance(
    settings: Settings,
    contract: DatasetContract,
    run_date: dt.date | None = None,
    store: MonitoringStore | None = None,
) -> list[RealizedPerformance]:
    """Evaluate every stored list whose horizon has passed by `run_date` and in the data, and that has not been
    evaluated yet; record and return the new evaluations."""
    if contract.label.horizon_days is None or contract.events is None:
        log.info("dataset %s has no event horizon: realized performance does not apply", contract.name)
        return []
    # Observed: up to the run date and the day after the latest event (never-ingested bronze is refused below,
    # when a list needs it, with the command that fixes it).
    latest = watermark(settings, contract.name)
    bounds = [d for d in (run_date, latest + dt.timedelta(days=1) if latest else None) if d is not None]
    observed_until = min(bounds) if bounds else dt.date.max
    store = store or open_store(settings)
    horizon = dt.timedelta(days=contract.label.horizon_days)
    evaluated = {row.key for row in store.realized(contract.name)}
    pending = [
        stored
        for stored in scoring_lists(settings, contract)
        if stored.cutoff + horizon <= observed_until
        and (stored.logical_date, stored.list_kind, str(stored.frame["model_version"].iloc[0])) not in evaluated
    ]
    if not pending:
        return []
    # Only the label windows' days and the columns the label rule reads, from the committed bronze layer.
    events = read_bronze_events(
        settings,
        contract.name,
        columns=[ENTITY_ID, EVENT_DAY, EVENT_TYPE],
        first_day=min(stored.cutoff for stored in pending),
        last_day=max(stored.cutoff for stored in pending) + horizon - dt.timedelta(days=1),
    )
    results, outcomes_by_list = [], {}
    for stored in pending:
        outcomes = realized_outcomes(events, contract, stored.frame[ENTITY_ID], stored.cutoff)
        result = evaluate_list(stored.frame, outcomes, contract, stored.logical_date, stored.list_kind)
        results.append(result)
        # Kept per customer too, for the customer page ("did she leave?").
        outcomes_by_list[result.key] = ListOutcomes(stored.frame[ENTITY_ID].reset_index(drop=True), outcomes)
    store.record_realized(results, outcomes_by_list)
    return results
