"""A list's value columns in PostgreSQL (migration 0012): written with the list, read back exactly, absent from a
list without them (as before the migration), and refused when incomplete or impossible."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import psycopg2
import pytest
from pydantic import SecretStr

from churnops import db
from churnops.config import Settings
from churnops.jobs.value.campaign import campaign_columns
from churnops.value_contract import VALUE_LIST_COLUMNS, CampaignBudget, ValueSection
from tests.db.conftest import PlatformDatabases
from tests.db.test_db_scores import LOGICAL_DATE, new_dataset, score_frame

VALUE = ValueSection(horizon_days=90, contact_cost=2.0, save_rate=0.3, budget=CampaignBudget(money=100.0))


def valued_list(n: int, seed: int) -> pd.DataFrame:
    scored = score_frame(n, seed=seed)
    expected = np.random.default_rng(seed).gamma(1.0, 80.0, size=n)
    return pd.concat([scored, campaign_columns(scored["score"].to_numpy(), expected, VALUE)], axis=1)


def test_value_columns_are_stored_with_the_list_and_read_back_exactly(conn: psycopg2.extensions.connection) -> None:
    dataset, written = new_dataset(), valued_list(400, seed=1)
    assert db.write_scores(conn, written, dataset=dataset, run_id="r1", logical_date=LOGICAL_DATE) == 400
    stored = db.latest_scores(conn, dataset).set_index("customer_id").loc[written["customer_id"]]
    np.testing.assert_array_equal(stored["expected_value"].to_numpy(), written["expected_value"].to_numpy())
    np.testing.assert_array_equal(stored["expected_saved_value"].to_numpy(), written["expected_saved_value"].to_numpy())
    assert stored["campaign_rank"].tolist() == written["campaign_rank"].tolist()
    assert stored["in_campaign"].tolist() == written["in_campaign"].tolist()
    assert int(stored["in_campaign"].sum()) == 50  # $100 at $2 a contact; far more than 50 are worth contacting


def test_a_list_without_value_columns_reads_back_without_them(conn: psycopg2.extensions.connection) -> None:
    dataset = new_dataset()
    db.write_scores(conn, score_frame(20, seed=2), dataset=dataset, run_id="r1", logical_date=LOGICAL_DATE)
    stored = db.latest_scores(conn, dataset)
    assert len(stored) == 20
    assert not set(VALUE_LIST_COLUMNS) & set(stored.columns)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda f: f.drop(columns=["in_campaign"]), "lacks \\['in_campaign'\\]"),
        (lambda f: f.assign(expected_value=-1.0), "expected_value must be finite and not negative"),
        (lambda f: f.assign(campaign_rank=0), "campaign_rank must be an integer from 1"),
        (lambda f: f.assign(in_campaign=1), "in_campaign must be boolean"),
    ],
)
def test_a_list_with_bad_value_columns_is_refused_naming_the_column(
    conn: psycopg2.extensions.connection, change, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        db.write_scores(
            conn, change(valued_list(10, seed=3)), dataset=new_dataset(), run_id="r", logical_date=LOGICAL_DATE
        )


def test_the_exporter_reports_value_at_stake_and_campaign_size_by_band_of_the_latest_list(
    conn: psycopg2.extensions.connection, platform_databases: PlatformDatabases, tmp_path: Path
) -> None:
    from churnops.monitoring.exporter import build_registry

    dataset, written = new_dataset(), valued_list(300, seed=4)
    db.write_scores(conn, written, dataset=dataset, run_id="r1", logical_date=LOGICAL_DATE)
    older = valued_list(300, seed=5)
    db.write_scores(conn, older, dataset=dataset, run_id="r0", logical_date=LOGICAL_DATE - dt.timedelta(days=7))
    settings = Settings(home=tmp_path, database_url=SecretStr(platform_databases.churnops_url()))
    registry = build_registry(settings, settings.monitoring)
    for band, rows in written.groupby("risk_band"):
        labels = {"dataset": dataset, "risk_band": band}
        at_stake = registry.get_sample_value("churnops_value_at_stake", labels)
        assert at_stake == pytest.approx(rows["expected_value"].sum())
        assert registry.get_sample_value("churnops_campaign_customers", labels) == rows["in_campaign"].sum()
