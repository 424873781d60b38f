"""The survival model in the registry, without pickle: the booster as LightGBM text and everything else as JSON.

A registered version's folder holds `MLmodel` (flavour `churnops_survival`), `hazard_booster.lgb` (the booster's
text model) and `survival_model.json` (feature schema, time-bin starts, advanced time-since columns, pooled log
rate, horizon). Loading reads those two files as data and refuses any other flavour, as the churn models do
(`churnops.registry`): whoever can register a version must not get code run in the scoring workers.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from churnops.jobs.survival.boosting import HazardBoostingModel
from churnops.jobs.survival.hazard import TimeBins
from churnops.schema import FeatureSchema

SURVIVAL_FLAVOR = "churnops_survival"
BOOSTER_FILE = "hazard_booster.lgb"
SPEC_FILE = "survival_model.json"
FORMAT_VERSION = 1


def model_spec(model: HazardBoostingModel) -> dict[str, Any]:
    """What turns the booster's raw scores into curves, as plain JSON."""
    return {
        "format_version": FORMAT_VERSION,
        "feature_schema": model.schema.to_dict(),
        "bin_starts": list(model.bins.starts),
        "shifted": list(model.shifted),
        "horizon_days": model.horizon_days,
        "base_log_rate": model.base_log_rate,
        "params": {k: v for k, v in model.params.items() if isinstance(v, int | float | str | bool)},
    }


def save_model_folder(model: HazardBoostingModel, folder: Path) -> None:
    """The booster text and the JSON spec in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    model.booster.save_model(str(folder / BOOSTER_FILE))
    (folder / SPEC_FILE).write_text(json.dumps(model_spec(model), indent=1, sort_keys=True))


def load_model_folder(folder: Path) -> HazardBoostingModel:
    """The model saved by `save_model_folder`; a missing file or format is refused by name."""
    import lightgbm

    spec_path, booster_path = folder / SPEC_FILE, folder / BOOSTER_FILE
    for path in (spec_path, booster_path):
        if not path.is_file():
            raise ValueError(f"survival model folder {folder} lacks {path.name}; it was not saved by churnops")
    spec = json.loads(spec_path.read_text())
    if spec.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{spec_path}: format_version {spec.get('format_version')!r}, expected {FORMAT_VERSION}")
    return HazardBoostingModel(
        booster=lightgbm.Booster(model_file=str(booster_path)),
        schema=FeatureSchema.from_dict(spec["feature_schema"]),
        bins=TimeBins(tuple(int(s) for s in spec["bin_starts"])),
        shifted=tuple(spec["shifted"]),
        horizon_days=float(spec["horizon_days"]),
        base_log_rate=float(spec["base_log_rate"]),
        params=dict(spec.get("params", {})),
    )


def _save_flavor(path: str, mlflow_model: Any, model: HazardBoostingModel) -> None:
    """The model folder MLflow's `Model.log` asks its flavour for."""
    folder = Path(path)
    save_model_folder(model, folder)
    mlflow_model.add_flavor(SURVIVAL_FLAVOR, booster=BOOSTER_FILE, spec=SPEC_FILE, format_version=FORMAT_VERSION)
    mlflow_model.save(str(folder / "MLmodel"))


def log_survival_model(model: HazardBoostingModel, *, registered_model_name: str, metadata: dict[str, Any]) -> str:
    """Log and register the model on the active MLflow run; return the new version."""
    from mlflow.models import Model

    flavor = SimpleNamespace(__name__=SURVIVAL_FLAVOR, save_model=_save_flavor)
    info = Model.log(
        artifact_path=None,
        name="survival_model",
        flavor=flavor,
        registered_model_name=registered_model_name,
        metadata=metadata,
        model=model,
    )
    return str(info.registered_model_version)


def load_survival_version(name: str, version: str) -> tuple[HazardBoostingModel, dict[str, Any]]:
    """A registered survival version and its metadata, read as data (LightGBM text + JSON)."""
    import mlflow

    with tempfile.TemporaryDirectory(prefix="churnops-survival-") as local:
        folder = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}/{version}", dst_path=local))
        info = mlflow.models.Model.load(folder / "MLmodel")
        if SURVIVAL_FLAVOR not in info.flavors:
            raise ValueError(
                f"model {name} v{version} has flavours {sorted(info.flavors)}, not {SURVIVAL_FLAVOR}; churnops "
                "loads only its own survival files"
            )
        return load_model_folder(folder), dict(info.metadata or {})
