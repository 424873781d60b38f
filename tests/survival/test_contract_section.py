"""The dataset contract's optional `survival` section: typed, checked, and absent means nothing changes."""

from __future__ import annotations

import pytest

from churnops.config import Settings
from churnops.dataset import DatasetContract, load_contract


def _contract(**extra: object) -> DatasetContract:
    return DatasetContract.model_validate(
        {
            "name": "shop",
            "events": {"path": "e.parquet", "entity_key": "id", "timestamp": "t", "amount": "a", "event_type": "kind"},
            "label": {"kind": "churn", "horizon_days": 60},
            "cutoffs": {"first": "2024-01-01"},
            **extra,
        }
    )


def test_a_contract_without_survival_has_no_survival_model() -> None:
    contract = _contract()
    assert contract.survival is None
    assert contract.survival_event_type is None


def test_survival_horizons_are_sorted_and_event_type_falls_back_to_the_label() -> None:
    contract = _contract(
        survival={"horizons": [180, 30], "trials": 3}, label={"kind": "churn", "horizon_days": 60, "event_type": "buy"}
    )
    assert contract.survival is not None
    assert contract.survival.horizons == (30, 180)
    assert contract.survival_event_type == "buy"
    assert contract.survival_model_name == "churnops-shop-survival"


def test_a_horizon_without_a_list_column_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match=r"survival.horizons \[45\]"):
        _contract(survival={"horizons": [45]})


def test_survival_needs_an_event_log() -> None:
    with pytest.raises(ValueError, match="`survival` needs an event log"):
        DatasetContract.model_validate(
            {
                "name": "crm",
                "entities": {"path": "c.csv", "key": "id"},
                "label": {"kind": "column", "column": "churned"},
                "survival": {},
            }
        )


def test_unknown_survival_field_is_refused() -> None:
    with pytest.raises(ValueError, match="horizon"):
        _contract(survival={"horizon": [30]})


@pytest.mark.parametrize("name", ["synthetic", "cdnow"])
def test_builtin_event_datasets_enable_survival(name: str, tmp_path: object) -> None:
    contract = load_contract(name, Settings(home=tmp_path))
    assert contract.survival is not None
    assert contract.survival.horizons == (30, 90, 180)


def test_a_contract_without_survival_dumps_as_before_the_section_existed() -> None:
    # The snapshot inputs key digests the dump: an unchanged contract must not re-cut its snapshots.
    assert "survival" not in _contract().model_dump(mode="json")
    assert _contract(survival={}).model_dump(mode="json")["survival"]["horizons"] == [30, 90, 180]
