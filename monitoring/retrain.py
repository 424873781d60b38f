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
  `performance_drop_margin` below its out-of-time ROC AUC.
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

from churnops.config import MonitoringSettings, Settings
from monitoring.store import DriftRun, MonitoringStore, RealizedPerformance, RetrainDecision

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
        "current_snapshot": latest.current_snapshot,
    }
    if latest.weighted_drifted_share >= monitoring.min_weighted_drift_share:
        return Candidate(
            "drift_detected",
            f"importance-weighted drifted share {latest.weighted_drifted_share:.3f} >= "
            f"{monitoring.min_weighted_drift_share} (drifted: {', '.join(latest.important_drifted)})",
            details=details,
        )
    # Consecutive runs of this champion with important drift, counting each current snapshot once.
    snapshots: list[str] = []
    for run in runs:
        if run.model_version != latest.model_version or not run.important_drifted:
            break
        if run.current_snapshot not in snapshots:
            snapshots.append(run.current_snapshot)
    if len(snapshots) >= monitoring.confirm_runs:
        return Candidate(
            "drift_detected",
            f"drift on important features confirmed over {len(snapshots)} consecutive snapshots "
            f"(drifted: {', '.join(latest.important_drifted)})",
            details=details,
        )
    return Candidate(
        "drift_detected",
        f"drift not confirmed: important features drifted on {len(snapshots)} of the last {monitoring.confirm_runs} "
        f"snapshots and the weighted share {latest.weighted_drifted_share:.3f} < {monitoring.min_weighted_drift_share}",
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


def scheduled_candidate(
    champion: ChampionState, every_days: int | None, now: dt.datetime, first_training: bool
) -> Candidate | None:
    """Retrain when the champion is `every_days` old (in data time), or bootstrap when there is none yet."""
    if champion.version is None:
        # The very first training skips the cooldown; a bootstrap that keeps failing the gate does not retry on
        # every drift run.
        return Candidate("scheduled", "no champion yet: bootstrap training", skips_cooldown=first_training)
    if every_days is None or champion.trained_at is None:
        return None
    age = now - champion.trained_at
    if age < dt.timedelta(days=every_days):
        return None
    return Candidate(
        "scheduled",
        f"champion v{champion.version} was trained on data of {age.days} days ago (schedule: every {every_days} days)",
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
) -> list[RetrainDecision]:
    """Gather the candidates the policy allows from the store, decide, record; return the decisions, fired first.

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
    watch = policy.kind == "drift" and champion.version is not None
    every_days = {"drift": monitoring.retrain_every_days, "schedule": policy.every_days}.get(policy.kind)
    candidates = [
        c
        for c in (
            Candidate("manual", "retraining requested by an operator", skips_cooldown=True) if manual else None,
            drift_candidate(runs, monitoring) if watch else None,
            performance_candidate(store.realized(dataset), champion, monitoring) if watch else None,
            scheduled_candidate(champion, every_days, now, first_training=not any(d.fired for d in history)),
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


def champion_state(settings: Settings, model_name: str, dataset: str) -> ChampionState:
    """The registry's champion: version, out-of-time ROC AUC and the data time it was trained at (the run date of
    its training snapshot; the registration time for models that record none)."""
    import mlflow

    from churnops.registry import champion_or_none

    version = champion_or_none(model_name)
    if version is None:
        return ChampionState(version=None)
    metadata = mlflow.models.get_model_info(f"models:/{model_name}/{version.version}").metadata or {}
    auc = metadata.get("out_of_time_metrics", {}).get("roc_auc")
    run_date = _training_run_date(settings, dataset, metadata)
    trained_at = (
        dt.datetime.combine(run_date, dt.time(), tzinfo=dt.UTC)
        if run_date is not None
        else dt.datetime.fromtimestamp(version.creation_timestamp / 1000, tz=dt.UTC)
    )
    return ChampionState(version=str(version.version), out_of_time_roc_auc=auc, trained_at=trained_at)


def _training_run_date(settings: Settings, dataset: str, metadata: dict[str, Any]) -> dt.date | None:
    """The run date of the snapshot a model was trained on, from its metadata or the snapshot it names."""
    from churnops.snapshots import METADATA_FILE, dataset_dir, read_metadata

    if metadata.get("run_date"):
        return dt.date.fromisoformat(metadata["run_date"])
    snapshot_hash = metadata.get("snapshot_hash")
    folder = dataset_dir(settings, dataset) / str(snapshot_hash)[:16] if snapshot_hash else None
    if folder is None or not (folder / METADATA_FILE).exists():
        return None
    run_date = read_metadata(folder).run_date
    return dt.date.fromisoformat(run_date) if run_date else None


def record_training_reason(training_run_id: str, reason: str, request: dict[str, Any] | None = None) -> None:
    """Tag a training run in MLflow with why it ran (`drift_detected`, `performance_drop`, `scheduled`, `manual`)."""
    from mlflow import MlflowClient

    if reason not in TRIGGERS:
        raise ValueError(f"unknown retraining reason {reason!r}; expected one of {TRIGGERS}")
    client = MlflowClient()
    client.set_tag(training_run_id, "churnops.retrain_reason", reason)
    if request and request.get("detail"):
        client.set_tag(training_run_id, "churnops.retrain_detail", str(request["detail"])[:5000])


def decide_for_run(
    settings: Settings,
    contract: Any,
    run_date: str | dt.date,
    *,
    retrain_running: bool,
    manual: bool = False,
    advisory: bool = False,
) -> list[RetrainDecision]:
    """The retraining decision of one run date of a dataset, at that date's midnight (UTC).

    Records every decision that did not fire (and, when `advisory`, the fired one as advice); a fired decision is
    left to whoever emits the request, through `record_decision`.
    """
    from churnops.registry import configure_mlflow
    from monitoring.store import open_store

    day = run_date if isinstance(run_date, dt.date) else dt.date.fromisoformat(run_date)
    configure_mlflow(settings)
    return decide_and_record(
        open_store(settings),
        dataset=contract.name,
        champion=champion_state(settings, contract.model_name, contract.name),
        now=dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC),
        retrain_running=retrain_running,
        monitoring=settings.monitoring,
        manual=manual,
        run_date=day,
        advisory=advisory,
        record_fired=advisory,
    )
