"""Retraining control: drift must be confirmed, a cooldown and a running guard stop storms, and every trigger that
wanted to fire is recorded with its reason — in the embedded JSON store and in PostgreSQL."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from pydantic import SecretStr

from churnops.config import Settings
from monitoring.retrain import ChampionState, decide_and_record
from monitoring.settings import MonitoringSettings
from monitoring.store import DriftRun, FeatureDrift, LocalStore, PostgresStore

T0 = dt.datetime(2025, 3, 1, 4, 0, tzinfo=dt.UTC)
CHAMPION = ChampionState(version="3", out_of_time_roc_auc=0.82, trained_at=T0 - dt.timedelta(days=5))
MONITORING = MonitoringSettings(cooldown_hours=24, confirm_runs=2, min_weighted_drift_share=0.3)


def drift_run(run_id: str, at: dt.datetime, drifted: dict[str, float], version: str = "3") -> DriftRun:
    """A drift run over four features with the given {feature: importance} drifted."""
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
        current_snapshot="cur",
        features=features,
        score_psi=0.05,
        weighted_drifted_share=sum(importances[n] for n in drifted),
        warn_threshold=0.1,
        drift_threshold=0.2,
        important_drifted=sorted(drifted),
    )


def decide(store, at: dt.datetime, running: bool = False, manual: bool = False):
    return decide_and_record(
        store,
        dataset="synthetic",
        champion=CHAMPION,
        now=at,
        retrain_running=running,
        manual=manual,
        monitoring=MONITORING,
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
    assert second.fired and "confirmed over 2 consecutive runs" in second.reason

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
    old = ChampionState(version="3", out_of_time_roc_auc=0.8, trained_at=T0 - dt.timedelta(days=45))
    (decision,) = decide_and_record(
        store, dataset="synthetic", champion=old, now=T0, retrain_running=False, monitoring=MONITORING
    )
    assert decision.fired and decision.trigger == "scheduled" and "45 days ago" in decision.reason


def test_a_realized_auc_drop_beyond_the_margin_fires_performance_drop(store) -> None:
    from monitoring.store import RealizedPerformance

    def realized(day: int, auc: float) -> RealizedPerformance:
        return RealizedPerformance(
            "synthetic", dt.date(2025, 1, day), "churnops-synthetic", "3", 60, 1000, 200, auc, 0.5, 0.2, 0.2, 0.01
        )

    store.record_realized([realized(1, 0.80)])  # within the 0.05 margin of 0.82
    assert decide(store, T0) == []
    store.record_realized([realized(2, 0.74)])
    (decision,) = decide(store, T0)
    assert decision.fired and decision.trigger == "performance_drop" and "0.7400" in decision.reason
