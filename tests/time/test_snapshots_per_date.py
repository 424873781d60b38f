"""Snapshots per run date: each date gets its cutoffs, unchanged inputs reuse a snapshot, backfills never move
`latest` back, and a date the data does not reach is refused before Spark starts."""

from __future__ import annotations

import datetime as dt
import shutil

import pytest

from churnops.jobs.features import PROBES_DIR, build_feature_snapshot, prepare_run, reuse_snapshot
from churnops.jobs.generate import generate, write_generated
from churnops.run_dates import DataNotReady
from churnops.snapshots import dataset_dir, latest_snapshot_dir, read_metadata, snapshot_dir_for
from tests.features.conftest import make_settings, synthetic_contract_yaml, write_contract

D = dt.date


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """80 synthetic customers whose events end on 2024-12-31."""
    folder = tmp_path_factory.mktemp("dated")
    write_generated(generate(80, seed=5), folder / "events.parquet", folder / "customers.parquet")
    contract = write_contract(folder, synthetic_contract_yaml(folder, name="dated"))
    return contract, make_settings(folder / "home")


def build(spark, contract, settings, run_date):
    prepared = prepare_run(contract, settings, run_date)
    return reuse_snapshot(settings, contract, prepared) or build_feature_snapshot(spark, contract, settings, prepared)


@pytest.mark.slow
def test_each_run_date_gets_its_own_cutoffs_and_unchanged_inputs_reuse_the_snapshot(spark, tiny):
    contract, settings = tiny
    december = build(spark, contract, settings, D(2024, 12, 1))
    assert not december.reused
    assert december.metadata.cutoffs["scoring"] == ["2024-12-01"]
    assert december.metadata.cutoffs["out_of_time"] == ["2024-10-01"]
    assert december.metadata.run_date == "2024-12-01"

    again = build(spark, contract, settings, D(2024, 12, 1))
    assert again.reused and again.snapshot_dir == december.snapshot_dir

    january = build(spark, contract, settings, D(2025, 1, 1))
    assert january.metadata.cutoffs["scoring"] == ["2025-01-01"]
    assert january.metadata.cutoffs["out_of_time"] == ["2024-11-01"]
    assert latest_snapshot_dir(settings, contract.name) == january.snapshot_dir

    # A backfill of an earlier date gets its own snapshot and leaves `latest` on the newest date.
    november = build(spark, contract, settings, D(2024, 11, 1))
    assert snapshot_dir_for(settings, contract.name, D(2024, 11, 1)) == november.snapshot_dir
    assert latest_snapshot_dir(settings, contract.name) == january.snapshot_dir
    assert read_metadata(november.snapshot_dir).training_hash != read_metadata(january.snapshot_dir).training_hash


def test_a_run_date_the_data_does_not_reach_is_refused_naming_the_last_day(tiny):
    contract, settings = tiny
    with pytest.raises(DataNotReady, match="needs events through 2025-01-09, but the last day seen is 2024-12-31"):
        prepare_run(contract, settings, D(2025, 1, 10))


def test_a_run_without_a_date_takes_the_day_after_the_latest_data(tiny):
    contract, settings = tiny
    assert prepare_run(contract, settings).run_date == D(2025, 1, 1)


@pytest.mark.slow
def test_the_leakage_probe_runs_once_per_version_of_the_definitions(spark, tiny):
    contract, settings = tiny
    shutil.rmtree(dataset_dir(settings, contract.name) / PROBES_DIR, ignore_errors=True)
    first = build(spark, contract, settings, D(2024, 10, 1)).metadata.leakage_probes
    later = build(spark, contract, settings, D(2024, 10, 8)).metadata.leakage_probes
    assert first["reused"] is False and later["reused"] is True
    assert later["probed_for"] == first["probed_for"]
    assert later["source_timestamps"] == first["source_timestamps"]
    assert len(list((dataset_dir(settings, contract.name) / PROBES_DIR).iterdir())) == 1
