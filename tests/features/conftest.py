"""Fixtures for the feature-platform tests: one local Spark session per test module, tiny data, a private home."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from churnops.config import Settings, SparkSettings
from churnops.dataset import DatasetContract, load_contract
from churnops.jobs.generate import generate, write_generated

# A small slice of the synthetic generator: a few hundred customers over 2022-2024 (tens of thousands of events).
SMALL_CUSTOMERS = 250


@pytest.fixture(scope="module")
def spark(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """One SparkSession per test module (JVM start costs seconds; per-test sessions would dominate the run)."""
    from churnops.jobs.spark import spark_session

    settings = Settings(home=tmp_path_factory.mktemp("spark-home"), spark=small_spark())
    session = spark_session(settings, "churnops-feature-tests")
    yield session
    session.stop()


def small_spark() -> SparkSettings:
    return SparkSettings(master="local[2]", driver_memory="1g", shuffle_partitions=2)


def make_settings(home: Path) -> Settings:
    return Settings(home=home, spark=small_spark())


def synthetic_contract_yaml(data_dir: Path, **overrides: object) -> dict:
    """The built-in synthetic contract, pointed at files under `data_dir`, with top-level overrides."""
    raw = yaml.safe_load((Path(__file__).resolve().parents[2] / "churnops/datasets/synthetic.yaml").read_text())
    raw["events"]["path"] = str(data_dir / "events.parquet")
    raw["entities"]["path"] = str(data_dir / "customers.parquet")
    raw.update(overrides)
    return raw


def write_contract(folder: Path, raw: dict) -> DatasetContract:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{raw['name']}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return load_contract(str(path), make_settings(folder))


@pytest.fixture(scope="module")
def small_synthetic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Seeded synthetic events and customers for SMALL_CUSTOMERS customers; returns their folder."""
    folder = tmp_path_factory.mktemp("synthetic-data")
    data = generate(SMALL_CUSTOMERS, seed=11, start=dt.date(2022, 1, 1), end=dt.date(2025, 1, 1))
    write_generated(data, folder / "events.parquet", folder / "customers.parquet")
    return folder
