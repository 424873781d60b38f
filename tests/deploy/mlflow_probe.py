"""What a client of the platform's MLflow server may do, tried as a platform process would: `Settings()` from its
environment and secrets folder, `churnops.registry.configure_mlflow`, then MLflow's client.

    python -m tests.deploy.mlflow_probe promote MODEL     # train a tiny booster, register it, make it champion
    python -m tests.deploy.mlflow_probe try MODEL         # try each registry action; print what the server said
    python -m tests.deploy.mlflow_probe promote-and-try MODEL

Prints one JSON object: action -> "ok" or the HTTP status the server refused it with. Runs in its own process so
that MLflow's process-wide tracking URI and credentials never leak into the test session.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable
from typing import Any

from churnops.config import Settings
from churnops.registry import CHAMPION_ALIAS, configure_mlflow


def _train_and_log(model_name: str) -> Any:
    import lightgbm
    import mlflow
    import numpy as np

    rows = np.random.default_rng(7).random((200, 3))
    labels = (rows[:, 0] > 0.5).astype(int)
    booster = lightgbm.train(
        {"objective": "binary", "verbose": -1, "num_threads": 1}, lightgbm.Dataset(rows, labels), num_boost_round=3
    )
    mlflow.set_experiment(f"probe-{model_name}")
    with mlflow.start_run():
        return mlflow.lightgbm.log_model(booster, name="model", registered_model_name=model_name)


def promote(model_name: str) -> dict[str, str]:
    from mlflow import MlflowClient

    logged = _train_and_log(model_name)
    MlflowClient().set_registered_model_alias(model_name, CHAMPION_ALIAS, logged.registered_model_version)
    return {"promote": "ok", "version": str(logged.registered_model_version)}


def _outcome(action: Callable[[], object]) -> str:
    from mlflow.exceptions import MlflowException, RestException

    try:
        action()
    except (RestException, MlflowException) as error:
        status = re.search(r"error code (\d{3})", str(error))
        return status.group(1) if status else f"{type(error).__name__}: {str(error)[:200]}"
    return "ok"


def try_everything(model_name: str) -> dict[str, str]:
    import mlflow
    from mlflow import MlflowClient

    client = MlflowClient()

    def load_champion() -> None:
        version = client.get_model_version_by_alias(model_name, CHAMPION_ALIAS).version
        mlflow.lightgbm.load_model(f"models:/{model_name}/{version}")

    def register_a_version_of_the_first() -> None:
        source = client.get_model_version(model_name, "1").source  # models:/<logged model id>
        client.create_model_version(model_name, source, model_id=source.removeprefix("models:/"))

    return {
        "read champion": _outcome(load_champion),
        "move champion": _outcome(lambda: client.set_registered_model_alias(model_name, CHAMPION_ALIAS, "1")),
        "delete champion": _outcome(lambda: client.delete_registered_model_alias(model_name, CHAMPION_ALIAS)),
        "register a version": _outcome(register_a_version_of_the_first),
        "register a model": _outcome(lambda: client.create_registered_model(f"{model_name}-stranger")),
    }


def main(argv: list[str]) -> int:
    action, model_name = argv[1], argv[2]
    configure_mlflow(Settings())
    result = promote(model_name) if action.startswith("promote") else {}
    if action.endswith("try"):
        result.update(try_everything(model_name))
    print(json.dumps(result))  # noqa: T201
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
