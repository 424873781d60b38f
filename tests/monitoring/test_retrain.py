"""Retraining control: drift must be confirmed, a cooldown and a running guard stop storms, and every trigger that
wanted to fire is recorded with its reason — in the embedded JSON store and in PostgreSQL."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from pathlib import Path

import pytest
from pydantic import SecretStr

from churnops.config import MonitoringSettings, Settings
from churnops.monitoring.retrain import ChampionState, decide_and_record
from churnops.monitoring.store import DriftRun, FeatureDrift, LocalStore
from churnops.monitoring.store_postgres import PostgresStore

T0 = dt.datetime(2025, 3, 1, 4, 0, tzinfo=dt.UTC)
CHAMPION = ChampionState(version="3", evaluation_roc_auc=0.82, trained_at=T0 - dt.timedelta(days=5))
MONITORING = MonitoringSettings(cooldown_hours=24, confirm_runs=2, min_weighted_drift_share=0.3)


def drift_run(
    run_id: str, at: dt.datetime, drifted: dict[str, float], version: str = "3", snapshot: str | None = None
) -> DriftRun:
    """A drift run over four features with the given {feature: importance} drifted (of its own snapshot, unless
    `snapshot` names one)."""
    importances = {"spend_30d": 0.5, "visits_30d": 0.3, "age": 0.15, "region": 0.05}
    features = [
        FeatureDrift(
            feature=name,
            psi=0.9 if name in drifted else 0.01,
            missing_share=0.0,
            missing_share_reference=0.0,
            importance=importance,
            threshold=0.2,
            psi_drifted=name in drifted,
            missing_drifted=False,
        )
        for name, importance in importances.items()
    ]
    return DriftRun(
        drift_run_id=run_id,
        dataset="synthetic",
        model_name="churnops-synthetic",
        model_version=version,
        started_at=at,
        finished_at=at,
        reference_snapshot="ref",
        current_snapshot=snapshot or f"snapshot-of-{run_id}",
        features=features,
        score_psi=0.05,
        weighted_drifted_share=sum(importances[n] for n in drifted),
        warn_threshold=0.1,
        drift_threshold=0.2,
        important_drifted=sorted(drifted),
    )


def decide(store, at: dt.datetime, running: bool = False, manual: bool = False, **options):
    return decide_and_record(
        store,
        dataset="synthetic",
        champion=options.pop("champion", CHAMPION),
        now=at,
        retrain_running=running,
        manual=manual,
        monitoring=options.pop("monitoring", MONITORING),
        **options,
    )


@pytest.fixture(params=["local", "postgres"])
def store(request, tmp_path: Path):
    if request.param == "local":
        return LocalStore(tmp_path / "monitoring")
    url = request.getfixturevalue("postgres_url")
    pg = PostgresStore(Settings(home=tmp_path, database_url=SecretStr(url)))
    # One database per session: start each test from empty tables.
    conn = pg._connect()
    with conn, conn.cursor() as cur:
        cur.execute(
            "TRUNCATE churnops.drift_runs, churnops.drift_metrics, churnops.retrain_decisions, "
            "churnops.realized_performance CASCADE"
        )
    conn.close()
    return pg


def test_no_drift_starts_no_retraining_and_records_nothing(store) -> None:
    store.record_drift_run(drift_run("r1", T0, {}))
    assert decide(store, T0) == []
    assert store.retrain_decisions("synthetic") == []


def test_strong_weighted_drift_fires_at_once(store) -> None:
    store.record_drift_run(drift_run("r1", T0, {"spend_30d": 0.5}))
    (decision,) = decide(store, T0)
    assert decision.fired and decision.trigger == "drift_detected"
    assert "weighted drifted share 0.500" in decision.reason
    assert decision.drift_run_id == "r1"


def test_weak_drift_is_suppressed_until_confirmed_by_a_second_run(store) -> None:
    store.record_drift_run(drift_run("r1", T0, {"age": 0.15}))
    (first,) = decide(store, T0)
    assert not first.fired and "not confirmed" in first.reason

    store.record_drift_run(drift_run("r2", T0 + dt.timedelta(days=1), {"age": 0.15}))
    (second,) = decide(store, T0 + dt.timedelta(days=1))
    assert second.fired and "confirmed over 2 consecutive snapshots" in second.reason

    recorded = store.retrain_decisions("synthetic")
    assert [(d.trigger, d.fired) for d in recorded] == [("drift_detected", False), ("drift_detected", True)]


def test_drift_of_a_previous_champion_does_not_confirm_drift_of_the_new_one(store) -> None:
    store.record_drift_run(drift_run("r1", T0, {"age": 0.15}, version="2"))
    store.record_drift_run(drift_run("r2", T0 + dt.timedelta(hours=1), {"age": 0.15}, version="3"))
    (decision,) = decide(store, T0 + dt.timedelta(hours=1))
    assert not decision.fired


def test_two_drift_runs_within_the_cooldown_trigger_at_most_one_retraining(store) -> None:
    store.record_drift_run(drift_run("r1", T0, {"spend_30d": 0.5}))
    decide(store, T0)
    store.record_drift_run(drift_run("r2", T0 + dt.timedelta(hours=6), {"spend_30d": 0.5}))
    (second,) = decide(store, T0 + dt.timedelta(hours=6))

    assert not second.fired and "cooldown until 2025-03-02T04:00:00+00:00" in second.reason
    fired = [d for d in store.retrain_decisions("synthetic") if d.fired]
    assert len(fired) == 1

    store.record_drift_run(drift_run("r3", T0 + dt.timedelta(hours=25), {"spend_30d": 0.5}))
    (third,) = decide(store, T0 + dt.timedelta(hours=25))
    assert third.fired


def test_a_running_training_suppresses_every_trigger_with_the_reason(store) -> None:
    store.record_drift_run(drift_run("r1", T0, {"spend_30d": 0.5}))
    decisions = decide(store, T0, running=True, manual=True)
    assert {d.trigger for d in decisions} == {"manual", "drift_detected"}
    assert not any(d.fired for d in decisions)
    assert all("already queued or running" in d.reason for d in decisions)


def test_manual_skips_the_cooldown_and_fires_alone(store) -> None:
    store.record_drift_run(drift_run("r1", T0, {"spend_30d": 0.5}))
    decide(store, T0)
    decisions = decide(store, T0 + dt.timedelta(hours=1), manual=True)
    assert [(d.trigger, d.fired) for d in decisions] == [("manual", True), ("drift_detected", False)]
    assert "`manual` already requested retraining" in decisions[1].reason


def test_no_champion_bootstraps_a_scheduled_training(store) -> None:
    (decision,) = decide_and_record(
        store,
        dataset="synthetic",
        champion=ChampionState(version=None),
        now=T0,
        retrain_running=False,
        monitoring=MONITORING,
    )
    assert decision.fired and decision.trigger == "scheduled" and "no champion" in decision.reason


def test_an_old_champion_is_retrained_on_schedule(store) -> None:
    old = ChampionState(version="3", evaluation_roc_auc=0.8, trained_at=T0 - dt.timedelta(days=45))
    (decision,) = decide_and_record(
        store, dataset="synthetic", champion=old, now=T0, retrain_running=False, monitoring=MONITORING
    )
    assert decision.fired and decision.trigger == "scheduled" and "45 days ago" in decision.reason


def test_a_realized_auc_drop_beyond_the_margin_fires_performance_drop(store) -> None:
    from churnops.monitoring.store import RealizedPerformance

    def realized(day: int, auc: float) -> RealizedPerformance:
        return RealizedPerformance(
            "synthetic", dt.date(2025, 1, day), "churnops-synthetic", "3", 60, 1000, 200, auc, 0.5, 0.2, 0.2, 0.01
        )

    store.record_realized([realized(1, 0.80)])  # within the 0.05 margin of 0.82
    assert decide(store, T0) == []
    store.record_realized([realized(2, 0.74)])
    (decision,) = decide(store, T0)
    assert decision.fired and decision.trigger == "performance_drop" and "0.7400" in decision.reason


def test_drift_confirmation_needs_two_different_snapshots(store) -> None:
    store.record_drift_run(drift_run("r1", T0, {"age": 0.15}, snapshot="same"))
    decide(store, T0)
    # The same snapshot checked again hours later (a second drift run on unchanged data) confirms nothing.
    store.record_drift_run(drift_run("r2", T0 + dt.timedelta(hours=6), {"age": 0.15}, snapshot="same"))
    (again,) = decide(store, T0 + dt.timedelta(hours=6))
    assert not again.fired and "1 of the last 2 snapshots" in again.reason

    store.record_drift_run(drift_run("r3", T0 + dt.timedelta(days=1), {"age": 0.15}, snapshot="next-day"))
    (confirmed,) = decide(store, T0 + dt.timedelta(days=1))
    assert confirmed.fired


def test_the_never_policy_ignores_drift_but_still_bootstraps_a_dataset(store) -> None:
    never = MONITORING.model_copy(update={"retrain_policy": "never"})
    store.record_drift_run(drift_run("r1", T0, {"spend_30d": 0.5}))
    assert decide(store, T0, monitoring=never) == []
    (bootstrap,) = decide(store, T0, monitoring=never, champion=ChampionState(version=None))
    assert bootstrap.fired and "no champion" in bootstrap.reason


def test_the_schedule_policy_retrains_on_the_age_of_the_champions_data_only(store) -> None:
    every_28 = MONITORING.model_copy(update={"retrain_policy": "schedule:28d"})
    store.record_drift_run(drift_run("r1", T0, {"spend_30d": 0.5}))
    assert decide(store, T0, monitoring=every_28) == []  # five days old, drift ignored
    old = ChampionState(version="3", evaluation_roc_auc=0.82, trained_at=T0 - dt.timedelta(days=28))
    (decision,) = decide(store, T0, monitoring=every_28, champion=old)
    assert decision.fired and decision.trigger == "scheduled" and "every 28 days" in decision.reason


def test_an_unknown_policy_is_refused_with_the_accepted_forms() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="retrain_policy"):
        MonitoringSettings(retrain_policy="weekly")


def test_a_fired_decision_left_to_the_requester_starts_no_cooldown_until_recorded(store) -> None:
    from churnops.monitoring.retrain import record_decision

    store.record_drift_run(drift_run("r1", T0, {"spend_30d": 0.5}))
    (fired,) = decide(store, T0, record_fired=False, run_date=T0.date())
    assert fired.fired and store.retrain_decisions("synthetic") == []
    # The request never went out (say the task failed): an hour later the drift fires again, no cooldown.
    store.record_drift_run(drift_run("r2", T0 + dt.timedelta(hours=1), {"spend_30d": 0.5}))
    (again,) = decide(store, T0 + dt.timedelta(hours=1), record_fired=False, run_date=T0.date())
    assert again.fired
    record_decision(store, again)
    store.record_drift_run(drift_run("r3", T0 + dt.timedelta(hours=2), {"spend_30d": 0.5}))
    (cooled,) = decide(store, T0 + dt.timedelta(hours=2))
    assert not cooled.fired and "cooldown" in cooled.reason


def test_an_advisory_decision_is_recorded_but_starts_no_cooldown(store) -> None:
    store.record_drift_run(drift_run("r1", T0, {"spend_30d": 0.5}))
    (advice,) = decide(store, T0, advisory=True, run_date=T0.date())
    assert advice.fired and advice.advisory
    assert [d.advisory for d in store.retrain_decisions("synthetic")] == [True]
    store.record_drift_run(drift_run("r2", T0 + dt.timedelta(hours=1), {"spend_30d": 0.5}))
    (real,) = decide(store, T0 + dt.timedelta(hours=1))
    assert real.fired


def test_re_deciding_a_run_date_replaces_its_decisions(store) -> None:
    store.record_drift_run(drift_run("r1", T0, {"age": 0.15}))
    decide(store, T0, run_date=T0.date())
    decide(store, T0, run_date=T0.date())
    assert len(store.retrain_decisions("synthetic")) == 1


def test_a_bootstrap_that_keeps_failing_waits_for_the_cooldown(store) -> None:
    nobody = ChampionState(version=None)
    (first,) = decide(store, T0, champion=nobody)
    assert first.fired
    (second,) = decide(store, T0 + dt.timedelta(hours=2), champion=nobody)
    assert not second.fired and "cooldown" in second.reason


def test_after_a_drift_retraining_the_next_waits_until_the_training_data_reaches_the_drift(store) -> None:
    """A retraining fired at the drift's start could only learn from labels that predate it; while the champion
    stays and the drift persists, the next one waits until the newest training cutoff reaches the drift's onset."""
    day = dt.timedelta(days=7)
    drift_only = MONITORING.model_copy(update={"retrain_every_days": None})
    store.record_drift_run(replace(drift_run("r1", T0, {"spend_30d": 0.5}), run_date=T0.date().isoformat()))
    (first,) = decide(store, T0, newest_training_cutoff=(T0 - 6 * day).date(), monitoring=drift_only)
    assert first.fired

    later = T0 + 2 * day
    store.record_drift_run(replace(drift_run("r2", later, {"spend_30d": 0.5}), run_date=later.date().isoformat()))
    (waiting,) = decide(store, later, newest_training_cutoff=(later - 6 * day).date(), monitoring=drift_only)
    assert not waiting.fired and "the newest training cutoff (2025-02-01) still predates the drift" in waiting.reason

    much_later = T0 + 7 * day
    store.record_drift_run(
        replace(drift_run("r3", much_later, {"spend_30d": 0.5}), run_date=much_later.date().isoformat())
    )
    (learnable,) = decide(
        store, much_later, newest_training_cutoff=(much_later - 6 * day).date(), monitoring=drift_only
    )
    assert learnable.fired


def test_a_retraining_that_lost_its_gate_restarts_the_schedule(store) -> None:
    every_28 = MONITORING.model_copy(update={"retrain_policy": "schedule:28d"})
    old = ChampionState(version="3", evaluation_roc_auc=0.82, trained_at=T0 - dt.timedelta(days=28))
    (first,) = decide(store, T0, monitoring=every_28, champion=old)
    assert first.fired  # trains, loses its gate: the champion (and its age) stay
    assert decide(store, T0 + dt.timedelta(days=7), monitoring=every_28, champion=old) == []
    (again,) = decide(store, T0 + dt.timedelta(days=28), monitoring=every_28, champion=old)
    assert again.fired and "28 days ago" in again.reason
