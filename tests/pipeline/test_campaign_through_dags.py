"""The campaign list and the new `/predict` fields end to end on the synthetic data: `churnops run` drives the
feature, training and scoring DAGs on the embedded Airflow against a fresh PostgreSQL database (the features
published, the churn, value and survival models trained and promoted, the list scored with its value and survival
columns), then a real `churnops serve` answers for the list's customers. The budget selection, the value fields and
the survival fields (a censored customer included) must be the list's own."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import psycopg2
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from churnops import db
from churnops.config import Settings
from churnops.dataset import load_contract
from churnops.jobs.value.campaign import contacts_allowed
from churnops.serving.app import create_app
from churnops.survival_columns import MEDIAN_BEYOND_HORIZON, MEDIAN_DAYS, p_buy_column
from churnops.value_contract import VALUE_LIST_COLUMNS
from tests.serving.conftest import (  # noqa: F401 - fixtures re-exported
    example_request,
    fresh_platform_database,
    start_server,
    unreachable_database_url,
)

CUSTOMERS = 1200


@pytest.fixture(scope="module")
def campaign_database_url() -> Iterator[str]:
    """A database of this module's own: its regular synthetic list must not meet other tests' lists of the same
    dataset in the session's shared one."""
    with fresh_platform_database("campaign") as uri:
        yield uri


@pytest.fixture(scope="module")
def through_the_dags(campaign_database_url, tmp_path_factory) -> tuple[Settings, pd.DataFrame]:
    """A churnops home after `churnops run` on PostgreSQL, and the list its scoring DAG wrote (Parquet)."""
    home = tmp_path_factory.mktemp("campaign-home")
    env = {
        **os.environ,
        "CHURNOPS_HOME": str(home),
        "CHURNOPS_SPARK__MASTER": "local[2]",
        "CHURNOPS_DATABASE_URL": campaign_database_url,
    }
    churnops = Path(sys.executable).parent / "churnops"
    completed = subprocess.run(
        [str(churnops), "run", "--customers", str(CUSTOMERS), "--trials", "5"],
        env=env,
        capture_output=True,
        text=True,
        timeout=1500,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    (path,) = sorted((home / "scores" / "synthetic").glob("scores_*.parquet"))
    return Settings(home=home, database_url=SecretStr(campaign_database_url)), pd.read_parquet(path)


@pytest.mark.slow
def test_the_dags_write_the_campaign_list_with_its_budget_selection(through_the_dags) -> None:
    settings, listed = through_the_dags
    value = load_contract("synthetic", settings).value
    assert set(VALUE_LIST_COLUMNS) <= set(listed.columns)
    # Ranked by expected saved value, 1 for the best, every rank once.
    by_rank = listed.sort_values("campaign_rank")
    assert by_rank["campaign_rank"].tolist() == list(range(1, len(listed) + 1))
    assert by_rank["expected_saved_value"].is_monotonic_decreasing
    # The budget rule: the best ranks, as many as the budget pays for, positive expected saved value only.
    allowed = contacts_allowed(value.budget, value.contact_cost)
    positive = int((listed["expected_saved_value"] > 0).sum())
    chosen = listed[listed["in_campaign"]]
    assert len(chosen) == min(allowed, positive) > 0
    assert sorted(chosen["campaign_rank"]) == list(range(1, len(chosen) + 1))
    # The same list in PostgreSQL.
    with closing(psycopg2.connect(settings.database_url.get_secret_value())) as conn:
        stored = db.latest_scores(conn, "synthetic").set_index("customer_id").loc[listed["customer_id"]]
    for column in VALUE_LIST_COLUMNS:
        assert stored[column].tolist() == listed[column].tolist(), column


def _customers_to_ask(listed: pd.DataFrame) -> pd.DataFrame:
    """The best campaign customer, one left out of the campaign, and a censored one (median beyond the horizon)."""
    censored = listed[listed[MEDIAN_BEYOND_HORIZON]]
    assert not censored.empty, "the synthetic list should hold customers whose median lies beyond the horizon"
    left_out = listed[~listed["in_campaign"]]
    picked = [listed["campaign_rank"].idxmin(), left_out.index[0], censored.index[0]]
    return listed.loc[picked]


def _assert_fields_are_the_lists(answer: dict[str, Any], row: pd.Series, list_date: str, horizons: list[int]) -> None:
    assert answer["expected_value"] == row["expected_value"]
    assert answer["expected_saved_value"] == row["expected_saved_value"]
    assert answer["campaign_rank"] == row["campaign_rank"]
    assert answer["in_campaign"] == bool(row["in_campaign"])
    assert answer["list_date"] == list_date
    survival = answer["survival"]
    assert survival["list_date"] == list_date
    for days in horizons:
        assert survival[p_buy_column(days)] == row[p_buy_column(days)]
    assert survival[MEDIAN_BEYOND_HORIZON] == bool(row[MEDIAN_BEYOND_HORIZON])
    median = row[MEDIAN_DAYS]
    assert survival[MEDIAN_DAYS] == (None if np.isnan(median) else median)


@pytest.mark.slow
def test_predict_and_batch_predict_return_the_lists_value_campaign_and_survival_fields(
    through_the_dags, tmp_path: Path
) -> None:
    settings, listed = through_the_dags
    horizons = list(load_contract("synthetic", settings).survival.horizons)
    list_date = pd.Timestamp(listed["cutoff"].iloc[0]).date().isoformat()
    asked = _customers_to_ask(listed)
    censored = asked.iloc[-1]
    server = start_server(settings, tmp_path, env={"CHURNOPS_DATABASE_URL": settings.database_url.get_secret_value()})
    try:
        for _, row in asked.iterrows():
            # Only a customer_id: the features come from the online table the feature DAG published.
            answer = httpx.post(f"{server.base_url}/predict", json={"customer_id": row["customer_id"]}, timeout=30)
            assert answer.status_code == 200, answer.text
            _assert_fields_are_the_lists(answer.json(), row, list_date, horizons)
        # The censored customer: no median, flagged as beyond the survival model's horizon.
        answer = httpx.post(f"{server.base_url}/predict", json={"customer_id": censored["customer_id"]}, timeout=30)
        assert answer.json()["survival"][MEDIAN_BEYOND_HORIZON] is True
        assert answer.json()["survival"][MEDIAN_DAYS] is None

        batch = {"instances": [{"customer_id": c} for c in asked["customer_id"]]}
        answer = httpx.post(f"{server.base_url}/batch_predict", json=batch, timeout=30)
        assert answer.status_code == 200, answer.text
        for item, (_, row) in zip(answer.json()["predictions"], asked.iterrows(), strict=True):
            assert item["customer_id"] == row["customer_id"]
            _assert_fields_are_the_lists(item, row, list_date, horizons)
        # The fields are documented in the OpenAPI schema.
        documented = httpx.get(f"{server.base_url}/openapi.json", timeout=30).json()["components"]["schemas"]
        for name in ("ScoredCustomer", "Prediction"):
            assert {*VALUE_LIST_COLUMNS, "list_date", "survival"} <= set(documented[name]["properties"]), name
    finally:
        server.stop()


@pytest.mark.slow
def test_an_unreadable_list_gives_null_fields_never_a_failed_prediction(
    trained_platform,
    example_request,  # noqa: F811
) -> None:
    """Features sent with a customer_id score as usual when the database cannot be read: the list's fields are null."""
    settings = trained_platform.settings.model_copy(
        update={
            "database_url": SecretStr(unreachable_database_url()),
            "serving": trained_platform.settings.serving.model_copy(update={"prediction_log_enabled": False}),
        }
    )
    with TestClient(create_app(settings)) as client:
        single = client.post("/predict", json=example_request)
        batch = client.post("/batch_predict", json={"instances": [example_request, example_request]})
    assert single.status_code == 200, single.text
    assert batch.status_code == 200, batch.text
    for answer in (single.json(), *batch.json()["predictions"]):
        assert 0 <= answer["probability"] <= 1
        assert {column: answer[column] for column in (*VALUE_LIST_COLUMNS, "list_date", "survival")} == dict.fromkeys(
            (*VALUE_LIST_COLUMNS, "list_date", "survival")
        )
