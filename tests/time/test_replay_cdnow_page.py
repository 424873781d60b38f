"""The CDNOW replay page is built from the replay's timeline and cohort records: one row per scored list with its
realized figures (or why it has none), the trainings with their reasons, the run dates not run."""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt

import pandas as pd

from benchmarks.replay_cdnow import cohort_table, not_run, render, training_table
from churnops.config import Settings
from churnops.monitoring.timeline import COHORT_COLUMNS, NOT_RUN, append_step
from tests.monitoring.test_timeline import step

D = dt.date


def small_replay(tmp_path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Four weekly run dates: the first not run, a bootstrap on the second, lists on the last three; the list of
    week 2 evaluated during the replay, week 3 after it, week 4 beyond the log."""
    settings = Settings(home=tmp_path / "home")
    first = step(D(1997, 12, 9), 0.0)
    rows = [
        dataclasses.replace(
            first,
            snapshot_id=None,
            champion_version=None,
            decision_trigger=None,
            decision_reason=NOT_RUN + "too little history to train",
            training_outcome=None,
            trained_version=None,
            training_reason=None,
            scored_rows=None,
            seconds={},
        ),
        dataclasses.replace(step(D(1997, 12, 16), 0.0, "promoted"), decision_trigger="scheduled", scored_rows=100),
        dataclasses.replace(step(D(1997, 12, 23), 0.0), scored_rows=110),
        dataclasses.replace(step(D(1997, 12, 30), 0.0), scored_rows=120),
    ]
    for row in rows:
        timeline = append_step(settings, tmp_path, dataclasses.replace(row, champion_version="3"))
    cohorts = pd.DataFrame(
        [
            [D(1997, 12, 16), "3", 90, 100, 25, 0.25, 0.8, 0.6, 0.3, 0.05, False],
            [D(1997, 12, 23), "3", 90, 110, 22, 0.2, 0.7, 0.5, 0.3, 0.1, True],
        ],
        columns=COHORT_COLUMNS,
    )
    return timeline, cohorts


def test_every_scored_list_is_a_row_with_its_realized_figures_or_the_reason_it_has_none(tmp_path):
    timeline, cohorts = small_replay(tmp_path)
    table = cohort_table(timeline, cohorts)
    assert table["run_date"].tolist() == [D(1997, 12, 16), D(1997, 12, 23), D(1997, 12, 30)]
    assert table["customers_scored"].tolist() == [100, 110, 120]
    assert table["evaluated"].tolist() == ["replay", "after", "not matured"]
    assert table["roc_auc"].tolist()[:2] == [0.8, 0.7] and pd.isna(table["roc_auc"].iloc[2])
    assert table["positive_rate"].tolist()[:2] == [0.25, 0.2]
    assert table["model_version"].tolist() == ["3", "3", "3"]


def test_trainings_and_run_dates_not_run_come_from_the_timeline(tmp_path):
    timeline, _ = small_replay(tmp_path)
    trainings = training_table(timeline)
    assert trainings[["run_date", "trigger", "outcome"]].values.tolist() == [[D(1997, 12, 16), "scheduled", "promoted"]]
    assert not_run(timeline)["run_date"].tolist() == [D(1997, 12, 9)]


def test_the_page_states_the_computed_figures_and_draws_the_cohorts(tmp_path):
    timeline, cohorts = small_replay(tmp_path)
    args = argparse.Namespace(start="1997-12-09", end="1997-12-30", trials=3)
    page = render(args, timeline, cohorts, wall=None, out=tmp_path)
    assert "not run for lack of history: 1 (first run date that ran: 1997-12-16)" in page
    assert "lists scored: 3; evaluated: 2 (1 after the last run date); not matured within the log: 1" in page
    assert "mean 0.7500, min 0.7000, max 0.8000" in page
    assert "trainings requested: 1; trained: 1 (1 promoted); skipped for lack of new data: 0" in page
    assert "| 1997-12-23 | 110 | 0.2000 | 0.7000 | 0.5000 | 3 | after |" in page
    assert (tmp_path / "replay-cdnow.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
