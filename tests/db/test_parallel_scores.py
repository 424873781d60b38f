"""A list written by several writers at once (the executors of Spark scoring): staged, filled over separate
connections, published as one list in one swap; abandoned or crashed writes keep the previous list."""

from __future__ import annotations

import datetime as dt
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing

import numpy as np
import pandas as pd
import psycopg2
import pytest

from churnops import db
from churnops.banding import build_score_frame
from tests.db.conftest import PlatformDatabases

CUTOFF = dt.date(2024, 2, 29)


def ranked_list(n: int, *, seed: int) -> pd.DataFrame:
    scores = np.sort(np.random.default_rng(seed).beta(2, 5, size=n))[::-1]
    return build_score_frame(
        customer_ids=np.array([f"C{i:06d}" for i in range(n)]),
        scores=scores,
        cutoff=CUTOFF,
        threshold=0.5,
        model_name="churn_lgbm",
        model_version="3",
    )


def record(dataset: str, run_id: str) -> db.parallel_scores.ListRecord:
    return db.list_record(
        dataset=dataset,
        logical_date=CUTOFF,
        list_kind="regular",
        run_id=run_id,
        model_name="churn_lgbm",
        model_version="3",
        cutoff=CUTOFF,
    )


def write_in_parts(platform: PlatformDatabases, dataset: str, frame: pd.DataFrame, run_id: str, parts: int) -> int:
    """Stage on one connection, COPY each part over a connection of its own (as executors do), publish."""
    with closing(psycopg2.connect(platform.churnops_url())) as driver:
        staged = db.stage_list(driver, record(dataset, run_id))
        for part in np.array_split(np.arange(len(frame)), parts):
            with closing(psycopg2.connect(platform.churnops_url())) as executor:
                db.copy_staged_rows(executor, staged, frame.iloc[part])
        return db.publish_staged_list(driver, staged, len(frame))


def unattached_tables(conn: psycopg2.extensions.connection) -> list[str]:
    with conn, conn.cursor() as cur:
        cur.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = "
            "'churnops' AND c.relkind = 'r' AND c.relname LIKE 'scores\\_%%' AND NOT EXISTS "
            "(SELECT 1 FROM pg_inherits i WHERE i.inhrelid = c.oid)"
        )
        return [name for (name,) in cur.fetchall()]


def test_parts_written_over_several_connections_become_one_list_and_a_rerun_replaces_it(
    platform_databases: PlatformDatabases, conn
) -> None:
    dataset = f"ds_{uuid.uuid4().hex[:8]}"
    first = ranked_list(3_000, seed=1)
    assert write_in_parts(platform_databases, dataset, first, "first", parts=4) == 3_000
    second = ranked_list(2_000, seed=2)

    assert write_in_parts(platform_databases, dataset, second, "second", parts=3) == 2_000

    stored = db.latest_scores(conn, dataset)
    assert len(stored) == 2_000 and set(stored["run_id"]) == {"second"}
    # Not bit for bit: the scores read back through CSV differ from those written in the 15th digit (the pandas
    # path's write_scores reads back the same way).
    np.testing.assert_allclose(stored["score"].to_numpy(), second["score"].to_numpy(), rtol=1e-13, atol=0)
    assert stored["customer_id"].tolist() == second["customer_id"].tolist()
    assert unattached_tables(conn) == []


def test_a_staged_list_missing_rows_is_refused_and_the_previous_list_stays(
    platform_databases: PlatformDatabases, conn
) -> None:
    dataset = f"ds_{uuid.uuid4().hex[:8]}"
    write_in_parts(platform_databases, dataset, ranked_list(500, seed=1), "good", parts=2)
    with closing(psycopg2.connect(platform_databases.churnops_url())) as driver:
        staged = db.stage_list(driver, record(dataset, "short"))
        db.copy_staged_rows(driver, staged, ranked_list(500, seed=2).iloc[:300])

        with pytest.raises(ValueError, match="the executors wrote 300 rows, the list has 500"):
            db.publish_staged_list(driver, staged, 500)

    assert set(db.latest_scores(conn, dataset)["run_id"]) == {"good"}
    assert unattached_tables(conn) == []


def test_a_writer_that_died_after_staging_leaves_a_table_the_next_write_of_the_list_drops(
    platform_databases: PlatformDatabases, conn
) -> None:
    dataset = f"ds_{uuid.uuid4().hex[:8]}"
    crashed = psycopg2.connect(platform_databases.churnops_url())
    staged = db.stage_list(crashed, record(dataset, "crashed"))
    db.copy_staged_rows(crashed, staged, ranked_list(100, seed=1))
    crashed.close()  # the session ends: its lock is released, its committed table stays
    assert staged.partition in unattached_tables(conn)

    write_in_parts(platform_databases, dataset, ranked_list(200, seed=2), "next", parts=2)

    assert staged.partition not in unattached_tables(conn)
    assert len(db.latest_scores(conn, dataset)) == 200


def test_rows_of_another_model_are_refused_naming_the_column(platform_databases: PlatformDatabases, conn) -> None:
    dataset = f"ds_{uuid.uuid4().hex[:8]}"
    other_model = ranked_list(10, seed=1).assign(model_version="4")
    with closing(psycopg2.connect(platform_databases.churnops_url())) as driver:
        staged = db.stage_list(driver, record(dataset, "mixed"))
        with pytest.raises(ValueError, match="column model_version is '4', the staged list's is '3'"):
            db.copy_staged_rows(driver, staged, other_model)
        db.abandon_staged_list(driver, staged)
    assert staged.partition not in unattached_tables(conn)


def test_an_executor_failing_mid_copy_while_another_wrote_keeps_the_previous_list_and_leaves_no_table(
    platform_databases: PlatformDatabases, conn
) -> None:
    dataset = f"ds_{uuid.uuid4().hex[:8]}"
    assert write_in_parts(platform_databases, dataset, ranked_list(1_000, seed=5), "previous", parts=2) == 1_000
    new = ranked_list(100_000, seed=6)
    # PostgreSQL text cannot hold NUL: the server refuses the second part's row after thousands were copied.
    new.loc[90_000, "customer_id"] = "C\x00bad"
    with closing(psycopg2.connect(platform_databases.churnops_url())) as driver:
        staged = db.stage_list(driver, record(dataset, "doomed"))
        halves = np.array_split(np.arange(len(new)), 2)
        with (
            closing(psycopg2.connect(platform_databases.churnops_url())) as first,
            closing(psycopg2.connect(platform_databases.churnops_url())) as second,
            ThreadPoolExecutor(max_workers=2) as pool,
        ):
            copies = [
                pool.submit(db.copy_staged_rows, executor, staged, new.iloc[part])
                for executor, part in zip((first, second), halves, strict=True)
            ]
            assert copies[0].result() == 50_000
            with pytest.raises(psycopg2.DataError):
                copies[1].result()
        db.abandon_staged_list(driver, staged)
    stored = db.latest_scores(conn, dataset)
    assert len(stored) == 1_000 and set(stored["run_id"]) == {"previous"}
    assert unattached_tables(conn) == []
