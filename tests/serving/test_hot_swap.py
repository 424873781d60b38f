"""Hot swap under load: promoting a new champion mid-run fails no request and switches within the polling interval;
a champion whose artifact is corrupted is refused while the old model keeps serving."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from churnops.registry import CHAMPION_ALIAS, configure_mlflow, ensure_experiment, load_model_version
from tests.serving.conftest import metric_value, start_server

POLL_SECONDS = 1.0
# Loading a version (registry look-up, artifact read, probe) comes on top of the polling interval.
LOAD_ALLOWANCE_SECONDS = 4.0
REQUESTS_PER_SECOND = 40


def register_copy(settings, contract, version: str, **metadata_changes: Any) -> str:
    """Register the booster of `version` again as a new version with changed metadata (e.g. a new threshold)."""
    import mlflow

    configure_mlflow(settings)
    source = load_model_version(contract.model_name, version)
    with mlflow.start_run(experiment_id=ensure_experiment(settings, contract), run_name="serving-test-copy"):
        info = mlflow.lightgbm.log_model(
            source.booster,
            name="model",
            registered_model_name=contract.model_name,
            metadata={**source.metadata, **metadata_changes},
        )
    return str(info.registered_model_version)


def move_champion(contract, version: str) -> None:
    from mlflow import MlflowClient

    MlflowClient().set_registered_model_alias(contract.model_name, CHAMPION_ALIAS, version)


@dataclass
class Load:
    """Constant-rate /predict requests from a thread over one keep-alive connection; records every outcome."""

    base_url: str
    body: dict[str, Any]
    outcomes: list[tuple[float, int, str | None, dict[str, Any] | None]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        interval = 1.0 / REQUESTS_PER_SECOND
        with httpx.Client(base_url=self.base_url, timeout=10) as client:
            next_at = time.monotonic()
            while not self._stop.is_set():
                try:
                    response = client.post("/predict", json=self.body)
                    body = response.json() if response.status_code == 200 else None
                    self.outcomes.append((time.monotonic(), response.status_code, body and body["model_version"], body))
                    if response.status_code != 200:
                        self.failures.append(f"{response.status_code}: {response.text[:200]}")
                except httpx.HTTPError as error:
                    self.failures.append(f"{type(error).__name__}: {error}")
                next_at += interval
                time.sleep(max(0.0, next_at - time.monotonic()))

    def stop(self) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(15)

    def first_time_serving(self, version: str) -> float | None:
        return next((t for t, _, v, _ in self.outcomes if v == version), None)


@pytest.fixture
def restore_champion(trained_platform):
    """Put the session's champion back afterwards: other test modules rely on it."""
    yield
    configure_mlflow(trained_platform.settings)
    move_champion(trained_platform.contract, trained_platform.model_version)


@pytest.mark.slow
def test_promotion_under_load_fails_no_request_and_switches_within_the_polling_interval(
    trained_platform, example_request, tmp_path, restore_champion
) -> None:
    settings, contract = trained_platform.settings, trained_platform.contract
    old = trained_platform.model_version
    new = register_copy(settings, contract, old, threshold=0.0123, risk_band_cutoffs={"high": 0.6, "medium": 0.0})
    server = start_server(settings, tmp_path, env={"CHURNOPS_SERVING__RELOAD_INTERVAL_SECONDS": str(POLL_SECONDS)})
    load = Load(server.base_url, example_request)
    try:
        load.start()
        time.sleep(2.0)
        promoted_at = time.monotonic()
        move_champion(contract, new)
        deadline = promoted_at + POLL_SECONDS + LOAD_ALLOWANCE_SECONDS + 5
        while load.first_time_serving(new) is None and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.0)
        load.stop()
        model_card = httpx.get(f"{server.base_url}/model").json()
    finally:
        server.stop()

    assert load.failures == [], load.failures[:5]
    versions = [v for _, _, v, _ in load.outcomes]
    switched_at = load.first_time_serving(new)
    assert switched_at is not None, f"still serving v{old} {deadline - promoted_at:.0f} s after the promotion"
    delay = switched_at - promoted_at
    assert delay <= POLL_SECONDS + LOAD_ALLOWANCE_SECONDS, f"switched {delay:.2f} s after the alias moved"
    # One atomic switch: every response before it is the old model, every one after it the new.
    first_new = versions.index(new)
    assert set(versions[:first_new]) == {old} and set(versions[first_new:]) == {new}
    assert len(versions[:first_new]) > 10 and len(versions[first_new:]) > 10
    answer = load.outcomes[-1][3]
    assert answer["threshold"] == 0.0123 and answer["decision"] == (answer["probability"] >= 0.0123)
    assert answer["risk_band"] == ("high" if answer["probability"] >= 0.6 else "medium")
    assert model_card["risk_bands"]["source"] == "model_metadata"


@pytest.mark.slow
def test_a_corrupted_champion_is_refused_and_the_old_model_keeps_serving(
    trained_platform, example_request, tmp_path, restore_champion
) -> None:
    import mlflow

    settings, contract = trained_platform.settings, trained_platform.contract
    old = trained_platform.model_version
    broken = register_copy(settings, contract, old)
    artifacts = Path(mlflow.artifacts.download_artifacts(f"models:/{contract.model_name}/{broken}"))
    assert (artifacts / "model.lgb").is_file()
    (artifacts / "model.lgb").write_text("this is not a LightGBM model\n")

    server = start_server(settings, tmp_path, env={"CHURNOPS_SERVING__RELOAD_INTERVAL_SECONDS": str(POLL_SECONDS)})
    load = Load(server.base_url, example_request)
    try:
        before = metric_value(
            httpx.get(f"{server.base_url}/metrics").text, "churnops_model_reloads_total", {"outcome": "failed"}
        )
        load.start()
        time.sleep(1.0)
        move_champion(contract, broken)
        time.sleep(POLL_SECONDS * 3 + LOAD_ALLOWANCE_SECONDS)
        load.stop()
        ready = httpx.get(f"{server.base_url}/ready").json()
        model_card = httpx.get(f"{server.base_url}/model").json()
        exposition = httpx.get(f"{server.base_url}/metrics").text
    finally:
        server.stop()

    assert load.failures == [], load.failures[:5]
    assert {v for _, _, v, _ in load.outcomes} == {old}
    assert ready["ready"] is True and ready["model_version"] == old
    assert ready["last_reload_error"] and ":" not in ready["last_reload_error"], ready  # the kind, not the text
    assert model_card["reload"]["failed_version"] == broken
    assert metric_value(exposition, "churnops_model_reloads_total", {"outcome": "failed"}) > before
    assert metric_value(exposition, "churnops_model_reload_failing") == 1
