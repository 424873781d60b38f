"""The MLflow side shared by training, scoring, serving and monitoring: tracking set-up, experiments, aliases, and
loading a registered model plus the feature schema, threshold and score post-processing (`churnops.postprocess`)
stored with it.

A registered model is one of exactly two kinds, both read as data, never unpickled: a native LightGBM booster
(text model file), or the logistic regression as JSON numbers (`churnops.linear_model`). Both answer the same
`predict` / `pred_contrib` / `feature_importance` calls, so no caller needs to know which family won. Loading
them (not the pyfunc wrapper) keeps pandas off the serving hot path: rows are encoded straight into a numpy
matrix with `FeatureSchema`. The explanations (`pred_contrib`) explain the model's raw margin (log-odds), before
post-processing.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from churnops.config import Settings
from churnops.dataset import DatasetContract
from churnops.linear_model import LINEAR_FLAVOR, LinearModel
from churnops.postprocess import ScorePostprocess
from churnops.schema import FeatureSchema

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

CHAMPION_ALIAS = "champion"
CHALLENGER_ALIAS = "challenger"
# Model metadata key holding the `ScorePostprocess` JSON.
POSTPROCESS_KEY = "postprocess"
# The MLflow error code of a registered model that does not exist (the same from a local store and over REST).
MODEL_DOES_NOT_EXIST = "RESOURCE_DOES_NOT_EXIST"
# The only LightGBM model class churnops loads: MLflow's lightgbm flavour stores it as LightGBM's text format, never
# a pickle (the other family, the linear model, is JSON: `churnops.linear_model`).
NATIVE_BOOSTER_CLASS = "lightgbm.basic.Booster"


def configure_mlflow(settings: Settings) -> None:
    import mlflow

    if settings.mlflow_tracking_uri is None:
        settings.mlflow_dir.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(settings.tracking_uri)
    # MLflow's client reads a server's basic-auth credentials from its environment on every request.
    os.environ.update(settings.mlflow_client_environment())


def experiment_name(contract: DatasetContract) -> str:
    return f"churnops-{contract.name}"


def ensure_experiment(settings: Settings, contract: DatasetContract) -> str:
    """The dataset's experiment id, creating it (artifacts under the working folder when tracking is local)."""
    import mlflow

    name = experiment_name(contract)
    existing = mlflow.get_experiment_by_name(name)
    if existing is not None:
        return existing.experiment_id
    location = settings.artifact_root if settings.mlflow_tracking_uri is None else None
    return mlflow.create_experiment(name, artifact_location=location)


def champion_or_none(name: str, client: MlflowClient | None = None) -> ModelVersion | None:
    """The model version the `champion` alias points at, or None when the model or that alias does not exist.

    Any other failure (tracking server unreachable, permission denied, a corrupt store) is raised: "cannot tell"
    must never read as "no champion". MLflow reports a missing *alias* as INVALID_PARAMETER_VALUE, a code it also
    uses for malformed requests, so the alias is looked up in the registered model's alias map instead of by
    catching that error; only a missing *model* is recognised by its error code.
    """
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = client or MlflowClient()
    try:
        model = client.get_registered_model(name)
    except MlflowException as error:
        if error.error_code == MODEL_DOES_NOT_EXIST:
            return None
        raise
    version = model.aliases.get(CHAMPION_ALIAS)
    return None if version is None else client.get_model_version(name, str(version))


@dataclass(frozen=True)
class LoadedModel:
    """A registered model version, ready to score encoded rows."""

    name: str
    version: str
    # A LightGBM Booster or a `LinearModel`: the same predict / pred_contrib / feature_importance interface.
    booster: Any
    schema: FeatureSchema
    threshold: float
    metadata: dict[str, Any]
    loaded_at: float = field(default_factory=time.time)
    postprocess: ScorePostprocess | None = None

    @property
    def family(self) -> str:
        """`lightgbm` or `logistic_regression`: which model family won the training's selection."""
        return "logistic_regression" if isinstance(self.booster, LinearModel) else "lightgbm"

    def predict_matrix(self, matrix: np.ndarray, num_threads: int = 0) -> np.ndarray:
        """The model's score for encoded rows: the model's probability, then the stored post-processing."""
        # num_threads=1 for single-row serving: LightGBM's thread pool costs more than it saves on one row.
        raw = self.booster.predict(matrix, num_threads=num_threads)
        return raw if self.postprocess is None else self.postprocess.apply(raw, matrix)


def resolve_alias(name: str, alias: str) -> str:
    from mlflow import MlflowClient

    return str(MlflowClient().get_model_version_by_alias(name, alias).version)


def _file_inside(model_dir: Path, flavor: dict[str, Any], suffix: str) -> Path | None:
    """The flavour's `data` file when it has the expected suffix and lies inside the model folder, else None."""
    data = str(flavor.get("data", ""))
    data_path = (model_dir / data).resolve()
    return data_path if data.endswith(suffix) and model_dir.resolve() in data_path.parents else None


def _registered_model(model_dir: Path, flavors: dict[str, Any], label: str) -> Any:
    """The version's model, read as data: a LightGBM Booster from its text model file, or a `LinearModel` from its
    JSON file. Anything else is refused, from the MLmodel file, before a byte of it is deserialised: MLflow's own
    loaders unpickle scikit-learn-style and pyfunc models, and whoever can register a version could have such a
    file executed in the API and the workers."""
    import lightgbm

    linear = flavors.get(LINEAR_FLAVOR)
    if linear is not None:
        json_path = _file_inside(model_dir, linear, ".json")
        if json_path is None:
            raise ValueError(
                f"model {label}: its {LINEAR_FLAVOR} flavour must name a .json file inside the model folder "
                f"(data {linear.get('data')!r}); churnops loads only that"
            )
        return LinearModel.load(json_path)
    flavor = flavors.get("lightgbm") or {}
    text_path = _file_inside(model_dir, flavor, ".lgb")
    if flavor.get("model_class") != NATIVE_BOOSTER_CLASS or text_path is None:
        raise ValueError(
            f"model {label} is not a native LightGBM Booster saved as text nor a churnops linear model (flavours: "
            f"{sorted(flavors)}, lightgbm model_class {flavor.get('model_class')!r}, data {flavor.get('data')!r}); "
            "churnops loads only those"
        )
    return lightgbm.Booster(model_file=str(text_path))


def load_model_files(name: str, version: str) -> tuple[Any, dict[str, Any]]:
    """A version's model read as data (see `_registered_model`) and its MLmodel metadata, for models other than
    the churn model (the value model: `churnops.jobs.value.registered`)."""
    import mlflow

    with tempfile.TemporaryDirectory(prefix="churnops-model-") as local:
        model_dir = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}/{version}", dst_path=local))
        info = mlflow.models.Model.load(model_dir / "MLmodel")
        return _registered_model(model_dir, info.flavors, f"{name} v{version}"), dict(info.metadata or {})


def load_model_version(name: str, version: str) -> LoadedModel:
    """Load a version's model and the schema/threshold it was trained with; refuse a model that cannot score a row
    of missing values."""
    import mlflow

    uri = f"models:/{name}/{version}"
    with tempfile.TemporaryDirectory(prefix="churnops-model-") as local:
        model_dir = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=local))
        info = mlflow.models.Model.load(model_dir / "MLmodel")
        metadata = info.metadata or {}
        if "feature_schema" not in metadata:
            raise ValueError(
                f"model {name} v{version} has no feature schema in its metadata; it was not trained by churnops"
            )
        booster = _registered_model(model_dir, info.flavors, f"{name} v{version}")
    # The model's feature names are the order it was trained in: encode rows in exactly that order.
    schema = FeatureSchema.from_dict(metadata["feature_schema"]).in_column_order(booster.feature_name())
    model = LoadedModel(
        name=name,
        version=version,
        booster=booster,
        schema=schema,
        threshold=float(metadata["threshold"]),
        metadata=metadata,
        postprocess=ScorePostprocess.from_metadata(metadata.get(POSTPROCESS_KEY), schema.columns),
    )
    probe = np.full((1, len(schema.columns)), np.nan)
    scores = model.predict_matrix(probe, num_threads=1)
    if scores.shape != (1,) or not np.isfinite(scores).all():
        raise ValueError(f"model {name} v{version} does not produce a finite score for one row")
    return model


def load_alias(name: str, alias: str = CHAMPION_ALIAS) -> LoadedModel:
    """The version an alias points at, loaded (see `load_model_version`)."""
    return load_model_version(name, resolve_alias(name, alias))
