"""Score lists in PostgreSQL: written whole, replaced whole on a re-run, never left half-written."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from contextlib import closing

import numpy as np
import pandas as pd
import psycopg2
import pytest

from churnops import db
from churnops.banding import SCORE_COLUMNS, build_score_frame
from tests.db.conftest import REPO, PlatformDatabases, admin_connection

LOGICAL_DATE = dt.date(2024, 3, 1)
CUTOFF = dt.date(2024, 2, 29)


def score_frame(n: int, *, seed: int, model_version: str = "7") -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return build_score_frame(
        customer_ids=np.array([f"C{i:07d}" for i in range(n)]),
        scores=rng.beta(2, 5, size=n),
        cutoff=CUTOFF,
        threshold=0.5,
        model_name="churn_lgbm",
        model_version=model_version,
    )


def stored_list(conn: psycopg2.extensions.connection, dataset: str) -> pd.DataFrame:
    """The latest list of `dataset` in the columns of a score frame, ordered by customer for comparison."""
    stored = db.latest_scores(conn, dataset)
    return stored.loc[:, list(SCORE_COLUMNS)].sort_values("customer_id").reset_index(drop=True)


def as_written(frame: pd.DataFrame) -> pd.DataFrame:
    expected = frame.sort_values("customer_id").reset_index(drop=True).copy()
    expected["risk_decile"] = expected["risk_decile"].astype(np.int8)
    return expected


def new_dataset() -> str:
    return f"ds_{uuid.uuid4().hex[:8]}"


def count_rows(conn: psycopg2.extensions.connection, dataset: str) -> int:
    with conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM churnops.scores WHERE dataset = %s", (dataset,))
        return cur.fetchone()[0]


def test_write_scores_stores_every_row_exactly_as_given(conn: psycopg2.extensions.connection) -> None:
    dataset, frame = new_dataset(), score_frame(2_000, seed=1)
    assert db.write_scores(conn, frame, dataset=dataset, run_id="run-1", logical_date=LOGICAL_DATE) == 2_000
    # Scores come back bit-identical (no float formatting loss on the way through COPY).
    pd.testing.assert_frame_equal(stored_list(conn, dataset), as_written(frame))


def test_every_row_carries_its_lists_key_and_run(conn: psycopg2.extensions.connection) -> None:
    """The values one list shares (dataset, date, kind, run, model, cutoff, key) are on every row, as given."""
    dataset = new_dataset()
    db.write_scores(
        conn, score_frame(500, seed=3), dataset=dataset, run_id="run-7", logical_date=LOGICAL_DATE, list_kind="backfill"
    )
    with conn, conn.cursor() as cur:
        cur.execute(
            "SELECT DISTINCT dataset, logical_date, list_kind, run_id, model_name, model_version, cutoff, list_key, "
            "count(*) OVER () FROM churnops.scores WHERE dataset = %s",
            (dataset,),
        )
        rows = cur.fetchall()
    key = f"{dataset}/{LOGICAL_DATE.isoformat()}/backfill"
    assert rows == [(dataset, LOGICAL_DATE, "backfill", "run-7", "churn_lgbm", "7", CUTOFF, key, 500)]


def test_rerun_replaces_rows_instead_of_duplicating(conn: psycopg2.extensions.connection) -> None:
    dataset, frame = new_dataset(), score_frame(2_000, seed=2)
    db.write_scores(conn, frame, dataset=dataset, run_id="run-1", logical_date=LOGICAL_DATE)
    first = db.latest_scores(conn, dataset)
    db.write_scores(conn, frame, dataset=dataset, run_id="run-1-retry", logical_date=LOGICAL_DATE)
    second = db.latest_scores(conn, dataset)
    assert count_rows(conn, dataset) == len(first) == len(second) == 2_000
    content = ["customer_id", *SCORE_COLUMNS[1:]]
    pd.testing.assert_frame_equal(first[content], second[content])
    assert set(second["run_id"]) == {"run-1-retry"}


def test_rerun_with_fewer_customers_drops_the_ones_no_longer_scored(
    conn: psycopg2.extensions.connection,
) -> None:
    dataset = new_dataset()
    db.write_scores(conn, score_frame(1_000, seed=3), dataset=dataset, run_id="a", logical_date=LOGICAL_DATE)
    smaller = score_frame(600, seed=4)
    db.write_scores(conn, smaller, dataset=dataset, run_id="b", logical_date=LOGICAL_DATE)
    pd.testing.assert_frame_equal(stored_list(conn, dataset), as_written(smaller))


def test_rerun_leaves_other_dates_and_datasets_untouched(conn: psycopg2.extensions.connection) -> None:
    dataset, other_dataset = new_dataset(), new_dataset()
    earlier = LOGICAL_DATE - dt.timedelta(days=1)
    db.write_scores(conn, score_frame(300, seed=5), dataset=dataset, run_id="old", logical_date=earlier)
    db.write_scores(conn, score_frame(400, seed=6), dataset=other_dataset, run_id="x", logical_date=LOGICAL_DATE)
    for run in ("new", "new-retry"):
        db.write_scores(conn, score_frame(500, seed=7), dataset=dataset, run_id=run, logical_date=LOGICAL_DATE)
    with conn, conn.cursor() as cur:
        cur.execute(
            "SELECT dataset, logical_date, count(*) FROM churnops.scores WHERE dataset = ANY(%s)"
            " GROUP BY 1, 2 ORDER BY 1, 2",
            ([dataset, other_dataset],),
        )
        counts = {(row[0], row[1]): row[2] for row in cur.fetchall()}
    assert counts == {
        (dataset, earlier): 300,
        (dataset, LOGICAL_DATE): 500,
        (other_dataset, LOGICAL_DATE): 400,
    }


def test_a_backfill_or_adhoc_list_of_a_date_never_replaces_its_regular_list_nor_the_other_way_round(
    conn: psycopg2.extensions.connection,
) -> None:
    dataset = new_dataset()
    regular, backfill, adhoc = score_frame(300, seed=11), score_frame(200, seed=12), score_frame(50, seed=13)
    db.write_scores(conn, regular, dataset=dataset, run_id="daily", logical_date=LOGICAL_DATE)
    for run in ("backfill", "backfill-retry"):
        db.write_scores(conn, backfill, dataset=dataset, run_id=run, logical_date=LOGICAL_DATE, list_kind="backfill")
    db.write_scores(conn, adhoc, dataset=dataset, run_id="adhoc:new.csv", logical_date=LOGICAL_DATE, list_kind="adhoc")
    with conn, conn.cursor() as cur:
        cur.execute(
            "SELECT list_kind, count(*) FROM churnops.scores WHERE dataset = %s AND logical_date = %s GROUP BY 1",
            (dataset, LOGICAL_DATE),
        )
        assert dict(cur.fetchall()) == {"regular": 300, "backfill": 200, "adhoc": 50}
    # Campaign lists and look-ups read the regular list.
    pd.testing.assert_frame_equal(stored_list(conn, dataset), as_written(regular))
    with pytest.raises(ValueError, match="list_kind"):
        db.write_scores(conn, regular, dataset=dataset, run_id="x", logical_date=LOGICAL_DATE, list_kind="weekly")


def test_adhoc_lists_of_two_files_on_one_date_are_kept_apart_and_each_file_replaces_only_its_own(
    conn: psycopg2.extensions.connection,
) -> None:
    """`churnops score --input` names an adhoc list by its input: two files scored the same day both stay, and
    scoring a file again replaces that file's list only."""
    dataset = new_dataset()
    adhoc = {"list_kind": "adhoc", "dataset": dataset, "logical_date": LOGICAL_DATE}
    db.write_scores(conn, score_frame(50, seed=14), run_id="adhoc:a", list_name="a.csv@0123", **adhoc)
    db.write_scores(conn, score_frame(70, seed=15), run_id="adhoc:b", list_name="b.csv@4567", **adhoc)
    db.write_scores(conn, score_frame(40, seed=16), run_id="adhoc:a again", list_name="a.csv@0123", **adhoc)
    with conn, conn.cursor() as cur:
        cur.execute(
            "SELECT list_name, run_id, row_count FROM churnops.score_runs WHERE dataset = %s ORDER BY 1", (dataset,)
        )
        assert cur.fetchall() == [("a.csv@0123", "adhoc:a again", 40), ("b.csv@4567", "adhoc:b", 70)]
        cur.execute("SELECT run_id, count(*) FROM churnops.scores WHERE dataset = %s GROUP BY 1", (dataset,))
        assert dict(cur.fetchall()) == {"adhoc:a again": 40, "adhoc:b": 70}
    assert len(partitions_of(conn, dataset)) == 2
    with pytest.raises(ValueError, match="only an adhoc list has a name"):
        db.write_scores(
            conn,
            score_frame(5, seed=17),
            dataset=dataset,
            run_id="x",
            logical_date=LOGICAL_DATE,
            list_name="a.csv@0123",
        )


def test_latest_scores_returns_the_newest_list_highest_score_first(
    conn: psycopg2.extensions.connection,
) -> None:
    dataset = new_dataset()
    db.write_scores(conn, score_frame(100, seed=8), dataset=dataset, run_id="may", logical_date=dt.date(2024, 5, 1))
    db.write_scores(conn, score_frame(50, seed=9), dataset=dataset, run_id="apr", logical_date=dt.date(2024, 4, 1))
    latest = db.latest_scores(conn, dataset)
    assert set(latest["run_id"]) == {"may"} and len(latest) == 100
    assert latest["score"].is_monotonic_decreasing
    top = db.latest_scores(conn, dataset, limit=10)
    pd.testing.assert_frame_equal(top, latest.head(10))


def test_latest_scores_of_an_unscored_dataset_is_empty(conn: psycopg2.extensions.connection) -> None:
    assert db.latest_scores(conn, new_dataset()).empty


def test_score_run_records_the_model_and_row_count(conn: psycopg2.extensions.connection) -> None:
    dataset = new_dataset()
    db.write_scores(conn, score_frame(250, seed=10), dataset=dataset, run_id="r", logical_date=LOGICAL_DATE)
    with conn, conn.cursor() as cur:
        cur.execute(
            "SELECT run_id, model_name, model_version, cutoff, row_count FROM churnops.score_runs WHERE dataset = %s",
            (dataset,),
        )
        assert cur.fetchall() == [("r", "churn_lgbm", "7", CUTOFF, 250)]


def test_copy_failing_on_a_bad_row_partway_leaves_the_old_list_intact(
    conn: psycopg2.extensions.connection,
) -> None:
    dataset, old = new_dataset(), score_frame(1_000, seed=11)
    db.write_scores(conn, old, dataset=dataset, run_id="good", logical_date=LOGICAL_DATE)
    bad = score_frame(300_000, seed=12, model_version="8")
    # PostgreSQL text cannot hold NUL: the server refuses this row after 250,000 rows were already copied.
    bad.loc[250_000, "customer_id"] = "C\x00bad"
    with pytest.raises(psycopg2.DataError):
        db.write_scores(conn, bad, dataset=dataset, run_id="bad", logical_date=LOGICAL_DATE)
    pd.testing.assert_frame_equal(stored_list(conn, dataset), as_written(old))
    assert count_rows(conn, dataset) == 1_000
    with conn, conn.cursor() as cur:  # the new list's table rolled back with the transaction
        cur.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'churnops' AND tablename LIKE 'scores\\_%%'")
        tables = cur.fetchone()[0]
        cur.execute("SELECT count(*) FROM pg_inherits WHERE inhparent = 'churnops.scores'::regclass")
        assert tables == cur.fetchone()[0]


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda f: f.iloc[0:0], "empty"),
        (lambda f: f.drop(columns="risk_band"), "lacks columns"),
        (lambda f: f.assign(score=f["score"].where(f.index != 3, np.nan)), "finite probability"),
        (lambda f: f.assign(score=f["score"] + 1.5), "finite probability"),
        (lambda f: f.assign(risk_decile=f["risk_decile"] + 10), "risk_decile"),
        (lambda f: f.assign(decision=f["decision"].astype(int)), "decision must be boolean"),
        (lambda f: pd.concat([f, f.head(1)]), "unique"),
        (lambda f: f.assign(model_version=["1", "2"] * (len(f) // 2)), "one model_version"),
    ],
)
def test_write_scores_refuses_a_malformed_frame_and_keeps_the_old_list(
    conn: psycopg2.extensions.connection, damage, message: str
) -> None:
    dataset, old = new_dataset(), score_frame(100, seed=13)
    db.write_scores(conn, old, dataset=dataset, run_id="good", logical_date=LOGICAL_DATE)
    with pytest.raises(ValueError, match=message):
        db.write_scores(conn, damage(score_frame(100, seed=14)), dataset=dataset, run_id="x", logical_date=LOGICAL_DATE)
    pd.testing.assert_frame_equal(stored_list(conn, dataset), as_written(old))


KILLED_WRITER = textwrap.dedent(
    """
    import datetime as dt, sys
    import numpy as np
    from churnops.banding import build_score_frame
    from churnops.config import Settings
    from churnops.db import connect, write_scores

    n = 600_000
    frame = build_score_frame(
        customer_ids=np.array([f"C{i:07d}" for i in range(n)]), scores=np.random.default_rng(0).random(n),
        cutoff=dt.date(2024, 2, 29), threshold=0.5, model_name="churn_lgbm", model_version="99",
    )
    conn = connect(Settings(), application_name=sys.argv[2])
    write_scores(conn, frame, dataset=sys.argv[1], run_id="doomed", logical_date=dt.date(2024, 3, 1))
    print("committed")
    """
)


def copy_progress(application_name: str) -> tuple[int, int] | None:
    """(backend pid, rows copied so far) of the COPY of the connection named `application_name`, if any."""
    with closing(admin_connection()) as admin, admin.cursor() as cur:
        cur.execute(
            "SELECT p.pid, p.tuples_processed FROM pg_stat_progress_copy p"
            " JOIN pg_stat_activity a ON a.pid = p.pid WHERE a.application_name = %s",
            (application_name,),
        )
        row = cur.fetchone()
    return (row[0], row[1]) if row else None


def backend_alive(pid: int) -> bool:
    with closing(admin_connection()) as admin, admin.cursor() as cur:
        cur.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (pid,))
        return cur.fetchone()[0] == 1


def test_writer_killed_mid_copy_leaves_the_old_list_intact(
    conn: psycopg2.extensions.connection, platform_databases: PlatformDatabases
) -> None:
    """A scoring task SIGKILLed while its COPY streams rows: readers still see the complete previous list."""
    dataset, old = new_dataset(), score_frame(1_000, seed=15)
    db.write_scores(conn, old, dataset=dataset, run_id="complete", logical_date=LOGICAL_DATE)
    application_name = f"killed-writer-{uuid.uuid4().hex[:6]}"
    env = {**os.environ, "CHURNOPS_DATABASE_URL": platform_databases.churnops_url()}
    writer = subprocess.Popen(
        [sys.executable, "-c", KILLED_WRITER, dataset, application_name],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        progress, deadline = None, time.monotonic() + 60
        while time.monotonic() < deadline and writer.poll() is None:
            progress = copy_progress(application_name)
            if progress and progress[1] > 0:
                break
            time.sleep(0.02)
        assert writer.poll() is None, f"the writer ended before it could be killed: {writer.communicate()}"
        assert progress and progress[1] > 0, "never saw the writer's COPY in progress"
        writer.send_signal(signal.SIGKILL)
        writer.wait(timeout=10)
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()
    backend_pid, rows_in_flight = progress
    # The server aborts the orphaned transaction once it sees the socket close; wait for that, then look.
    deadline = time.monotonic() + 30
    while backend_alive(backend_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not backend_alive(backend_pid)
    assert rows_in_flight < 600_000
    pd.testing.assert_frame_equal(stored_list(conn, dataset), as_written(old))
    assert count_rows(conn, dataset) == 1_000
    with conn, conn.cursor() as cur:
        cur.execute("SELECT run_id FROM churnops.score_runs WHERE dataset = %s", (dataset,))
        assert cur.fetchall() == [("complete",)]


def partitions_of(conn: psycopg2.extensions.connection, dataset: str) -> list[str]:
    """The partitions of churnops.scores that hold lists of `dataset` (named by the partition bound)."""
    with conn, conn.cursor() as cur:
        cur.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = 'churnops.scores'::regclass AND pg_get_expr(c.relpartbound, c.oid) LIKE %s",
            (f"%'{dataset}/%",),
        )
        return sorted(row[0] for row in cur.fetchall())


def test_each_list_is_one_partition_and_a_rerun_swaps_it_leaving_no_table_behind(
    conn: psycopg2.extensions.connection,
) -> None:
    dataset = new_dataset()
    db.write_scores(conn, score_frame(300, seed=21), dataset=dataset, run_id="a", logical_date=LOGICAL_DATE)
    db.write_scores(
        conn, score_frame(200, seed=22), dataset=dataset, run_id="b", logical_date=LOGICAL_DATE, list_kind="backfill"
    )
    before = partitions_of(conn, dataset)
    db.write_scores(conn, score_frame(250, seed=23), dataset=dataset, run_id="c", logical_date=LOGICAL_DATE)
    after = partitions_of(conn, dataset)

    assert len(before) == len(after) == 2
    assert len(set(after) - set(before)) == 1  # the regular list's partition was replaced, the backfill's kept
    with conn, conn.cursor() as cur:
        cur.execute(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'churnops' AND tablename = ANY(%s)",
            (list(set(before) - set(after)),),
        )
        assert cur.fetchone()[0] == 0  # the old partition is gone, not detached and left over
        cur.execute(
            "SELECT list_kind, partition_name FROM churnops.score_runs WHERE dataset = %s ORDER BY 1", (dataset,)
        )
        assert {kind for kind, _ in cur.fetchall()} == {"backfill", "regular"}
    assert count_rows(conn, dataset) == 450


def test_lists_written_before_the_partitioning_migration_keep_their_rows(empty_database, tmp_path) -> None:
    """Migration 0008 moves each existing list into a partition of its own."""
    import shutil

    older = tmp_path / "migrations"
    older.mkdir()
    for path in sorted(db.MIGRATIONS_DIR.glob("*.sql")):
        if path.name < "0008" or path.name == "bootstrap.sql":
            shutil.copy(path, older / path.name)
    db.migrate(empty_database, older)
    with empty_database, empty_database.cursor() as cur:
        for kind, customers in (("regular", 3), ("backfill", 2)):
            cur.execute(
                "INSERT INTO churnops.score_runs (dataset, logical_date, list_kind, run_id, model_name, "
                "model_version, cutoff, row_count) VALUES ('old', %s, %s, 'r', 'm', '1', %s, %s)",
                (LOGICAL_DATE, kind, CUTOFF, customers),
            )
            for number in range(customers):
                cur.execute(
                    "INSERT INTO churnops.scores (dataset, logical_date, list_kind, customer_id, run_id, cutoff, "
                    "score, decision, risk_decile, risk_band, model_name, model_version) "
                    "VALUES ('old', %s, %s, %s, 'r', %s, 0.5, true, 1, 'high', 'm', '1')",
                    (LOGICAL_DATE, kind, f"C{number}", CUTOFF),
                )

    assert db.migrate(empty_database) == [m.version for m in db.discover_migrations() if m.version >= "0008"]

    assert len(partitions_of(empty_database, "old")) == 2
    with empty_database, empty_database.cursor() as cur:
        cur.execute("SELECT list_kind, count(*) FROM churnops.scores WHERE dataset = 'old' GROUP BY 1")
        assert dict(cur.fetchall()) == {"regular": 3, "backfill": 2}
    # The next run of the same list swaps the migrated partition like any other.
    db.write_scores(empty_database, score_frame(10, seed=26), dataset="old", run_id="new", logical_date=LOGICAL_DATE)
    assert count_rows(empty_database, "old") == 12


def test_a_reader_during_a_replace_sees_the_whole_old_list_or_the_whole_new_one(
    conn: psycopg2.extensions.connection, platform_databases: PlatformDatabases
) -> None:
    dataset = new_dataset()
    db.write_scores(conn, score_frame(1_000, seed=21), dataset=dataset, run_id="old", logical_date=LOGICAL_DATE)
    new = score_frame(200_000, seed=22)
    errors: list[BaseException] = []

    def replace() -> None:
        try:
            with closing(psycopg2.connect(platform_databases.churnops_url())) as writer:
                db.write_scores(writer, new, dataset=dataset, run_id="new", logical_date=LOGICAL_DATE)
        except BaseException as error:  # noqa: BLE001 — reported by the test below
            errors.append(error)

    seen_during_write = set()
    writer = threading.Thread(target=replace)
    writer.start()
    with closing(psycopg2.connect(platform_databases.churnops_url())) as reader:
        reader.autocommit = True  # each read is a statement of its own, as the API's are
        with reader.cursor() as cur:
            while writer.is_alive():
                cur.execute(
                    "SELECT run_id, count(*) FROM churnops.scores WHERE dataset = %s GROUP BY run_id", (dataset,)
                )
                seen_during_write.add(tuple(sorted(cur.fetchall())))
    writer.join()
    assert not errors, errors
    assert seen_during_write, "no read ran while the list was being replaced"
    assert seen_during_write <= {(("old", 1_000),), (("new", 200_000),)}, seen_during_write
    assert count_rows(conn, dataset) == 200_000


def test_customer_ids_beyond_ascii_are_stored_as_given(conn: psycopg2.extensions.connection) -> None:
    dataset, frame = new_dataset(), score_frame(50, seed=23)
    frame["customer_id"] = [f"Zoë-{i}-客户" for i in range(50)]
    db.write_scores(conn, frame, dataset=dataset, run_id="r", logical_date=LOGICAL_DATE)
    pd.testing.assert_frame_equal(stored_list(conn, dataset), as_written(frame))
