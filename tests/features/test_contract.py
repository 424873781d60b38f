"""Dataset contracts: label kinds, cutoff schedules and the plans the built-in datasets promise training."""

from __future__ import annotations

import datetime as dt

import pytest

from churnops.config import Settings
from churnops.dataset import DatasetContract, load_contract
from churnops.features import event_feature_specs, model_feature_columns

D = dt.date


@pytest.fixture(scope="module")
def settings(tmp_path_factory) -> Settings:
    return Settings(home=tmp_path_factory.mktemp("home"))


def test_cdnow_plan_follows_the_published_protocol(settings):
    contract = load_contract("cdnow", settings)
    plan = contract.plan()

    assert contract.label.kind == "propensity" and contract.label.horizon_days == 90
    assert plan.out_of_time == D(1997, 10, 1)
    assert plan.scoring == contract.cutoffs.as_of == D(1998, 7, 1)
    assert plan.train[0] == D(1997, 3, 1) and len(plan.train) >= 6
    assert all(b - a == dt.timedelta(days=14) for a, b in zip(plan.train, plan.train[1:], strict=False))
    # Every training label ends before the out-of-time cutoff begins.
    assert all(c + dt.timedelta(days=90) <= plan.out_of_time for c in plan.train)
    assert contract.population.active_within_days is None
    assert contract.validation == "out_of_time"


def test_synthetic_plan_follows_the_run_date(settings):
    contract = load_contract("synthetic", settings)
    plan = contract.plan(D(2025, 1, 1))

    assert plan.train == tuple(D(2024, m, 1) for m in range(4, 10))
    assert plan.out_of_time == D(2024, 11, 1)
    assert plan.scoring == D(2025, 1, 1)
    # A month later the schedule moves forward by one cutoff.
    later = contract.plan(D(2025, 2, 1))
    assert later.out_of_time == D(2024, 12, 1) and later.train[-1] == D(2024, 10, 1) and later.scoring == D(2025, 2, 1)


def test_a_run_of_event_data_needs_a_date_unless_one_is_pinned(settings):
    with pytest.raises(ValueError, match="needs a run date"):
        load_contract("synthetic", settings).plan()
    assert load_contract("cdnow", settings).plan(D(2030, 1, 1)).scoring == D(1998, 7, 1)


def test_labels_whose_horizon_passes_the_last_day_of_data_are_not_observed(settings):
    contract = load_contract("synthetic", settings)
    # The run is on 2025-01-01 but the events stop on 2024-12-15: the 2024-11-01 cutoff's 60 days are not all
    # there, so it cannot be the out-of-time cutoff, and missing days are never read as churn.
    plan = contract.plan(D(2025, 1, 1), observed_until=D(2024, 12, 16))
    assert plan.observed_until == D(2024, 12, 16)
    assert plan.out_of_time == D(2024, 10, 1)
    assert all(c + dt.timedelta(days=60) <= plan.out_of_time for c in plan.train)


def test_entity_level_contract_needs_no_date(settings):
    contract = load_contract("crm_example", settings)
    plan = contract.plan()

    assert plan.train == (plan.out_of_time,) and plan.out_of_time == plan.scoring
    assert contract.plan(D(2024, 7, 1)).scoring == D(2024, 7, 1)
    assert contract.validation == "stratified_holdout" and not contract.has_event_time
    assert event_feature_specs(contract) == []
    assert model_feature_columns(contract) == (
        ["age", "tenure_days", "visits_90d", "support_calls_90d", "spend_90d"],
        ["plan", "region", "channel"],
    )


def base(**overrides) -> dict:
    raw = {
        "name": "t",
        "events": {"path": "e.parquet", "entity_key": "c", "timestamp": "t", "amount": "a"},
        "label": {"kind": "churn", "horizon_days": 30},
        "cutoffs": {"first": "2024-01-01", "as_of": "2024-12-01"},
    }
    return raw | overrides


def test_weekly_schedule_with_a_pinned_out_of_time_cutoff():
    contract = DatasetContract.model_validate(
        base(
            cutoffs={
                "first": "2024-01-01",
                "every_days": 7,
                "out_of_time": "2024-06-03",
                "as_of": "2024-12-01",
                "train_cutoffs": 4,
            }
        )
    )
    plan = contract.plan()
    assert plan.out_of_time == D(2024, 6, 3)
    assert plan.train == (D(2024, 4, 8), D(2024, 4, 15), D(2024, 4, 22), D(2024, 4, 29))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"label": {"kind": "propensity"}}, "needs `label.horizon_days`"),
        ({"label": {"kind": "column", "column": "y"}}, "entity-level data"),
        ({"label": {"kind": "churn", "horizon_days": 30, "event_type": "buy"}}, "needs events.event_type"),
        ({"cutoffs": {"first": "2024-01-01", "out_of_time": "2024-11-15", "as_of": "2024-12-01"}}, "incomplete"),
        ({"cutoffs": {"first": "2024-11-01", "as_of": "2024-12-01"}}, "move `cutoffs.first` earlier"),
        ({"cutoffs": {"as_of": "2024-12-01"}}, "needs `cutoffs.first`"),
        ({"events": None, "label": {"kind": "churn", "horizon_days": 30}}, "give `events`, `entities` or both"),
    ],
)
def test_contracts_that_cannot_work_are_refused_with_a_reason(overrides, message):
    with pytest.raises(ValueError, match=message):
        DatasetContract.model_validate(base(**overrides))


def test_horizon_is_configurable_within_a_year():
    for days in (7, 14, 30, 60, 90, 180):
        long_history = {"first": "2023-01-01"}
        label = {"kind": "propensity", "horizon_days": days}
        plan = DatasetContract.model_validate(base(label=label, cutoffs=long_history)).plan(D(2024, 12, 1))
        assert plan.out_of_time + dt.timedelta(days=days) <= D(2024, 12, 1)
    with pytest.raises(ValueError):
        DatasetContract.model_validate(base(label={"kind": "churn", "horizon_days": 400}))
