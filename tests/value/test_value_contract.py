"""The contract's optional `value:` section: typed, checked against the data's shape, absent by default."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from churnops.config import Settings
from churnops.dataset import load_contract

EVENT_CONTRACT = {
    "name": "shop",
    "events": {"path": "events.csv", "format": "csv", "entity_key": "id", "timestamp": "ts", "amount": "spend"},
    "label": {"kind": "churn", "horizon_days": 30},
    "cutoffs": {"first": "2024-01-01"},
}
VALUE = {"horizon_days": 90, "contact_cost": 1.5, "save_rate": 0.3, "budget": {"customers": 100}}


def _load(tmp_path: Path, contract: dict) -> object:
    path = tmp_path / "contract.yaml"
    path.write_text(yaml.safe_dump(contract))
    return load_contract(str(path), Settings(home=tmp_path))


def test_a_contract_without_a_value_section_has_none(tmp_path: Path) -> None:
    assert _load(tmp_path, EVENT_CONTRACT).value is None


def test_the_value_section_is_typed_and_its_window_defaults_to_the_label_horizon(tmp_path: Path) -> None:
    contract = _load(tmp_path, {**EVENT_CONTRACT, "value": VALUE})
    assert contract.value.budget.customers == 100
    assert contract.value.window_for(contract.label.horizon_days) == 30
    assert contract.value_model_name == "churnops-shop-value"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"budget": {"customers": 10, "money": 50.0}}, "exactly one of `customers`"),
        ({"budget": {}}, "exactly one of `customers`"),
        ({"budget": {"money": 50.0}, "contact_cost": 0.0}, "needs a positive value.contact_cost"),
        ({"save_rate": 1.5}, "save_rate"),
        ({"window_days": 120}, "longer than value.horizon_days"),
        ({"event_type": "purchase"}, "value.event_type needs events.event_type"),
        ({"horizon": 90}, "horizon"),
    ],
)
def test_a_bad_value_section_is_refused_naming_the_field(tmp_path: Path, change: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _load(tmp_path, {**EVENT_CONTRACT, "value": {**VALUE, **change}})


def test_entity_level_data_cannot_ask_for_value(tmp_path: Path) -> None:
    entity = {
        "name": "crm",
        "entities": {"path": "a.csv", "format": "csv", "key": "id"},
        "label": {"kind": "column", "column": "churned"},
        "value": VALUE,
    }
    with pytest.raises(ValueError, match="needs an event log with an amount"):
        _load(tmp_path, entity)


def test_built_in_event_datasets_with_spend_have_a_value_section() -> None:
    settings = Settings()
    assert load_contract("synthetic", settings).value.event_type == "purchase"
    assert load_contract("cdnow", settings).value.budget.money == 4000
    assert load_contract("crm_example", settings).value is None
