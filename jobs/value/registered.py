"""The value model in the MLflow Model Registry: logged as LightGBM text with its settings as metadata (no
pickle), loaded back as a `ValueModel`, and aliased by the value gate.

The booster alone is not the model: a prediction is the BTYD value over the horizon times exp(booster), so the
metadata keeps what rebuilds the offset at any cutoff (the horizon, the Gamma-Gamma basis, which events are
purchases) and the BTYD models are refitted, without labels, on the history before the scored cutoff.
"""

from __future__ import annotations

from typing import Any

from churnops.jobs.value.model import ValueModel, ValueModelParams
from churnops.registry import CHALLENGER_ALIAS, CHAMPION_ALIAS, champion_or_none, load_model_files

VALUE_MODEL_KIND = "value_model"


def log_value_model(model: ValueModel, *, registered_model_name: str, metadata: dict[str, Any]) -> str:
    """Log the booster (LightGBM's text format) on the active run and register it; return the version."""
    import lightgbm
    import mlflow

    info = mlflow.lightgbm.log_model(
        model.booster,
        name="value_model",
        registered_model_name=registered_model_name,
        metadata={
            **metadata,
            "kind": VALUE_MODEL_KIND,
            "value_params": model.params.as_dict(),
            "feature_names": list(model.feature_names),
        },
        pip_requirements=[f"lightgbm=={lightgbm.__version__}"],
    )
    return str(info.registered_model_version)


def load_value_model(name: str, version: str) -> tuple[ValueModel, dict[str, Any]]:
    """A registered value model version and its metadata; refuses a version that is not a churnops value model."""
    booster, metadata = load_model_files(name, version)
    if metadata.get("kind") != VALUE_MODEL_KIND:
        raise ValueError(
            f"model {name} v{version} is not a churnops value model (metadata kind {metadata.get('kind')!r})"
        )
    params = ValueModelParams(**metadata["value_params"])
    return ValueModel(booster=booster, feature_names=tuple(metadata["feature_names"]), params=params), metadata


def value_champion(name: str) -> tuple[str, ValueModel, dict[str, Any]] | None:
    """(version, model, metadata) of the value model's champion, or None when there is none yet."""
    version = champion_or_none(name)
    if version is None:
        return None
    model, metadata = load_value_model(name, str(version.version))
    return str(version.version), model, metadata


def apply_value_decision(name: str, version: str, promoted: bool, reason: str) -> None:
    """Alias the new version `challenger`, and `champion` when the gate promoted it; tag the decision."""
    from mlflow import MlflowClient

    client = MlflowClient()
    client.set_registered_model_alias(name, CHALLENGER_ALIAS, version)
    if promoted:
        client.set_registered_model_alias(name, CHAMPION_ALIAS, version)
    client.set_model_version_tag(name, version, "promoted", str(promoted).lower())
    client.set_model_version_tag(name, version, "promotion_reason", reason)
