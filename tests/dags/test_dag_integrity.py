"""The DAG files parse, wire the platform's stages in order, and are safe to run unattended."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from unittest import mock

import pytest

from churnops.config import Settings

DAGS_FOLDER = Path(__file__).resolve().parents[2] / "airflow" / "dags"
EXPECTED = {"churnops_features", "churnops_drift", "churnops_training", "churnops_scoring"}


@pytest.fixture(scope="module")
def dagbag(tmp_path_factory: pytest.TempPathFactory):
    settings = Settings(home=tmp_path_factory.mktemp("airflow-home"))
    airflow_env = {k: v for k, v in settings.airflow_environment().items() if k != "PATH"}
    # Only while parsing: later tests (the native stack) must not inherit this embedded Airflow's settings.
    with mock.patch.dict(os.environ, airflow_env):
        # Airflow's dag-processor puts the DAG folder on sys.path (shared `common` module); do the same here.
        sys.path.insert(0, str(DAGS_FOLDER))
        from airflow.dag_processing.dagbag import DagBag

        return DagBag(dag_folder=str(DAGS_FOLDER))


def test_every_dag_file_imports_without_errors(dagbag) -> None:
    assert dagbag.import_errors == {}
    assert EXPECTED <= set(dagbag.dag_ids)


def test_every_task_retries_and_dags_do_not_catch_up(dagbag) -> None:
    for dag in dagbag.dags.values():
        assert dag.catchup is False, dag.dag_id
        assert dag.tags, dag.dag_id
        assert dag.max_active_runs == 1, dag.dag_id
        for task in dag.tasks:
            assert task.retries >= 1, f"{dag.dag_id}.{task.task_id} has no retries"


def test_dags_have_no_cycles(dagbag) -> None:
    from airflow.utils.dag_cycle_tester import check_cycle

    for dag in dagbag.dags.values():
        check_cycle(dag)


def test_dags_chain_through_assets_features_drift_training_scoring(dagbag) -> None:
    """A new snapshot wakes the drift DAG; only its retrain request starts training; a new model starts scoring."""
    from common import FEATURES, MODEL, RETRAIN_REQUEST

    assert FEATURES in dagbag.dags["churnops_features"].tasks[-1].outlets
    assert FEATURES.uri in repr(dagbag.dags["churnops_drift"].timetable)
    assert RETRAIN_REQUEST.uri in repr(dagbag.dags["churnops_training"].timetable)
    assert FEATURES.uri not in repr(dagbag.dags["churnops_training"].timetable)
    assert any(MODEL in task.outlets for task in dagbag.dags["churnops_training"].tasks)
    assert MODEL.uri in repr(dagbag.dags["churnops_scoring"].timetable)


def test_dag_files_hold_no_heavy_imports_at_parse_time() -> None:
    heavy = (
        "import mlflow",
        "import lightgbm",
        "import pyspark",
        "import evidently",
        "from jobs",
        "import pandas",
    )
    for path in DAGS_FOLDER.glob("*.py"):
        top_level = [line for line in path.read_text().splitlines() if not line.startswith((" ", "\t"))]
        assert not [line for line in top_level if line.startswith(heavy)], path.name


def test_scoring_backfill_cutoff_is_optional_and_refused_unless_an_iso_date(dagbag) -> None:
    from airflow.sdk.exceptions import ParamValidationError

    cutoff = dagbag.dags["churnops_scoring"].params.get_param("cutoff")
    assert cutoff.resolve() is None  # the daily and asset-triggered runs score the scoring cutoff
    assert cutoff.resolve("2024-11-01") == "2024-11-01"
    # Refused when the run is created (Param schema), not deep inside the task after the model has loaded.
    for bad in ("2024-13-01", "01/11/2024", 20241101):
        with pytest.raises(ParamValidationError):
            cutoff.resolve(bad)


def test_spark_submit_conf_states_the_executors_memory_beyond_the_heap_only_when_configured(
    dagbag,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A deployment states each executor's whole budget (heap, JVM overhead, Python workers) in its environment;
    unset or empty, Spark's defaults stand and nothing is passed."""
    from common import spark_submit_conf

    for name in ("CHURNOPS_SPARK__EXECUTOR_MEMORY_OVERHEAD", "CHURNOPS_SPARK__EXECUTOR_PYSPARK_MEMORY"):
        monkeypatch.setenv(name, "")
    assert not {"spark.executor.memoryOverhead", "spark.executor.pyspark.memory"} & set(spark_submit_conf())
    monkeypatch.setenv("CHURNOPS_SPARK__EXECUTOR_MEMORY", "3g")
    monkeypatch.setenv("CHURNOPS_SPARK__EXECUTOR_MEMORY_OVERHEAD", "512m")
    monkeypatch.setenv("CHURNOPS_SPARK__EXECUTOR_PYSPARK_MEMORY", "2g")
    conf = spark_submit_conf()
    assert (conf["spark.executor.memory"], conf["spark.executor.memoryOverhead"]) == ("3g", "512m")
    assert conf["spark.executor.pyspark.memory"] == "2g"
