"""Retraining control: which trigger may start the training DAG now, and why every other one may not.

Four triggers, checked in this order (at most one fires per decision; the others are recorded as suppressed):

- `manual`: an operator asked (drift DAG param `force_retrain`); skips the cooldown, not the running guard.
- `drift_detected`: features that matter to the champion (gain importance above a floor) drifted, and the drift
  is confirmed — either the importance-weighted drifted share reaches `min_weighted_drift_share` in this run, or
  important features drifted in each of the last `confirm_runs` consecutive runs of the same champion version.
- `performance_drop`: the realized ROC AUC of the champion's latest matured scoring date fell more than
  `performance_drop_margin` below its out-of-time ROC AUC.
- `scheduled`: the champion is older than `retrain_every_days`, or there is no champion yet.

Guards, applied to every trigger that wants to fire: a training run already queued or running suppresses it; a
retraining fired less than `cooldown_hours` ago suppresses it (except `manual` and the no-champion bootstrap).
Every trigger that wanted to fire is recorded, fired or suppressed, with the reason.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from churnops.config import MonitoringSettings, Settings
from monitoring.store import DriftRun, MonitoringStore, RealizedPerformance, RetrainDecision

TRIGGERS = ("manual", "drift_detected", "performance_drop", "scheduled")


@dataclass(frozen=True)
class ChampionState:
    """What the control needs to know about the champion (None fields when there is none)."""

    version: str | None
    out_of_time_roc_auc: float | None = None
    trained_at: dt.datetime | None = None


@dataclass(frozen=True)
class Candidate:
    """A trigger that wants to fire, or a drift trigger that is not confirmed yet (fire=False)."""

    trigger: str
    reason: str
    wants_to_fire: bool = True
    skips_cooldown: bool = False
    details: dict[str, Any] = field(default_factory=dict)


def drift_candidate(runs: list[DriftRun], monitoring: MonitoringSettings) -> Candidate | None:
    """The drift trigger from the newest-first drift runs of one dataset (snapshot comparisons); None = no drift."""
    if not runs or not runs[0].important_drifted:
        return None
    latest = runs[0]
    details = {
        "important_drifted": latest.important_drifted,
        "weighted_drifted_share": round(latest.weighted_drifted_share, 4),
        "drifted_share": round(latest.drifted_share, 4),
    }
    if latest.weighted_drifted_share >= monitoring.min_weighted_drift_share:
        return Candidate(
            "drift_detected",
            f"importance-weighted drifted share {latest.weighted_drifted_share:.3f} >= "
            f"{monitoring.min_weighted_drift_share} (drifted: {', '.join(latest.important_drifted)})",
            details=details,
        )
    streak = 0
    for run in runs:
        if run.model_version != latest.model_version or not run.important_drifted:
            break
        streak += 1
    if streak >= monitoring.confirm_runs:
        return Candidate(
            "drift_detected",
            f"drift on important features confirmed over {streak} consecutive runs "
            f"(drifted: {', '.join(latest.important_drifted)})",
            details=details,
        )
    return Candidate(
        "drift_detected",
        f"drift not confirmed: important features drifted in {streak} of the last {monitoring.confirm_runs} runs "
        f"and the weighted share {latest.weighted_drifted_share:.3f} < {monitoring.min_weighted_drift_share}",
        wants_to_fire=False,
        details=details,
    )


def performance_candidate(
    realized: list[RealizedPerformance], champion: ChampionState, monitoring: MonitoringSettings
) -> Candidate | None:
    rows = [r for r in realized if r.model_version == champion.version and r.roc_auc is not None]
    if not rows or champion.out_of_time_roc_auc is None:
        return None
    latest = max(rows, key=lambda r: r.logical_date)
    floor = champion.out_of_time_roc_auc - monitoring.performance_drop_margin
    if latest.roc_auc >= floor:
        return None
    return Candidate(
        "performance_drop",
        f"realized ROC AUC {latest.roc_auc:.4f} of the {latest.logical_date} list is below the champion's "
        f"out-of-time {champion.out_of_time_roc_auc:.4f} minus the margin {monitoring.performance_drop_margin}",
        details={"logical_date": latest.logical_date.isoformat(), "realized_roc_auc": latest.roc_auc},
    )


def scheduled_candidate(champion: ChampionState, monitoring: MonitoringSettings, now: dt.datetime) -> Candidate | None:
    if champion.version is None:
        return Candidate("scheduled", "no champion yet: bootstrap training", skips_cooldown=True)
    if monitoring.retrain_every_days is None or champion.trained_at is None:
        return None
    age = now - champion.trained_at
    if age < dt.timedelta(days=monitoring.retrain_every_days):
        return None
    return Candidate(
        "scheduled",
        f"champion v{champion.version} was trained {age.days} days ago (schedule: every "
        f"{monitoring.retrain_every_days} days)",
    )


def decide(
    candidates: list[Candidate],
    history: list[RetrainDecision],
    *,
    dataset: str,
    now: dt.datetime,
    retrain_running: bool,
    monitoring: MonitoringSettings,
    drift_run_id: str | None = None,
) -> list[RetrainDecision]:
    """Turn candidates into decisions: at most one fires, every other is suppressed with its reason."""
    fired_before = [d for d in history if d.fired]
    last_fired = max(fired_before, key=lambda d: d.decided_at) if fired_before else None
    cooldown_ends = (
        last_fired.decided_at + dt.timedelta(hours=monitoring.cooldown_hours) if last_fired is not None else None
    )
    ordered = sorted(candidates, key=lambda c: TRIGGERS.index(c.trigger))
    decisions, fired = [], None
    for candidate in ordered:
        if not candidate.wants_to_fire:
            fire, reason = False, candidate.reason
        elif fired is not None:
            fire, reason = (
                False,
                f"{candidate.reason}; suppressed: `{fired}` already requested retraining now",
            )
        elif retrain_running:
            fire, reason = (
                False,
                f"{candidate.reason}; suppressed: a training run is already queued or running",
            )
        elif cooldown_ends is not None and now < cooldown_ends and not candidate.skips_cooldown:
            fire = False
            reason = (
                f"{candidate.reason}; suppressed: cooldown until {cooldown_ends.isoformat(timespec='seconds')} "
                f"after `{last_fired.trigger}` fired at {last_fired.decided_at.isoformat(timespec='seconds')}"
            )
        else:
            fire, reason = True, candidate.reason
            fired = candidate.trigger
        decisions.append(
            RetrainDecision(
                dataset=dataset,
                trigger=candidate.trigger,
                fired=fire,
                reason=reason,
                decided_at=now,
                drift_run_id=drift_run_id,
                details=candidate.details,
            )
        )
    return decisions


def decide_and_record(
    store: MonitoringStore,
    *,
    dataset: str,
    champion: ChampionState,
    now: dt.datetime,
    retrain_running: bool,
    manual: bool = False,
    monitoring: MonitoringSettings | None = None,
) -> list[RetrainDecision]:
    """Gather the candidates from the store, decide, record every decision; return them (fired first)."""
    monitoring = monitoring or Settings().monitoring
    runs = [
        r
        for r in store.recent_drift_runs(dataset, limit=10 * monitoring.confirm_runs)
        if r.current_source == "snapshot" and not r.drift_run_id.endswith("-online")
    ]
    candidates = [
        c
        for c in (
            Candidate("manual", "retraining requested by an operator", skips_cooldown=True) if manual else None,
            drift_candidate(runs, monitoring) if champion.version is not None else None,
            performance_candidate(store.realized(dataset), champion, monitoring) if champion.version else None,
            scheduled_candidate(champion, monitoring, now),
        )
        if c is not None
    ]
    decisions = decide(
        candidates,
        store.retrain_decisions(dataset),
        dataset=dataset,
        now=now,
        retrain_running=retrain_running,
        monitoring=monitoring,
        drift_run_id=runs[0].drift_run_id if runs and champion.version is not None else None,
    )
    for decision in decisions:
        store.record_retrain_decision(decision)
    return sorted(decisions, key=lambda d: not d.fired)


def champion_state(model_name: str) -> ChampionState:
    """The registry's champion: version, out-of-time ROC AUC and when its training run started."""
    import mlflow

    from churnops.registry import champion_or_none

    version = champion_or_none(model_name)
    if version is None:
        return ChampionState(version=None)

    metadata = mlflow.models.get_model_info(f"models:/{model_name}/{version.version}").metadata or {}
    auc = metadata.get("out_of_time_metrics", {}).get("roc_auc")
    trained_at = dt.datetime.fromtimestamp(version.creation_timestamp / 1000, tz=dt.UTC)
    return ChampionState(version=str(version.version), out_of_time_roc_auc=auc, trained_at=trained_at)


def record_training_reason(training_run_id: str, reason: str, request: dict[str, Any] | None = None) -> None:
    """Tag a training run in MLflow with why it ran (`drift_detected`, `performance_drop`, `scheduled`, `manual`)."""
    from mlflow import MlflowClient

    if reason not in TRIGGERS:
        raise ValueError(f"unknown retraining reason {reason!r}; expected one of {TRIGGERS}")
    client = MlflowClient()
    client.set_tag(training_run_id, "churnops.retrain_reason", reason)
    if request and request.get("detail"):
        client.set_tag(training_run_id, "churnops.retrain_detail", str(request["detail"])[:5000])
