"""Shared fixtures: a small but real trained platform (generated data -> Spark features -> Optuna/MLflow model)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from churnops.config import Settings
from churnops.dataset import DatasetContract, load_contract

SMALL_CUSTOMERS = 1500


@dataclass(frozen=True)
class TrainedPlatform:
    settings: Settings
    contract: DatasetContract
    model_version: str


@pytest.fixture(scope="session")
def trained_platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TrainedPlatform]:
    """Generate a small synthetic dataset, build its snapshot with Spark and train a registered champion."""
    from churnops.jobs.features import build_feature_snapshot
    from churnops.jobs.generate import generate, write_generated
    from churnops.jobs.spark import spark_session
    from churnops.jobs.training import train

    home: Path = tmp_path_factory.mktemp("churnops-home")
    settings = Settings(home=home, training={"n_trials": 10, "seed": 3}, spark={"master": "local[2]"})
    contract = load_contract("synthetic", settings)
    data = generate(SMALL_CUSTOMERS, seed=11)
    write_generated(data, contract.resolve(contract.events.path), contract.resolve(contract.entities.path))
    spark = spark_session(settings, "churnops-tests")
    try:
        build_feature_snapshot(spark, contract, settings)
    finally:
        spark.stop()
    result = train(settings, contract)
    yield TrainedPlatform(settings=settings, contract=contract, model_version=result.model_version)
