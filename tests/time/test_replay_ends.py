"""The two ends of a replay: run dates too early to train a first model are recorded, not run; the lists whose
horizon ends after the last run date are evaluated once the rest of the log is released, never past its end."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest

from churnops.cli.replay import _replay_contract
from churnops.cli.replay_steps import mature_remaining_lists, maturity_date, untrainable_reason
from churnops.config import Settings
from churnops.dataset import DatasetContract, load_contract
from churnops.jobs.feeder import EventFeeder
from churnops.monitoring.store import open_store
from churnops.monitoring.timeline import append_step, read_timeline, realized_cohorts, skipped_step
from churnops.paths import scores_path

D = dt.date


def replay_contract(tmp_path, source: DatasetContract, settings: Settings) -> DatasetContract:
    """The replay's copy of `source` (events from the landing folder, no pinned dates), as `churnops replay` makes."""
    path = _replay_contract(source, "replayed", tmp_path / "replay" / "landing", tmp_path / "replay")
    return load_contract(str(path), settings)


@pytest.mark.parametrize(
    ("run_date", "why"),
    [
        (D(1997, 7, 1), "no training cutoff has labels that end before the out-of-time cutoff"),
        (D(1997, 9, 9), "no time fold possible"),
        (D(1997, 12, 9), "no time fold possible"),
        (D(1997, 12, 16), None),
        (D(1998, 3, 31), None),
    ],
)
def test_cdnow_cannot_train_before_its_cutoffs_give_one_time_fold(tmp_path, run_date, why):
    """CDNOW's fortnightly cutoffs from 1997-03-01 with a 90-day horizon: a first model needs a matured out-of-time
    cutoff and training cutoffs 90 days apart, i.e. a run date of 1997-12-16 at the earliest on the weekly grid."""
    settings = Settings(home=tmp_path / "home")
    contract = replay_contract(tmp_path, load_contract("cdnow", settings), settings)
    reason = untrainable_reason(contract, run_date, cv_folds=2, last_event_day=run_date - dt.timedelta(days=1))
    if why is None:
        assert reason is None
    else:
        assert reason is not None and reason.startswith("too little history to train") and why in reason


@pytest.mark.slow  # MLflow is asked for the champion (minutes to import under load)
def test_a_run_date_not_run_is_recorded_with_its_reason(tmp_path):
    settings = Settings(home=tmp_path / "home")
    contract = replay_contract(tmp_path, load_contract("cdnow", settings), settings)
    from churnops.registry import configure_mlflow

    configure_mlflow(settings)
    why = untrainable_reason(contract, D(1997, 7, 1), cv_folds=2, last_event_day=D(1997, 6, 30))
    row = skipped_step(settings, contract, replay_id="r", policy="drift", step=0, run_date=D(1997, 7, 1), why=why)
    timeline = append_step(settings, tmp_path, row)
    assert timeline["decision_reason"].tolist() == [f"not run: {why}"]
    assert read_timeline(tmp_path)[["champion_version", "scored_rows", "training_outcome"]].isna().all(axis=None)


def test_a_first_model_is_planned_on_the_data_released_not_on_the_run_date(tmp_path):
    """The same run date is too early when the data stops short of it (the feature job plans on the day after the
    last day of data) and when there is no data at all."""
    settings = Settings(home=tmp_path / "home")
    contract = replay_contract(tmp_path, load_contract("cdnow", settings), settings)
    assert untrainable_reason(contract, D(1997, 12, 16), 2, last_event_day=D(1997, 12, 15)) is None
    assert "no time fold possible" in untrainable_reason(contract, D(1997, 12, 16), 2, last_event_day=D(1997, 12, 5))
    assert untrainable_reason(contract, D(1997, 12, 16), 2, last_event_day=None) == "no event before 1997-12-16"


def test_the_maturity_date_is_the_last_list_plus_the_horizon_capped_at_the_log_end():
    assert maturity_date(D(1998, 3, 31), 90, D(1998, 6, 30)) == D(1998, 6, 29)
    assert maturity_date(D(1998, 4, 7), 90, D(1998, 6, 30)) == D(1998, 7, 1)
    assert maturity_date(None, 90, D(1998, 6, 30)) is None


def test_lists_of_the_last_run_dates_are_evaluated_after_the_replay_with_the_platform_code(tmp_path):
    """Churn, 3-day horizon, log until 01-06. The list of 01-02 matures on 01-05, after the last run date (01-03):
    it is evaluated once the rest of the log is released; the list of 01-05 would need data to 01-07 and is
    reported beyond the log. No event of 01-07 or later is ever released."""
    events = pd.DataFrame(
        {
            "who": ["a", "b", "a", "c", "b", "c", "a"],
            "when": pd.to_datetime(
                ["2024-01-01", "2024-01-01", "2024-01-02", "2024-01-03", "2024-01-04", "2024-01-06", "2024-01-09"]
            ),
            "value": 1.0,
        }
    )
    events.to_parquet(tmp_path / "events.parquet", index=False)
    source = DatasetContract.model_validate(
        {
            "name": "feed",
            "events": {
                "path": str(tmp_path / "events.parquet"),
                "entity_key": "who",
                "timestamp": "when",
                "amount": "value",
            },
            "label": {"kind": "churn", "horizon_days": 3},
            "cutoffs": {"first": "2024-01-01"},
        }
    )
    settings = Settings(home=tmp_path / "home")
    contract = replay_contract(tmp_path, source, settings)
    feeder = EventFeeder.for_contract(source, tmp_path / "replay" / "landing")
    feeder.events = feeder.events[feeder.events["_day"] <= D(2024, 1, 6)]  # the recorded log ends on 01-06
    feeder.release_history(D(2024, 1, 2))
    feeder.release_until(D(2024, 1, 4))  # the last run date, 01-03, saw data to 01-03
    for cutoff, scores in ((D(2024, 1, 2), [0.5, 0.2, 0.95, 0.9]), (D(2024, 1, 5), [0.1, 0.2, 0.3, 0.4])):
        path = scores_path(settings, contract.name, cutoff)
        path.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(
            {"customer_id": ["a", "b", "c", "d"], "score": scores, "cutoff": pd.Timestamp(cutoff)}
            | {"model_name": "m", "model_version": "1"}
        ).to_parquet(path)

    maturity = mature_remaining_lists(settings, contract, feeder)

    assert maturity is not None
    assert (maturity.released_until, maturity.evaluated, maturity.beyond_the_log) == (
        D(2024, 1, 7),
        [D(2024, 1, 2)],
        [D(2024, 1, 5)],
    )
    assert max(feeder.landing.glob("day=*")).name == "day=2024-01-06"
    (realized,) = open_store(settings).realized(contract.name)
    # [01-02, 01-05): a, b and c bought, d (never seen) churned; d's 0.9 ranks above a and b, below c: 2 pairs of 3.
    assert (realized.n_scored, realized.n_positive, realized.roc_auc) == (4, 1, pytest.approx(2 / 3))
    cohorts = realized_cohorts(settings, contract, last_run_date=D(2024, 1, 3))
    assert cohorts[["cohort", "matured_after_replay"]].values.tolist() == [[D(2024, 1, 2), True]]
    # Run again (a resumed replay): nothing new is evaluated, nothing is released twice.
    assert mature_remaining_lists(settings, contract, feeder).evaluated == []
