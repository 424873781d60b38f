"""The Spark feature job on incremental bronze: a landing folder of partition files gives the same features as the
single file holding the same events, and the job reads only the part files the manifest lists."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import pandas as pd
import pytest

from churnops.bronze import AMOUNT, read_manifest
from churnops.dataset import bronze_dir
from churnops.features import CUTOFF, ENTITY_ID, model_feature_columns
from churnops.jobs.feature_frames import compute_feature_table
from churnops.jobs.ingest import ingest_events
from tests.features.conftest import make_settings, synthetic_contract_yaml, write_contract
from tests.features.test_spark_features import OBSERVED_UNTIL, assert_same_features, spark_features

pytestmark = pytest.mark.slow

CUTOFFS = [dt.date(2023, 9, 1), dt.date(2024, 11, 1)]


@pytest.fixture(scope="module")
def monthly_landing(small_synthetic, tmp_path_factory) -> Path:
    """The small synthetic events split into hive-style month folders, `month=YYYY-MM/part-0.parquet`."""
    landing = tmp_path_factory.mktemp("landing")
    events = pd.read_parquet(small_synthetic / "events.parquet")
    for month, rows in events.groupby(events["event_time"].dt.strftime("%Y-%m")):
        (landing / f"month={month}").mkdir()
        rows.to_parquet(landing / f"month={month}" / "part-0.parquet", index=False)
    return landing


def folder_contract(small_synthetic: Path, landing: Path, folder: Path):
    raw = synthetic_contract_yaml(small_synthetic, name="synthetic-landing")
    raw["events"]["path"] = str(landing)
    return write_contract(folder, raw)


def test_a_landing_folder_gives_the_features_of_the_single_file(spark, small_synthetic, monthly_landing, tmp_path):
    single = write_contract(tmp_path / "single", synthetic_contract_yaml(small_synthetic, name="synthetic-single"))
    folder = folder_contract(small_synthetic, monthly_landing, tmp_path / "folder")

    from_file = spark_features(spark, single, tmp_path / "home-single", CUTOFFS)
    from_folder = spark_features(spark, folder, tmp_path / "home-folder", CUTOFFS)

    assert len(read_manifest(make_settings(tmp_path / "home-folder"), folder.name).files) == 36
    numeric, categorical = model_feature_columns(single)
    assert len(from_file) > 100
    assert_same_features(from_folder, from_file, numeric + categorical + ["label", "label_available"])


def test_the_feature_job_reads_only_the_parts_the_manifest_lists(spark, small_synthetic, monthly_landing, tmp_path):
    contract = folder_contract(small_synthetic, monthly_landing, tmp_path / "folder")
    settings = make_settings(tmp_path / "home")
    manifest = ingest_events(contract, settings).manifest
    expected = spark_features(spark, contract, tmp_path / "home", CUTOFFS)
    # A stray part beside every listed one, as a crashed ingestion would leave: ten times the amounts.
    root = bronze_dir(settings, contract.name)
    for part in manifest.event_parts():
        stray = (root / part).with_name("stray.parquet")
        shutil.copy(root / part, stray)
        frame = pd.read_parquet(stray)
        frame.assign(**{AMOUNT: frame[AMOUNT] * 10}).to_parquet(stray, index=False)

    # The committed manifest as a reader holds it (an ingestion run now would delete the strays first).
    actual = compute_feature_table(spark, contract, settings, CUTOFFS, OBSERVED_UNTIL, manifest).toPandas()
    actual[CUTOFF] = pd.to_datetime(actual[CUTOFF])

    assert len(list(root.rglob("stray.parquet"))) == len(manifest.event_parts())
    numeric, categorical = model_feature_columns(contract)
    assert_same_features(actual.sort_values([CUTOFF, ENTITY_ID], ignore_index=True), expected, numeric + categorical)
