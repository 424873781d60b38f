"""Retraining control: which trigger may start the training DAG now, and why every other one may not.

Time is the run's: `now` is the run date's midnight (UTC) and the champion's age is counted from the run date of
its training data, so a replay of past months decides exactly as the live platform would have.

The policy (`MonitoringSettings.retrain_policy`) chooses the triggers that may fire:
- `drift` (the default): every trigger below;
- `schedule:<N>d`: only the age of the champion (retrain every N days of data), plus `manual` and the bootstrap;
- `never`: only `manual` and the bootstrap.

Triggers, checked in this order (at most one fires per decision; the others are recorded as suppressed):
- `manual`: an operator asked (drift DAG param `force_retrain`); skips the cooldown, not the running guard.
- `drift_detected`: features that matter to the champion (gain importance above a floor) drifted, and the drift
  is confirmed — either the importance-weighted drifted share reaches `min_weighted_drift_share` in this run, or
  important features drifted on each of the last `confirm_runs` *different* current snapshots of the same champion
  version (checking one snapshot twice confirms nothing).
- `performance_drop`: the realized ROC AUC of the champion's latest evaluated list fell more than
  `performance_drop_margin` below its evaluation ROC AUC (out of time, or the holdout of entity data).
- `scheduled`: the champion is older than the schedule, or there is no champion yet (the bootstrap).

Guards, applied to every trigger that wants to fire: a training run already queued or running suppresses it; a
retraining fired less than `cooldown_hours` ago suppresses it (except `manual`, and the very first bootstrap).
Every trigger that wanted to fire is recorded, fired or suppressed, with the reason. A fired decision is recorded
by whoever actually emits the request (`record_decision`), so a request that failed to go out starts no cooldown;
an advisory decision (the CLI without --trigger-training) is recorded but starts no cooldown either.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from churnops.config import MonitoringSettings
from churnops.metrics import evaluation_label
from churnops.monitoring.store import DriftRun, MonitoringStore, RealizedPerformance, RetrainDecision

TRIGGERS = ("manual", "drift_detected", "performance_drop", "scheduled")


@dataclass(frozen=True)
class RetrainPolicy:
    kind: str  # drift | schedule | never
    every_days: int | None = None

    @classmethod
    def parse(cls, text: str) -> RetrainPolicy:
        """`drift`, `never` or `schedule:<N>d`."""
        if text in ("drift", "never"):
            return cls(text)
        if text.startswith("schedule:") and text.endswith("d") and text[len("schedule:") : -1].isdigit():
            days = int(text[len("schedule:") : -1])
            if days >= 1:
                return cls("schedule", days)
        raise ValueError(f"unknown retraining policy {text!r}: use `drift`, `never` or `schedule:<N>d` (e.g. 28d)")


@dataclass(frozen=True)
class ChampionState:
    """What the control needs to know about the champion (None fields when there is none)."""

    version: str | None
    # Its ROC AUC on its evaluation rows: a later cutoff, or a holdout for entity data (`validation`).
    evaluation_roc_auc: float | None = None
    trained_at: dt.datetime | None = None
    validation: str = "out_of_time"


@dataclass(frozen=True)
class Candidate:
    """A trigger that wants to fire, or a drift trigger that is not confirmed yet (fire=False)."""

    trigger: str
    reason: str
    wants_to_fire: bool = True
    skips_cooldown: bool = False
    details: dict[str, Any] = field(default_factory=dict)


def _episode(runs: list[DriftRun]) -> list[DriftRun]:
    """The current drift episode: the newest-first unbroken run of drift runs of the newest run's champion with
    important drift."""
    latest, episode = runs[0], []
    for run in runs:
        if run.model_version != latest.model_version or not run.important_drifted:
            break
        episode.append(run)
    return episode


def _run_day(run: DriftRun) -> dt.date:
    return dt.date.fromisoformat(run.run_date) if run.run_date else run.started_at.date()


def drift_candidate(
    runs: list[DriftRun],
    monitoring: MonitoringSettings,
    retrained_on: list[dt.date] | None = None,
    newest_training_cutoff: dt.date | None = None,
) -> Candidate | None:
    """The drift trigger from the newest-first drift runs of one dataset (snapshot comparisons); None = no drift.

    `retrained_on`: the days drift retrainings fired for this champion. Once one has fired during the current
    episode, the next waits until the run's newest training cutoff reaches the episode's onset: before that, a
    retrained model could not have seen the change in its training labels, and would lose its gate again.
    """
    if not runs or not runs[0].important_drifted:
        return None
    latest, episode = runs[0], _episode(runs)
    onset = _run_day(episode[-1])
    details = {
        "important_drifted": latest.important_drifted,
        "weighted_drifted_share": round(latest.weighted_drifted_share, 4),
        "drifted_share": round(latest.drifted_share, 4),
        "current_snapshot": latest.current_snapshot,
        "onset": onset.isoformat(),
    }
    snapshots = list(dict.fromkeys(run.current_snapshot for run in episode))  # each current snapshot counts once
    if latest.weighted_drifted_share >= monitoring.min_weighted_drift_share:
        why = (
            f"importance-weighted drifted share {latest.weighted_drifted_share:.3f} >= "
            f"{monitoring.min_weighted_drift_share} (drifted: {', '.join(latest.important_drifted)})"
        )
    elif len(snapshots) >= monitoring.confirm_runs:
        why = (
            f"drift on important features confirmed over {len(snapshots)} consecutive snapshots "
            f"(drifted: {', '.join(latest.important_drifted)})"
        )
    else:
        return Candidate(
            "drift_detected",
            f"drift not confirmed: important features drifted on {len(snapshots)} of the last "
            f"{monitoring.confirm_runs} snapshots and the weighted share {latest.weighted_drifted_share:.3f} < "
            f"{monitoring.min_weighted_drift_share}",
            wants_to_fire=False,
            details=details,
        )
    already = [day for day in retrained_on or [] if day >= onset]
    if already and newest_training_cutoff is not None and newest_training_cutoff < onset:
        return Candidate(
            "drift_detected",
            f"{why}; waiting: a retraining for this drift (since {onset}) already ran on {max(already)}, and the "
            f"newest training cutoff ({newest_training_cutoff}) still predates the drift: another could not learn it",
            wants_to_fire=False,
            details=details,
        )
    return Candidate("drift_detected", why, details=details)


def performance_candidate(
    realized: list[RealizedPerformance], champion: ChampionState, monitoring: MonitoringSettings
) -> Candidate | None:
    rows = [r for r in realized if r.model_version == champion.version and r.roc_auc is not None]
    if not rows or champion.evaluation_roc_auc is None:
        return None
    latest = max(rows, key=lambda r: r.logical_date)
    floor = champion.evaluation_roc_auc - monitoring.performance_drop_margin
    if latest.roc_auc >= floor:
        return None
    return Candidate(
        "performance_drop",
        f"realized ROC AUC {latest.roc_auc:.4f} of the {latest.logical_date} list is below the champion's "
        f"{evaluation_label(champion.validation)} {champion.evaluation_roc_auc:.4f} minus the margin "
        f"{monitoring.performance_drop_margin}",
        details={"logical_date": latest.logical_date.isoformat(), "realized_roc_auc": latest.roc_auc},
    )


def scheduled_candidate(
    champion: ChampionState,
    every_days: int | None,
    now: dt.datetime,
    first_training: bool,
    last_training: dt.datetime | None = None,
) -> Candidate | None:
    """Retrain when the last training — the champion's, or a later one that lost its gate (`last_training`) — is
    `every_days` old in data time; bootstrap when there is no champion yet."""
    if champion.version is None:
        # The very first training skips the cooldown; a bootstrap that keeps failing the gate does not retry on
        # every drift run.
        return Candidate("scheduled", "no champion yet: bootstrap training", skips_cooldown=first_training)
    trained = [t for t in (champion.trained_at, last_training) if t is not None]
    if every_days is None or not trained:
        return None
    age = now - max(trained)
    if age < dt.timedelta(days=every_days):
        return None
    return Candidate(
        "scheduled",
        f"the last training was on data of {age.days} days ago (champion v{champion.version}; schedule: every "
        f"{every_days} days)",
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
    monitoring: MonitoringSettings,
    manual: bool = False,
    run_date: dt.date | None = None,
    advisory: bool = False,
    record_fired: bool = True,
    newest_training_cutoff: dt.date | None = None,
) -> list[RetrainDecision]:
    """Gather the candidates the policy allows from the store, decide, record; return the decisions, fired first.

    `newest_training_cutoff`: the newest cutoff a training on this run date would learn from (see
    `drift_candidate`).

    `record_fired=False` leaves the fired decision to the caller, who records it (`record_decision`) once the
    request is really out. `advisory` decisions are recorded as such and start no cooldown.
    """
    policy = RetrainPolicy.parse(monitoring.retrain_policy)
    runs = [
        r
        for r in store.recent_drift_runs(dataset, limit=10 * monitoring.confirm_runs)
        if r.current_source == "snapshot"
    ]
    history = [d for d in store.retrain_decisions(dataset) if not d.advisory]
    fired = [d for d in history if d.fired]
    watch = policy.kind == "drift" and champion.version is not None
    every_days = {"drift": monitoring.retrain_every_days, "schedule": policy.every_days}.get(policy.kind)
    drift_retrainings = [d.decided_at.date() for d in fired if d.trigger == "drift_detected"]
    candidates = [
        c
        for c in (
            Candidate("manual", "retraining requested by an operator", skips_cooldown=True) if manual else None,
            drift_candidate(runs, monitoring, drift_retrainings, newest_training_cutoff) if watch else None,
            performance_candidate(store.realized(dataset), champion, monitoring) if watch else None,
            scheduled_candidate(
                champion,
                every_days,
                now,
                first_training=not fired,
                last_training=max((d.decided_at for d in fired), default=None),
            ),
        )
        if c is not None
    ]
    decisions = decide(
        candidates,
        history,
        dataset=dataset,
        now=now,
        retrain_running=retrain_running,
        monitoring=monitoring,
        drift_run_id=runs[0].drift_run_id if runs and champion.version is not None else None,
    )
    stamped = [replace(d, run_date=run_date.isoformat() if run_date else None, advisory=advisory) for d in decisions]
    for decision in stamped:
        if record_fired or not decision.fired or advisory:
            store.record_retrain_decision(decision)
    return sorted(stamped, key=lambda d: not d.fired)


def record_decision(store: MonitoringStore, decision: RetrainDecision) -> None:
    """Record a fired decision once its request is out (re-recording the same run date's decision replaces it)."""
    store.record_retrain_decision(decision)


def decision_to_dict(decision: RetrainDecision) -> dict[str, Any]:
    """A JSON-able form (XCom) that `decision_from_dict` turns back into the decision."""
    return {**asdict(decision), "decided_at": decision.decided_at.isoformat()}


def decision_from_dict(raw: dict[str, Any]) -> RetrainDecision:
    return RetrainDecision(**{**raw, "decided_at": dt.datetime.fromisoformat(raw["decided_at"])})
