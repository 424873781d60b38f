"""Only a missing model or a missing `champion` alias means "no champion"; any other registry failure is raised.

Against a real MLflow store (SQLite in a temp folder) and a real refused connection: "cannot tell" must never
read as "no champion yet", which would let any model through the gate.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from churnops.registry import CHAMPION_ALIAS, champion_or_none


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tracking store for the module (creating one runs MLflow's migrations); each test names its own model."""
    return tmp_path_factory.mktemp("registry")


@pytest.fixture
def client(store: Path) -> MlflowClient:
    return MlflowClient(
        tracking_uri=f"sqlite:///{store / 'mlflow.db'}", registry_uri=f"sqlite:///{store / 'mlflow.db'}"
    )


def _version(client: MlflowClient, name: str, store: Path) -> str:
    source = store / "artifacts" / name
    source.mkdir(parents=True, exist_ok=True)
    return str(client.create_model_version(name, source=source.as_uri()).version)


def test_no_registered_model_means_no_champion(client: MlflowClient) -> None:
    assert champion_or_none("never-registered", client) is None


def test_a_model_without_the_champion_alias_has_no_champion(client: MlflowClient, store: Path) -> None:
    client.create_registered_model("challenger-only")
    version = _version(client, "challenger-only", store)
    client.set_registered_model_alias("challenger-only", "challenger", version)
    assert champion_or_none("challenger-only", client) is None


def test_the_champion_alias_resolves_to_its_version(client: MlflowClient, store: Path) -> None:
    client.create_registered_model("with-champion")
    _version(client, "with-champion", store)
    second = _version(client, "with-champion", store)
    client.set_registered_model_alias("with-champion", CHAMPION_ALIAS, second)
    champion = champion_or_none("with-champion", client)
    assert champion is not None and str(champion.version) == second


def test_an_unreachable_registry_is_an_error_not_a_missing_champion(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as probe:  # a port nothing listens on: the connection is refused
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    with pytest.raises(MlflowException) as raised:
        champion_or_none("churn", MlflowClient(tracking_uri=f"http://127.0.0.1:{port}"))
    assert raised.value.error_code != "RESOURCE_DOES_NOT_EXIST"
