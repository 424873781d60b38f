"""Only two kinds of model are ever loaded from the registry, both read as data: a native LightGBM Booster (text)
and churnops' linear model (JSON). A version saved in a pickled form, or a flavour naming a file outside its model
folder, is refused from its MLmodel file, before any of its bytes are deserialised (whoever can register a version
must not be able to run code in the API or the workers)."""

from __future__ import annotations

import json
from pathlib import Path

import lightgbm
import mlflow
import numpy as np
import pytest

from churnops.jobs.training.candidates import fit_linear
from churnops.jobs.training.data import EncodedView
from churnops.jobs.training.registration import log_linear_model
from churnops.linear_model import LINEAR_FLAVOR
from churnops.registry import load_model_version
from churnops.schema import FeatureSchema

FEATURES = ["recency_days", "spend_90d"]


class _ExplodesWhenUnpickled(lightgbm.LGBMClassifier):
    """A scikit-learn-style LightGBM model whose unpickling writes a marker file: the proof that it ran."""

    def __reduce__(self):  # noqa: ANN204 - pickle protocol
        marker = self.__dict__.get("marker")  # unset while fitting (LightGBM copies the estimator for its params)
        return super().__reduce__() if marker is None else (Path.write_text, (marker, "unpickled"))


@pytest.fixture
def tracking(tmp_path: Path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    previous = mlflow.get_tracking_uri()
    # The registry follows the tracking URI (as churnops.registry.configure_mlflow leaves it): setting a registry URI
    # here would outlive the test and point every later test's registry at this folder.
    mlflow.set_tracking_uri(uri)
    experiment = mlflow.create_experiment("loading", artifact_location=(tmp_path / "artifacts").as_uri())
    mlflow.set_experiment(experiment_id=experiment)
    yield tmp_path
    mlflow.set_tracking_uri(previous)


def _training_rows() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    matrix = rng.normal(size=(200, len(FEATURES)))
    return matrix, (matrix[:, 0] + rng.normal(size=200) > 0).astype(int)


def _metadata() -> dict:
    schema = FeatureSchema(numeric=tuple(FEATURES), categorical={})
    return {"feature_schema": json.loads(json.dumps(schema.to_dict())), "threshold": 0.5}


def _register(model, name: str, **saving) -> str:
    with mlflow.start_run():
        info = mlflow.lightgbm.log_model(
            model, name="model", registered_model_name=name, metadata=_metadata(), **saving
        )
    return str(info.registered_model_version)


def test_a_native_booster_is_loaded_and_scores(tracking: Path) -> None:
    matrix, labels = _training_rows()
    booster = lightgbm.train(
        {"objective": "binary", "verbose": -1}, lightgbm.Dataset(matrix, labels, feature_name=FEATURES), 5
    )
    loaded = load_model_version("native", _register(booster, "native"))
    assert loaded.predict_matrix(matrix[:3]).shape == (3,)


def test_a_pickled_model_is_refused_before_it_is_unpickled(tracking: Path) -> None:
    matrix, labels = _training_rows()
    model = _ExplodesWhenUnpickled(n_estimators=5, verbose=-1).fit(matrix, labels)
    model.marker = tracking / "unpickled.txt"
    version = _register(model, "pickled", serialization_format="cloudpickle")
    assert not model.marker.exists()  # logging pickles it; only loading would unpickle it

    with pytest.raises(ValueError, match=r"not a native LightGBM Booster.*_ExplodesWhenUnpickled"):
        load_model_version("pickled", version)
    assert not model.marker.exists()


def test_a_linear_model_is_loaded_from_its_json_and_scores_as_it_was_fitted(tracking: Path) -> None:
    matrix, labels = _training_rows()
    view = EncodedView(FeatureSchema(numeric=tuple(FEATURES), categorical={}), matrix, matrix)
    fitted = fit_linear(view, labels, np.ones(len(labels), dtype=bool))
    with mlflow.start_run():
        info = log_linear_model(fitted, registered_model_name="linear", metadata=_metadata())

    loaded = load_model_version("linear", str(info.registered_model_version))
    assert loaded.family == "logistic_regression"
    assert np.array_equal(loaded.predict_matrix(matrix), fitted.predict(matrix))
    assert np.array_equal(loaded.booster.predict(matrix, pred_contrib=True), fitted.predict(matrix, pred_contrib=True))


def test_a_linear_flavour_naming_a_file_outside_its_model_folder_is_refused(tracking: Path) -> None:
    from types import SimpleNamespace

    from mlflow.models import Model

    outside = tracking / "elsewhere.json"
    outside.write_text("{}")

    def save_model(path: str, mlflow_model: Model) -> None:
        Path(path).mkdir(parents=True, exist_ok=True)
        mlflow_model.add_flavor(LINEAR_FLAVOR, data=str(Path("..") / ".." / outside.name))
        mlflow_model.save(str(Path(path) / "MLmodel"))

    with mlflow.start_run():
        info = Model.log(
            artifact_path=None,
            name="model",
            flavor=SimpleNamespace(__name__=LINEAR_FLAVOR, save_model=save_model),
            registered_model_name="escaping",
            metadata=_metadata(),
        )
    with pytest.raises(ValueError, match=r"must name a \.json file inside the model folder"):
        load_model_version("escaping", str(info.registered_model_version))
