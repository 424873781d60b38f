"""The drift-injection command writes a drifted copy of a dataset that keeps its name and shifts only what it was
asked to."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd
import pytest

from churnops.config import Settings
from churnops.dataset import load_contract
from churnops.jobs.inject_drift import write_drifted_dataset

SINCE = dt.date(2024, 9, 1)


@pytest.fixture(scope="module")
def contract(tmp_path_factory: pytest.TempPathFactory):
    from churnops.jobs.generate import generate, write_generated

    settings = Settings(home=tmp_path_factory.mktemp("home"))
    contract = load_contract("synthetic", settings)
    data = generate(300, seed=5)
    write_generated(data, contract.resolve(contract.events.path), contract.resolve(contract.entities.path))
    return contract


def test_drifted_copy_shifts_amounts_after_since_and_attributes_everywhere(contract, tmp_path: Path) -> None:
    out = write_drifted_dataset(
        contract, tmp_path, shifts={"amount": 25.0, "age": 10.0}, new_categories={"region": "offshore"}, since=SINCE
    )
    drifted = load_contract(str(out.contract_path), Settings(home=tmp_path / "h"))
    assert drifted.name == contract.name and drifted.model_name == contract.model_name

    before = pd.read_parquet(contract.resolve(contract.events.path))
    after = pd.read_parquet(out.events_path)
    assert len(after) == len(before) and out.events_removed == 0
    late = pd.to_datetime(before["event_time"]) >= pd.Timestamp(SINCE)
    assert (after.loc[late, "amount"] - before.loc[late, "amount"]).round(9).eq(25.0).all()
    assert after.loc[~late, "amount"].equals(before.loc[~late, "amount"])

    customers_before = pd.read_parquet(contract.resolve(contract.entities.path))
    customers_after = pd.read_parquet(out.entities_path)
    assert (customers_after["age"] - customers_before["age"]).eq(10.0).all()
    assert customers_after["plan"].equals(customers_before["plan"])
    assert 0.2 < (customers_after["region"] == "offshore").mean() < 0.4


def test_silencing_customers_raises_the_churn_rate_by_removing_their_later_events(contract, tmp_path: Path) -> None:
    out = write_drifted_dataset(contract, tmp_path, silence_share=0.4, since=SINCE)
    before = pd.read_parquet(contract.resolve(contract.events.path))
    after = pd.read_parquet(out.events_path)
    assert out.customers_silenced > 0 and out.events_removed == len(before) - len(after) > 0
    late_before = before[pd.to_datetime(before["event_time"]) >= pd.Timestamp(SINCE)]["customer_id"].nunique()
    late_after = after[pd.to_datetime(after["event_time"]) >= pd.Timestamp(SINCE)]["customer_id"].nunique()
    assert late_after < late_before
    early = pd.to_datetime(before["event_time"]) < pd.Timestamp(SINCE)
    assert (pd.to_datetime(after["event_time"]) < pd.Timestamp(SINCE)).sum() == early.sum()


def test_unknown_columns_are_refused_with_the_choices(contract, tmp_path: Path) -> None:
    with pytest.raises(KeyError, match="choose entity attributes"):
        write_drifted_dataset(contract, tmp_path, shifts={"amount_sum_30d": 1.0})
