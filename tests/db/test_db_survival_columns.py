"""Survival columns of a scoring list in PostgreSQL (migration 0013): stored when the list has them, NULL and
invisible when it does not, and a median past the model's horizon stored as NULL with its flag."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from churnops import db
from churnops.jobs.export import export_top_k
from tests.db.test_db_scores import LOGICAL_DATE, new_dataset, score_frame
from tests.db.test_db_value_columns import valued_list


def with_survival(frame: pd.DataFrame) -> pd.DataFrame:
    rng = np.random.default_rng(5)
    n = len(frame)
    p30 = rng.uniform(0.0, 0.5, n)
    median = rng.uniform(5.0, 150.0, n)
    beyond = np.arange(n) % 3 == 0
    return frame.assign(
        p_buy_30d=p30,
        p_buy_90d=np.minimum(p30 + 0.2, 1.0),
        p_buy_180d=np.minimum(p30 + 0.4, 1.0),
        median_days_to_next_purchase=np.where(beyond, np.nan, median),
        median_beyond_horizon=beyond,
    )


def test_survival_columns_round_trip_with_null_medians_flagged(conn) -> None:
    dataset = new_dataset()
    written = with_survival(score_frame(300, seed=1))
    db.write_scores(conn, written, dataset=dataset, run_id="r1", logical_date=LOGICAL_DATE)

    stored = db.latest_scores(conn, dataset).set_index("customer_id").loc[written["customer_id"]]
    for column in ("p_buy_30d", "p_buy_90d", "p_buy_180d", "median_days_to_next_purchase"):
        np.testing.assert_array_equal(stored[column].to_numpy(dtype=float), written[column].to_numpy())
    assert stored["median_beyond_horizon"].tolist() == written["median_beyond_horizon"].tolist()
    assert "p_buy_60d" not in stored.columns  # a horizon the list does not have is not read back
    with conn, conn.cursor() as cur:
        cur.execute(
            "SELECT count(*) FROM churnops.scores WHERE dataset = %s AND median_days_to_next_purchase IS NULL "
            "AND median_beyond_horizon",
            (dataset,),
        )
        assert cur.fetchone()[0] == int(written["median_beyond_horizon"].sum())


def test_the_api_asks_whether_the_newest_list_has_value_or_survival_values(conn) -> None:
    """What the API checks once per interval before looking a customer's value and survival columns up."""
    dataset = new_dataset()
    assert not db.newest_list_has_model_columns(conn, dataset)  # no list at all
    db.write_scores(
        conn, with_survival(score_frame(30, seed=3)), dataset=dataset, run_id="r1", logical_date=LOGICAL_DATE
    )
    assert db.newest_list_has_model_columns(conn, dataset)
    assert db.latest_survival_of(conn, dataset, "C0000001") is not None
    later = LOGICAL_DATE + dt.timedelta(days=1)
    db.write_scores(conn, score_frame(30, seed=4), dataset=dataset, run_id="r2", logical_date=later)
    assert not db.newest_list_has_model_columns(conn, dataset)  # the newest list has none: nothing to look up
    assert db.latest_survival_of(conn, dataset, "C0000001") is None
    newest = later + dt.timedelta(days=1)
    db.write_scores(conn, valued_list(30, seed=5), dataset=dataset, run_id="r3", logical_date=newest)
    assert db.newest_list_has_model_columns(conn, dataset)  # value columns alone are worth the look-up


def test_a_list_without_survival_reads_back_without_the_columns(conn) -> None:
    dataset = new_dataset()
    db.write_scores(conn, score_frame(50, seed=2), dataset=dataset, run_id="r1", logical_date=LOGICAL_DATE)
    stored = db.latest_scores(conn, dataset)
    assert not [c for c in stored.columns if c.startswith("p_buy_") or c.startswith("median_")]


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        ("p_buy_90d", 1.5, "p_buy_90d must be a probability"),
        ("p_buy_30d", np.nan, "p_buy_30d must be a probability"),
        ("median_days_to_next_purchase", -3.0, "median_days_to_next_purchase must be a positive number"),
    ],
)
def test_a_bad_survival_value_is_refused_naming_the_column(conn, column: str, value: float, message: str) -> None:
    frame = with_survival(score_frame(20, seed=3))
    frame.loc[4, column] = value
    with pytest.raises(ValueError, match=message):
        db.write_scores(conn, frame, dataset=new_dataset(), run_id="r1", logical_date=LOGICAL_DATE)


def test_the_campaign_export_carries_the_survival_columns(conn, tmp_path) -> None:
    dataset = new_dataset()
    written = with_survival(score_frame(100, seed=4))
    db.write_scores(conn, written, dataset=dataset, run_id="r1", logical_date=LOGICAL_DATE)
    export = export_top_k(conn, dataset=dataset, top_k=10, out_dir=tmp_path, formats=("parquet",))
    exported = pd.read_parquet(export.paths["parquet"])
    expected = written.set_index("customer_id").loc[exported["customer_id"]]
    np.testing.assert_array_equal(exported["p_buy_90d"].to_numpy(), expected["p_buy_90d"].to_numpy())
    assert exported.columns[-5:].tolist() == [
        "p_buy_30d",
        "p_buy_90d",
        "p_buy_180d",
        "median_days_to_next_purchase",
        "median_beyond_horizon",
    ]


def test_one_query_reads_a_customers_value_and_survival_columns_from_the_newest_list(conn) -> None:

    dataset = new_dataset()
    older = score_frame(40, seed=6)
    db.write_scores(conn, older, dataset=dataset, run_id="r0", logical_date=LOGICAL_DATE - dt.timedelta(days=7))
    written = with_survival(valued_list(60, seed=7))
    db.write_scores(conn, written, dataset=dataset, run_id="r1", logical_date=LOGICAL_DATE)
    beyond = written[written["median_beyond_horizon"]].iloc[0]
    inside = written[~written["median_beyond_horizon"]].iloc[0]

    found = db.latest_list_rows_of(conn, dataset, [beyond["customer_id"], inside["customer_id"], "not-listed"])

    assert set(found) == {beyond["customer_id"], inside["customer_id"]}
    for row in (beyond, inside):
        got = found[row["customer_id"]]
        assert got["list_date"] == LOGICAL_DATE.isoformat()
        assert got["value"] == {
            "expected_value": row["expected_value"],
            "expected_saved_value": row["expected_saved_value"],
            "campaign_rank": row["campaign_rank"],
            "in_campaign": row["in_campaign"],
        }
        assert got["survival"]["p_buy_90d"] == row["p_buy_90d"] and "p_buy_60d" not in got["survival"]
    assert found[beyond["customer_id"]]["survival"]["median_days_to_next_purchase"] is None
    assert found[beyond["customer_id"]]["survival"]["median_beyond_horizon"] is True
    assert (
        found[inside["customer_id"]]["survival"]["median_days_to_next_purchase"]
        == inside["median_days_to_next_purchase"]
    )
    # A churn-only list: the customer is found, without either group.
    plain = new_dataset()
    db.write_scores(conn, older, dataset=plain, run_id="r2", logical_date=LOGICAL_DATE)
    customer = older["customer_id"].iloc[0]
    assert db.latest_list_rows_of(conn, plain, [customer])[customer] | {"list_date": None} == {
        "list_date": None,
        "value": None,
        "survival": None,
    }
    assert db.latest_survival_of(conn, dataset, inside["customer_id"]) == found[inside["customer_id"]]["survival"]
