"""Backfill scoring: a past cutoff of the snapshot scored by the champion as a backtest, so realized performance
has a matured list to evaluate without waiting a label horizon; a cutoff the snapshot does not hold is refused."""

from __future__ import annotations

import datetime as dt
import shutil
from contextlib import closing
from pathlib import Path

import pandas as pd
import psycopg2
import pytest
from pydantic import SecretStr
from sklearn.metrics import roc_auc_score

from churnops.config import Settings
from churnops.dataset import load_contract
from churnops.features import CUTOFF
from churnops.jobs.score import UnknownCutoffError, score
from churnops.monitoring.realized import compute_realized_performance
from churnops.monitoring.store import LocalStore
from churnops.paths import scores_path
from churnops.snapshots import latest_snapshot_dir, load_snapshot
from tests.serving.conftest import platform_database_url  # noqa: F401 - fixture re-exported

pytestmark = pytest.mark.slow


@pytest.fixture
def deployed_copy(trained_platform, platform_database_url, tmp_path: Path) -> Settings:  # noqa: F811 - the fixture
    """A private copy of the session's trained platform (the backfill's Parquet list must not reach other tests),
    writing its lists to a migrated PostgreSQL database as a deployment does."""
    home = tmp_path / "home"
    shutil.copytree(trained_platform.settings.home, home)
    original = trained_platform.settings
    # A fresh Settings (not model_copy, which would keep the cached paths of the original home).
    return Settings(
        home=home,
        training=original.training,
        spark=original.spark,
        database_url=SecretStr(platform_database_url),
    )


def test_backfill_of_a_matured_cutoff_writes_a_list_dated_by_it_that_realized_performance_evaluates(
    deployed_copy: Settings, tmp_path: Path
) -> None:
    contract = load_contract("synthetic", deployed_copy)
    frame, metadata = load_snapshot(latest_snapshot_dir(deployed_copy, contract.name))
    cutoff = dt.date.fromisoformat(metadata.cutoffs["out_of_time"][0])

    # The list is dated by the cutoff it scored (realized performance looks for outcomes after it) and kept as a
    # backfill, apart from any regular list of that date.
    run = score(deployed_copy, contract, run_id="backfill", cutoff=cutoff)

    at_cutoff = frame[frame[CUTOFF] == pd.Timestamp(cutoff)]
    assert run.cutoff == cutoff and run.rows == len(at_cutoff) == run.rows_in_database
    assert run.list_kind == "backfill"
    assert run.path == scores_path(deployed_copy, contract.name, cutoff, "backfill")
    with closing(psycopg2.connect(deployed_copy.database_url.get_secret_value())) as conn, conn.cursor() as cursor:
        cursor.execute(
            "SELECT logical_date, list_kind, cutoff, count(*) FROM churnops.scores WHERE dataset = %s AND run_id = %s"
            " GROUP BY logical_date, list_kind, cutoff",
            (contract.name, "backfill"),
        )
        assert cursor.fetchall() == [(cutoff, "backfill", cutoff, run.rows)]

    evaluated = compute_realized_performance(deployed_copy, contract, store=LocalStore(tmp_path))
    realized = {r.logical_date: r for r in evaluated}
    assert cutoff in realized, f"no realized performance for the backfilled {cutoff}: {sorted(realized)}"
    result = realized[cutoff]
    # Independent of the realized-outcome code: the feature job's own labels at that cutoff, joined to the list.
    listed = pd.read_parquet(run.path).merge(at_cutoff[["customer_id", "label"]], on="customer_id", validate="1:1")
    assert result.n_scored == run.rows and result.n_positive == int(listed["label"].sum())
    assert result.roc_auc == pytest.approx(roc_auc_score(listed["label"], listed["score"]), abs=1e-12)


def test_backfill_of_a_cutoff_the_snapshot_does_not_hold_is_refused_naming_the_ones_it_holds(trained_platform) -> None:
    settings, contract = trained_platform.settings, trained_platform.contract
    _, metadata = load_snapshot(latest_snapshot_dir(settings, contract.name))
    held = sorted({day for days in metadata.cutoffs.values() for day in days})
    unknown = dt.date.fromisoformat(metadata.cutoffs["out_of_time"][0]) + dt.timedelta(days=1)

    with pytest.raises(UnknownCutoffError, match=f"cannot backfill cutoff {unknown}") as refused:
        score(settings, contract, run_id="backfill", cutoff=unknown)
    assert all(day in str(refused.value) for day in held), str(refused.value)
    assert not scores_path(settings, contract.name, unknown).exists()
