"""The champion gate cannot be fooled, training is reproducible, and a killed training resumes its study.

Each test trains small real models (LightGBM, Optuna, MLflow registry) in its own working folder on a copy of the
session's synthetic snapshot, so the shared `trained_platform` registry is left alone.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import psycopg2
import pytest
from pydantic import SecretStr

from churnops.config import Settings
from churnops.dataset import DatasetContract
from churnops.features import CUTOFF, LABEL
from churnops.snapshots import DATA_DIR, describe, latest_snapshot_dir, load_snapshot, write_metadata
from tests.serving.conftest import platform_database_url  # noqa: F401 - fixture re-exported

pytestmark = pytest.mark.slow
TRIALS = 4
SEED = 5
REPO = Path(__file__).resolve().parents[2]
ADMIN_URL = os.environ.get("CHURNOPS_TEST_POSTGRES_URL", "postgresql://root@127.0.0.1:5432/test")


@dataclass(frozen=True)
class Home:
    settings: Settings
    contract: DatasetContract
    snapshot_dir: Path


def fresh_home(root: Path, trained_platform, seed: int = SEED, **settings: object) -> Home:
    """A new working folder holding a copy of the session's feature snapshot and nothing else."""
    source = latest_snapshot_dir(trained_platform.settings, trained_platform.contract.name)
    target = root / "features" / trained_platform.contract.name
    shutil.copytree(source.parent, target)
    return Home(
        settings=Settings(home=root, training={"n_trials": TRIALS, "seed": seed}, **settings),
        contract=trained_platform.contract,
        snapshot_dir=target / source.name,
    )


@pytest.fixture(scope="module")
def champion_home(tmp_path_factory: pytest.TempPathFactory, trained_platform):
    """A folder whose registry has one champion, trained on the real (unshuffled) snapshot."""
    from churnops.jobs.training import train

    home = fresh_home(tmp_path_factory.mktemp("champion"), trained_platform)
    result = train(home.settings, home.contract)
    assert result.decision.promoted
    return home, result


def registry_state(home: Home) -> tuple[list[str], dict[str, str]]:
    from mlflow import MlflowClient

    from churnops.registry import configure_mlflow

    configure_mlflow(home.settings)
    client = MlflowClient()
    name = home.contract.model_name
    # MLflow returns versions as ints in some calls and strings in others; compare them as strings.
    versions = sorted(str(v.version) for v in client.search_model_versions(f"name = '{name}'"))
    aliases = {alias: str(version) for alias, version in client.get_registered_model(name).aliases.items()}
    return versions, aliases


def write_shuffled_snapshot(snapshot_dir: Path, seed: int) -> Path:
    """A valid snapshot (hashed, loadable) whose labels are shuffled within each cutoff: nothing to learn."""
    frame, metadata = load_snapshot(snapshot_dir)
    rng = np.random.default_rng(seed)
    shuffled = frame.copy()
    for _, index in shuffled.groupby(CUTOFF).groups.items():
        shuffled.loc[index, LABEL] = rng.permutation(shuffled.loc[index, LABEL].to_numpy())
    target = snapshot_dir.parent / "shuffled-labels"
    (target / DATA_DIR).mkdir(parents=True)
    shuffled.to_parquet(target / DATA_DIR / "part-0.parquet", index=False)
    reread = pd.read_parquet(target / DATA_DIR)
    reread[CUTOFF] = pd.to_datetime(reread[CUTOFF])
    cutoffs = {role: [pd.Timestamp(d).date() for d in dates] for role, dates in metadata.cutoffs.items()}
    write_metadata(
        target,
        describe(reread, metadata.dataset, cutoffs, metadata.feature_columns, {"shuffled": metadata.content_hash}),
    )
    return target


@contextlib.contextmanager
def throwaway_database():
    """A fresh PostgreSQL database for one test (the platform schema is created by training's `db.migrate`)."""
    name = f"churnops_training_{uuid.uuid4().hex[:10]}"
    try:
        admin = psycopg2.connect(ADMIN_URL, connect_timeout=5)
    except psycopg2.OperationalError as error:
        pytest.fail(f"PostgreSQL at {ADMIN_URL} is unreachable (set CHURNOPS_TEST_POSTGRES_URL): {error}")
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    dsn = psycopg2.extensions.parse_dsn(ADMIN_URL)
    url = f"postgresql://{dsn.get('user', 'root')}@{dsn.get('host', '127.0.0.1')}:{dsn.get('port', '5432')}/{name}"
    try:
        yield url
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def test_model_trained_on_shuffled_labels_is_challenger_and_not_promoted(champion_home) -> None:
    """It is registered and aliased `challenger`, the champion stays, and the reason is in MLflow, in
    evaluation.json and in PostgreSQL."""
    from churnops.jobs.training import train

    home, champion = champion_home
    shuffled = write_shuffled_snapshot(home.snapshot_dir, seed=1)
    with throwaway_database() as url:
        settings = home.settings.model_copy(update={"database_url": SecretStr(url)})
        result = train(settings, home.contract, snapshot_dir=shuffled)
        with contextlib.closing(psycopg2.connect(url)) as conn, conn.cursor() as cur:
            cur.execute(
                "SELECT challenger_version, champion_version, promoted, reason FROM churnops.promotion_decisions"
            )
            rows = cur.fetchall()
            cur.execute(
                "SELECT count(*) FROM churnops.model_evaluations WHERE model_version = %s", (result.model_version,)
            )
            evaluations = cur.fetchone()[0]

    assert result.decision.promoted is False
    assert "below the floor" in result.decision.reason
    versions, aliases = registry_state(home)
    assert aliases == {"champion": champion.model_version, "challenger": result.model_version}
    assert result.model_version in versions
    from mlflow import MlflowClient

    tags = MlflowClient().get_model_version(home.contract.model_name, result.model_version).tags
    assert tags["promoted"] == "false" and "below the floor" in tags["promotion_reason"]
    report = json.loads(result.evaluation_path.read_text())
    assert report["promotion"]["promoted"] is False
    assert report["champion"]["version"] == champion.model_version
    assert rows == [(result.model_version, champion.model_version, False, result.decision.reason)]
    assert evaluations > 10


def test_two_runs_with_the_same_snapshot_and_seed_give_identical_metrics(champion_home, tmp_path, trained_platform):
    from churnops.jobs.training import train

    _, first = champion_home
    again = fresh_home(tmp_path, trained_platform)
    second = train(again.settings, again.contract)
    assert second.best_params == first.best_params
    assert second.evaluation_metrics == first.evaluation_metrics
    assert second.threshold == first.threshold
    baselines = [json.loads(r.evaluation_path.read_text())["baselines"] for r in (first, second)]
    assert baselines[0] == baselines[1]


@pytest.mark.parametrize("study_storage", ["sqlite", "postgresql"])
def test_training_killed_mid_study_resumes_it_and_registers_once(
    champion_home,
    tmp_path,
    study_storage,
    platform_database_url,  # noqa: F811 - the fixture
) -> None:
    """SIGKILL after some trials: no registration, champion untouched; the retry continues the same study and
    parent run and registers exactly one new version. With the embedded SQLite file and with the deployment's
    storage, the platform database's `optuna` schema (migration 0010)."""
    import optuna

    from churnops.jobs.training import train
    from churnops.jobs.training.search import PARENT_RUN_ATTR, study_name

    home, champion = champion_home
    total = 8
    seed = SEED + 100 + (study_storage == "postgresql")  # a new study on the same snapshot
    # The killed subprocess gets the storage through the environment, as a deployed worker does: if it did not, the
    # study would not be found here and the kill would never come.
    storage_url = (
        platform_database_url.replace("postgresql://", "postgresql+psycopg2://", 1) + "?options=-csearch_path%3Doptuna"
        if study_storage == "postgresql"
        else None
    )
    settings = home.settings.model_copy(
        update={
            "training": home.settings.training.model_copy(update={"seed": seed}),
            "optuna_storage_url": SecretStr(storage_url) if storage_url else None,
        }
    )
    before_versions, before_aliases = registry_state(home)
    the_study = study_name(home.contract.name, load_snapshot(home.snapshot_dir)[1], seed)
    # The kill comes once two trials are finished, most often in the third; should the third finish first, the worker
    # stalls there until killed: however fast the machine, the study cannot end between two looks at the storage.
    script = (
        "import threading; from churnops.config import Settings; from churnops.dataset import load_contract; "
        "from churnops.jobs.training import train; s = Settings(); "
        "stall = lambda done, total, value: done >= 3 and threading.Event().wait(); "
        f"train(s, load_contract({home.contract.name!r}, s), n_trials={total}, on_trial=stall)"
    )
    env = {**os.environ, "CHURNOPS_HOME": str(settings.home), "CHURNOPS_TRAINING__SEED": str(seed)}
    if storage_url:
        env["CHURNOPS_OPTUNA_STORAGE_URL"] = storage_url
    process = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, env=env)
    completed_before_kill = 0
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and process.poll() is None:
            time.sleep(1)
            with contextlib.suppress(KeyError):
                study = optuna.load_study(study_name=the_study, storage=settings.optuna_storage)
                completed_before_kill = sum(t.state.is_finished() for t in study.trials)
                if completed_before_kill >= 2:
                    break
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert 2 <= completed_before_kill <= 3, "the worker was not killed mid-study"

    assert registry_state(home) == (before_versions, before_aliases), "a killed training must not touch the registry"
    interrupted = optuna.load_study(study_name=the_study, storage=settings.optuna_storage)
    parent_run = interrupted.user_attrs[PARENT_RUN_ATTR]
    # Study.trials reads the storage on access: keep what the killed run finished before resuming.
    finished_by_killed_run = [t.params for t in interrupted.trials if t.state.is_finished()]

    result = train(settings, home.contract, n_trials=total)

    resumed = optuna.load_study(study_name=the_study, storage=settings.optuna_storage)
    finished = [t for t in resumed.trials if t.state.is_finished()]
    assert len(finished) >= total > completed_before_kill
    assert [t.params for t in finished[: len(finished_by_killed_run)]] == finished_by_killed_run
    assert result.run_id == parent_run
    versions, aliases = registry_state(home)
    assert len(versions) == len(before_versions) + 1
    assert aliases["challenger"] == result.model_version
    assert aliases["champion"] == (result.model_version if result.decision.promoted else champion.model_version)


def test_a_champion_whose_artifact_cannot_be_loaded_fails_the_training_without_moving_champion(
    tmp_path, trained_platform
) -> None:
    """Only a missing model or alias means "no champion": a champion whose booster file is gone makes the gate
    refuse, the refusal is recorded (challenger alias, version tags, PostgreSQL row), and then the training fails."""
    from urllib.parse import urlparse

    import mlflow
    from mlflow import MlflowClient

    from churnops.jobs.training import train
    from churnops.jobs.training.job import ChampionUnavailableError

    home = fresh_home(tmp_path, trained_platform)
    first = train(home.settings, home.contract)
    assert first.decision.promoted
    name = home.contract.model_name
    source = MlflowClient().get_model_version(name, first.model_version).source
    artifacts = Path(urlparse(mlflow.get_logged_model(source.removeprefix("models:/")).artifact_location).path)
    (artifacts / "model.lgb").unlink()

    with throwaway_database() as url:
        # Another seed: a new search on the same rows is a new challenger (the same one would be skipped as trained).
        settings = home.settings.model_copy(
            update={
                "database_url": SecretStr(url),
                "training": home.settings.training.model_copy(update={"seed": SEED + 1}),
            }
        )
        with pytest.raises(ChampionUnavailableError, match="could not be loaded or scored"):
            train(settings, home.contract)
        with contextlib.closing(psycopg2.connect(url)) as conn, conn.cursor() as cur:
            cur.execute(
                "SELECT challenger_version, champion_version, promoted, rule, champion_error "
                "FROM churnops.promotion_decisions"
            )
            rows = cur.fetchall()

    versions, aliases = registry_state(home)
    refused = max(versions, key=int)
    assert refused != first.model_version
    assert aliases == {"champion": first.model_version, "challenger": refused}
    assert len(rows) == 1
    challenger, champion, promoted, rule, error = rows[0]
    assert (challenger, champion, promoted, rule) == (refused, first.model_version, False, "champion_unavailable")
    assert "loading failed" in error
    tags = MlflowClient().get_model_version(name, refused).tags
    assert (tags["promoted"], tags["promotion_rule"]) == ("false", "champion_unavailable")
