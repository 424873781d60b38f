"""Top-K campaign export: the right customers, the marketer's columns, formula cells neutralised."""

from __future__ import annotations

import csv
import datetime as dt
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import psycopg2
import pytest

from churnops import db
from churnops.banding import build_score_frame
from churnops.jobs.export import CAMPAIGN_COLUMNS, export_top_k, neutralise_formulas

HOSTILE_IDS = ["=cmd|' /C calc'!A0", "+SUM(1,2)", "-2+3", "@SUM(A1)", "\tTAB", "plain-id", "C-0001"]


def write_list(conn: psycopg2.extensions.connection, customer_ids: list[str], scores: np.ndarray) -> str:
    dataset = f"exp_{uuid.uuid4().hex[:8]}"
    frame = build_score_frame(
        customer_ids=np.array(customer_ids, dtype=object),
        scores=scores,
        cutoff=dt.date(2024, 6, 30),
        threshold=0.5,
        model_name="churn_lgbm",
        model_version="4",
    )
    db.write_scores(conn, frame, dataset=dataset, run_id="r", logical_date=dt.date(2024, 7, 1))
    return dataset


def test_export_neutralises_formula_cells_in_the_csv(conn: psycopg2.extensions.connection, tmp_path: Path) -> None:
    scores = np.linspace(0.9, 0.3, len(HOSTILE_IDS))
    dataset = write_list(conn, HOSTILE_IDS, scores)
    export = export_top_k(conn, dataset=dataset, top_k=len(HOSTILE_IDS), out_dir=tmp_path)
    with export.paths["csv"].open(encoding="utf-8-sig", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["customer_id"] for row in rows] == [
        "'=cmd|' /C calc'!A0",
        "'+SUM(1,2)",
        "'-2+3",
        "'@SUM(A1)",
        "'\tTAB",
        "plain-id",
        "C-0001",
    ]
    # The typed Parquet copy keeps the true ids for programs.
    assert pd.read_parquet(export.paths["parquet"])["customer_id"].tolist() == HOSTILE_IDS


def test_export_holds_the_top_k_customers_ranked_with_the_marketers_columns(
    conn: psycopg2.extensions.connection, tmp_path: Path
) -> None:
    ids = [f"C{i:04d}" for i in range(500)]
    scores = np.random.default_rng(0).random(500)
    dataset = write_list(conn, ids, scores)
    export = export_top_k(conn, dataset=dataset, top_k=50, out_dir=tmp_path)
    assert export.rows == 50 and export.logical_date == dt.date(2024, 7, 1)
    assert export.paths["csv"].name == f"{dataset}_top50_2024-07-01.csv"
    campaign = pd.read_parquet(export.paths["parquet"])
    assert tuple(campaign.columns) == CAMPAIGN_COLUMNS
    assert campaign["rank"].tolist() == list(range(1, 51))
    expected_ids = [ids[i] for i in np.argsort(-scores)[:50]]
    assert campaign["customer_id"].tolist() == expected_ids
    assert set(campaign["risk_band"]) == {"high"} and set(campaign["model_version"]) == {"4"}
    csv_frame = pd.read_csv(export.paths["csv"], encoding="utf-8-sig", dtype={"customer_id": str})
    assert csv_frame["customer_id"].tolist() == expected_ids
    assert not list(tmp_path.glob(".*staging*")), "a staging file was left behind"


def test_export_of_an_unscored_dataset_says_so(conn: psycopg2.extensions.connection, tmp_path: Path) -> None:
    with pytest.raises(LookupError, match="no scoring list"):
        export_top_k(conn, dataset="never_scored", top_k=10, out_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_neutralise_formulas_leaves_numbers_and_plain_text_alone() -> None:
    frame = pd.DataFrame({"id": ["=1+1", "abc", None], "score": [-0.5, 0.2, 0.1], "flag": [True, False, True]})
    safe = neutralise_formulas(frame)
    assert safe["id"].tolist() == ["'=1+1", "abc", None]
    pd.testing.assert_series_equal(safe["score"], frame["score"])
    pd.testing.assert_series_equal(safe["flag"], frame["flag"])
    assert frame["id"].tolist()[0] == "=1+1", "the input frame must not be modified"
