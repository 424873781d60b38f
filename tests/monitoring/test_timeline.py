"""A replay's timeline: one row per run date (re-recording a date replaces it), in Parquet and PostgreSQL, drawn as
a PNG, and the Grafana replay panels answer from the recorded rows."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import psycopg2
from pydantic import SecretStr

from churnops.config import Settings
from churnops.monitoring.timeline import TimelineStep, append_step, read_timeline
from churnops.monitoring.timeline_plot import plot_timelines

REPO = Path(__file__).resolve().parents[2]


def step(run_date: dt.date, auc: float, outcome: str | None = None) -> TimelineStep:
    return TimelineStep(
        replay_id="regime-drift",
        dataset="regime_shift",
        policy="drift",
        step=(run_date - dt.date(2024, 6, 3)).days // 7,
        run_date=run_date,
        watermark=run_date - dt.timedelta(days=1),
        snapshot_id="abc",
        champion_version="2",
        decision_trigger="drift_detected" if outcome else None,
        decision_reason="confirmed" if outcome else "no trigger",
        training_outcome=outcome,
        trained_version="3" if outcome else None,
        training_reason="drift_detected" if outcome else None,
        weighted_drifted_share=0.12,
        important_drifted=["support_call_count_30d"],
        psi={"support_call_count_30d": 0.37},
        realized_cohort=run_date - dt.timedelta(days=28),
        realized_roc_auc=auc,
        realized_precision_at_10=0.5,
        realized_model_version="2",
        scored_rows=4000,
        seconds={"features": 30.0, "drift": 5.0},
    )


def test_re_recording_a_run_date_replaces_its_row(tmp_path):
    settings = Settings(home=tmp_path / "home")
    append_step(settings, tmp_path, step(dt.date(2024, 7, 1), 0.9))
    append_step(settings, tmp_path, step(dt.date(2024, 7, 8), 0.88))
    frame = append_step(settings, tmp_path, step(dt.date(2024, 7, 1), 0.91))
    assert list(frame["run_date"]) == [dt.date(2024, 7, 1), dt.date(2024, 7, 8)]
    assert read_timeline(tmp_path)["realized_roc_auc"].tolist() == [0.91, 0.88]


def test_the_timeline_is_drawn_with_its_trainings(tmp_path):
    settings = Settings(home=tmp_path / "home")
    for week, auc in enumerate([0.91, 0.9, 0.86, 0.87, 0.92]):
        outcome = "promoted" if week == 3 else None
        append_step(settings, tmp_path, step(dt.date(2024, 7, 1) + dt.timedelta(weeks=week), auc, outcome))
    png = plot_timelines({"drift": read_timeline(tmp_path)}, tmp_path / "t.png", "t", {"shift": dt.date(2024, 7, 8)})
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_the_grafana_replay_panels_answer_from_the_recorded_steps(tmp_path, postgres_url):
    settings = Settings(home=tmp_path / "home", database_url=SecretStr(postgres_url))
    append_step(settings, tmp_path, step(dt.date(2024, 7, 1), 0.9))
    append_step(settings, tmp_path, step(dt.date(2024, 7, 8), 0.88, "promoted"))
    board = json.loads((REPO / "grafana" / "dashboards" / "pipelines.json").read_text())
    queries = [
        (panel["title"], target["rawSql"])
        for panel in board["panels"]
        for target in panel["targets"]
        if "churnops.replay_timeline" in target.get("rawSql", "")
    ]
    assert len(queries) == 3
    with psycopg2.connect(postgres_url) as conn, conn.cursor() as cursor:
        for title, sql in queries:
            cursor.execute(sql)
            assert cursor.fetchall(), title
        cursor.execute("SELECT psi, important_drifted FROM churnops.replay_timeline WHERE run_date = '2024-07-08'")
        assert cursor.fetchone() == ({"support_call_count_30d": 0.37}, ["support_call_count_30d"])
