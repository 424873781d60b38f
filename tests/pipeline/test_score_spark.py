"""Batch scoring on Spark: the executors' list is the pandas path's list (same customers, scores, decisions,
deciles and bands), written as Parquet and COPYed into PostgreSQL partition by partition, and a re-run replaces
the list instead of adding to it."""

from __future__ import annotations

from contextlib import closing
from pathlib import Path

import numpy as np
import pandas as pd
import psycopg2
import pytest

from churnops import db
from churnops.config import Settings
from churnops.db.list_columns import OPTIONAL_LIST_COLUMNS
from churnops.jobs.score import score
from tests.serving.conftest import deployed_copy, platform_database_url  # noqa: F401 - fixtures re-exported

LIST_COLUMNS = ["score", "decision", "risk_decile", "risk_band", "cutoff", "model_name", "model_version"]


def assert_same_list(expected: pd.DataFrame, actual: pd.DataFrame) -> None:
    """Same customers; per customer the same score (to float precision) and the same decision, decile and band."""
    assert len(actual) == len(expected) and not actual["customer_id"].duplicated().any()
    joined = expected.merge(actual, on="customer_id", how="outer", suffixes=("_pandas", "_spark"), indicator=True)
    assert (joined["_merge"] == "both").all(), joined[joined["_merge"] != "both"].head()
    np.testing.assert_allclose(joined["score_spark"], joined["score_pandas"], rtol=0, atol=1e-15)
    for column in LIST_COLUMNS[1:]:
        left, right = joined[f"{column}_pandas"], joined[f"{column}_spark"]
        if column == "cutoff":
            left, right = pd.to_datetime(left), pd.to_datetime(right)
        differ = left.astype(str) != right.astype(str)
        assert not differ.any(), f"{column} differs for {int(differ.sum())} customers, e.g. {joined[differ].head(3)}"
    assert_same_model_columns(joined)


def assert_same_model_columns(joined: pd.DataFrame) -> None:
    """The value and survival columns the pandas list has, equal in the other list (numbers within 1e-12, a missing
    median missing in both)."""
    present = [c for c in OPTIONAL_LIST_COLUMNS if f"{c}_pandas" in joined.columns]
    missing = [c for c in present if f"{c}_spark" not in joined.columns]
    assert not missing, f"the other list lacks {missing}"
    for column in present:
        left, right = joined[f"{column}_pandas"], joined[f"{column}_spark"]
        if column in ("campaign_rank", "in_campaign", "median_beyond_horizon"):
            assert left.astype(str).tolist() == right.astype(str).tolist(), column
        else:
            np.testing.assert_allclose(right.astype(float), left.astype(float), rtol=0, atol=1e-12, err_msg=column)


def rows_of_list(settings: Settings, dataset: str) -> tuple[int, int, int, set[str]]:
    """(rows, distinct customers, attached partitions of the list, unattached score tables) in the database."""
    with closing(psycopg2.connect(settings.database_url.get_secret_value())) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*), count(DISTINCT customer_id) FROM churnops.scores WHERE dataset = %s", (dataset,))
        rows, customers = cur.fetchone()
        cur.execute(
            "SELECT count(*) FROM pg_inherits WHERE inhparent = 'churnops.scores'::regclass AND inhrelid IN "
            "(SELECT to_regclass('churnops.' || partition_name) FROM churnops.score_runs WHERE dataset = %s)",
            (dataset,),
        )
        (partitions,) = cur.fetchone()
        cur.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = "
            "'churnops' AND c.relkind = 'r' AND c.relname LIKE 'scores\\_%%' AND NOT EXISTS "
            "(SELECT 1 FROM pg_inherits i WHERE i.inhrelid = c.oid)"
        )
        stray = {name for (name,) in cur.fetchall()}
    return rows, customers, partitions, stray


@pytest.mark.slow
def test_the_spark_list_is_the_pandas_list_and_a_rerun_replaces_it(deployed_copy: Settings) -> None:  # noqa: F811
    from churnops.dataset import load_contract

    contract = load_contract("synthetic", deployed_copy)
    on_pandas = score(deployed_copy, contract, run_id="pandas", engine="pandas")
    pandas_file = pd.read_parquet(on_pandas.path)
    with closing(db.connect(deployed_copy)) as conn:
        pandas_database = db.latest_scores(conn, contract.name)

    on_spark = score(deployed_copy, contract, run_id="spark", engine="spark")

    assert on_spark.path == on_pandas.path and on_spark.path.is_dir()  # Spark's part files, at the same place
    assert on_spark.rows == on_pandas.rows == on_spark.rows_in_database
    spark_file = pd.read_parquet(on_spark.path)
    # The synthetic contract has value and survival models: their columns are in both lists, alike.
    assert {"expected_saved_value", "campaign_rank", "p_buy_90d", "median_beyond_horizon"} <= set(pandas_file.columns)
    assert_same_list(pandas_file, spark_file)
    # Part files are read back in score order: the folder is a ranked list as the pandas file is.
    assert (np.diff(spark_file["score"].to_numpy()) <= 0).all()
    with closing(db.connect(deployed_copy)) as conn:
        spark_database = db.latest_scores(conn, contract.name)
    assert set(spark_database["run_id"]) == {"spark"}
    assert_same_list(pandas_database.drop(columns=["run_id", "scored_at"]), spark_database.drop(columns=["run_id"]))

    rerun = score(deployed_copy, contract, run_id="spark-again", engine="spark")

    rows, customers, partitions, stray = rows_of_list(deployed_copy, contract.name)
    assert rows == customers == rerun.rows == on_pandas.rows  # replaced, not appended
    assert partitions == 1 and stray == set()
    with closing(db.connect(deployed_copy)) as conn:
        assert set(db.latest_scores(conn, contract.name)["run_id"]) == {"spark-again"}


@pytest.mark.slow
def test_spark_scoring_brings_no_customer_row_to_the_driver(
    deployed_copy: Settings,  # noqa: F811 - the fixture
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The list, its value and survival columns and the campaign are computed on the executors: every result an
    action brings to the driver is an aggregate (partition counts, BTYD sums, distinct purchase triples), never a
    row per customer. Spark's collect and toPandas still run; they are only watched."""
    from pyspark.sql.classic.dataframe import DataFrame

    from churnops.dataset import load_contract

    brought: list[tuple[list[str], int]] = []
    collect, to_pandas = DataFrame.collect, DataFrame.toPandas

    def watched_collect(self: DataFrame) -> list:
        rows = collect(self)
        brought.append((list(self.columns), len(rows)))
        return rows

    def watched_to_pandas(self: DataFrame) -> pd.DataFrame:
        frame = to_pandas(self)
        brought.append((list(frame.columns), len(frame)))
        return frame

    monkeypatch.setattr(DataFrame, "collect", watched_collect)
    monkeypatch.setattr(DataFrame, "toPandas", watched_to_pandas)
    contract = load_contract("synthetic", deployed_copy)

    run = score(deployed_copy, contract, run_id="spark", engine="spark")

    assert {"campaign_rank", "p_buy_90d"} <= set(pd.read_parquet(run.path).columns)
    assert brought, "no action was watched: the check would pass whatever the job does"
    per_customer = [(columns, rows) for columns, rows in brought if "customer_id" in columns]
    assert per_customer == [], f"rows per customer reached the driver: {per_customer}"
    # A handful of results, not one Spark job per evaluation of the Gamma-Gamma optimizer (about two hundred): each
    # basis is fitted in one task on an executor.
    fits = [columns for columns, _ in brought if columns == ["p", "q", "gamma"]]
    assert len(fits) == 2 and len(brought) < 40, brought


def test_the_auto_engine_picks_spark_only_from_the_configured_row_count() -> None:
    from churnops.config import ScoringSettings

    auto = ScoringSettings(engine="auto", spark_min_rows=1_000)
    assert (auto.engine_for(999), auto.engine_for(1_000)) == ("pandas", "spark")
    assert ScoringSettings(engine="spark").engine_for(1) == "spark"
    assert ScoringSettings().engine_for(10**9) == "pandas"


@pytest.mark.slow
def test_spark_submit_of_the_scoring_job_writes_a_backtest_list_and_its_summary(
    deployed_copy: Settings,  # noqa: F811 - the fixture
    tmp_path: Path,
) -> None:
    """The scoring DAG's Spark path: `spark-submit jobs/score_spark.py`, configured by the environment as a worker's
    task is, its summary read back by the task (`read_result`)."""
    import datetime as dt
    import os
    import subprocess
    import sys

    from churnops.dataset import load_contract
    from churnops.jobs.score_spark import read_result
    from churnops.snapshots import latest_snapshot_dir, read_metadata

    contract = load_contract("synthetic", deployed_copy)
    metadata = read_metadata(latest_snapshot_dir(deployed_copy, contract.name))
    cutoff = dt.date.fromisoformat(metadata.cutoffs["out_of_time"][0])
    summary = tmp_path / "run.json"
    environment = {
        **os.environ,
        "CHURNOPS_HOME": str(deployed_copy.home),
        "CHURNOPS_DATABASE_URL": deployed_copy.database_url.get_secret_value(),
        "SPARK_SUBMITTED": "1",
        "PYSPARK_PYTHON": sys.executable,
    }
    submit = Path(sys.executable).parent / "spark-submit"
    arguments = ["--dataset", "synthetic", "--cutoff", cutoff.isoformat(), "--run-id", "submitted"]
    finished = subprocess.run(
        [str(submit), "--master", "local[2]", "jobs/score_spark.py", *arguments, "--result-json", str(summary)],
        env=environment,
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )

    assert finished.returncode == 0, finished.stderr[-3000:]
    run = read_result(summary)
    assert (run.cutoff, run.list_kind) == (cutoff, "backfill")
    assert run.rows == run.rows_in_database == metadata.rows_per_cutoff[cutoff.isoformat()]
    assert len(pd.read_parquet(run.path)) == run.rows
