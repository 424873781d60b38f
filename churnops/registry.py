"""The MLflow side shared by training, scoring and serving: tracking set-up, aliases, and loading a registered
model as a native LightGBM booster plus the feature schema, threshold and score post-processing stored with it.

Loading the booster (not the pyfunc wrapper) keeps pandas off the serving hot path: rows are encoded straight
into a numpy matrix with `FeatureSchema`.

A registered model's score is `calibrate(blend(booster(x), bgnbd(x)))`, where the optional blend with the BG/NBD
purchase probability and the optional calibration map are chosen on the training time folds and stored in the
model metadata under `postprocess` (see `ScorePostprocess`). Everything is numpy on a handful of numbers, so it
costs microseconds per row. LightGBM's own explanations (`pred_contrib`) explain the booster's raw margin.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from churnops.config import Settings
from churnops.dataset import DatasetContract
from churnops.schema import FeatureSchema

CHAMPION_ALIAS = "champion"
CHALLENGER_ALIAS = "challenger"


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


POSTPROCESS_KEY = "postprocess"
# Snapshot columns BG/NBD reads (declared in churnops.features); BG/NBD time runs in weeks.
BGNBD_INPUT_COLUMNS = ("active_days_all", "days_since_first_event", "days_since_last_event")
BGNBD_DAYS_PER_PERIOD = 7.0


def bgnbd_purchase_probability(
    params: Mapping[str, float], frequency: np.ndarray, recency: np.ndarray, age: np.ndarray, horizon: float
) -> np.ndarray:
    """BG/NBD probability of at least one purchase in (T, T + horizon] given (x, t_x, T); all times in weeks.

    = P(alive at T) * (1 - E[exp(-lambda * horizon)]): a BG/NBD customer can only drop out right after a purchase,
    and given alive the purchase rate's posterior is Gamma(r + x, alpha + T). Lives here, not in jobs/baselines.py,
    because a served model blending with BG/NBD evaluates it per request.
    """
    r, alpha, a, b = params["r"], params["alpha"], params["a"], params["b"]
    x = frequency
    log_odds_dead = (
        np.log(a) - np.log(np.maximum(b + x - 1, 1e-300)) + (r + x) * (np.log(alpha + age) - np.log(alpha + recency))
    )
    alive = np.where(x > 0, 1.0 / (1.0 + np.exp(np.minimum(log_odds_dead, 700.0))), 1.0)
    no_purchase_if_alive = np.exp((r + x) * (np.log(alpha + age) - np.log(alpha + age + horizon)))
    return alive * (1.0 - no_purchase_if_alive)


def bgnbd_inputs_from_days(
    active_days: np.ndarray, days_since_first: np.ndarray, days_since_last: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x, t_x, T) in weeks from the RFM features: purchase days count as transactions (x = active days - 1)."""
    return (
        np.maximum(active_days - 1.0, 0.0),
        (days_since_first - days_since_last) / BGNBD_DAYS_PER_PERIOD,
        days_since_first / BGNBD_DAYS_PER_PERIOD,
    )


@dataclass(frozen=True)
class ScorePostprocess:
    """What a registered model does after the booster: blend with BG/NBD, then calibrate. Both optional.

    Stored as JSON in the model metadata: `{"blend": {"weight", "bgnbd": {r, alpha, a, b}, "horizon_days", "label"},
    "calibration": {"method": "platt", "slope", "intercept"} | {"method": "isotonic", "x", "y", "tie_break_weight"}}`.
    """

    blend_weight: float = 0.0
    bgnbd_params: dict[str, float] | None = None
    horizon_weeks: float = 0.0
    # For a churn label the blended BG/NBD score is P(no purchase), for propensity P(at least one purchase).
    bgnbd_scores_churn: bool = False
    bgnbd_column_indices: tuple[int, int, int] | None = None
    calibration: dict[str, Any] | None = None

    @classmethod
    def from_metadata(cls, raw: Mapping[str, Any] | None, columns: list[str]) -> ScorePostprocess | None:
        if not raw:
            return None
        blend = raw.get("blend") or {}
        indices = None
        if blend.get("weight", 0.0) > 0:
            missing = [c for c in BGNBD_INPUT_COLUMNS if c not in columns]
            if missing:
                raise ValueError(f"the model blends with BG/NBD but its schema lacks {missing}")
            indices = tuple(columns.index(c) for c in BGNBD_INPUT_COLUMNS)
        return cls(
            blend_weight=float(blend.get("weight", 0.0)),
            bgnbd_params=blend.get("bgnbd"),
            horizon_weeks=float(blend.get("horizon_days", 0.0)) / BGNBD_DAYS_PER_PERIOD,
            bgnbd_scores_churn=blend.get("label") == "churn",
            bgnbd_column_indices=indices,  # type: ignore[arg-type]
            calibration=raw.get("calibration"),
        )

    def bgnbd_scores(self, matrix: np.ndarray) -> np.ndarray:
        assert self.bgnbd_params is not None and self.bgnbd_column_indices is not None
        active, first, last = (matrix[:, i] for i in self.bgnbd_column_indices)
        with np.errstate(invalid="ignore", divide="ignore"):
            buys = bgnbd_purchase_probability(
                self.bgnbd_params, *bgnbd_inputs_from_days(active, first, last), self.horizon_weeks
            )
        return 1.0 - buys if self.bgnbd_scores_churn else buys

    def blend(self, raw: np.ndarray, matrix: np.ndarray) -> np.ndarray:
        if self.blend_weight <= 0:
            return raw
        bgnbd = self.bgnbd_scores(matrix)
        # A row without an event history (missing RFM) keeps the booster's score.
        return np.where(np.isfinite(bgnbd), (1 - self.blend_weight) * raw + self.blend_weight * bgnbd, raw)

    def apply(self, raw: np.ndarray, matrix: np.ndarray) -> np.ndarray:
        return apply_calibration(self.calibration, self.blend(raw, matrix))


def apply_calibration(calibration: Mapping[str, Any] | None, scores: np.ndarray) -> np.ndarray:
    """Map scores through a stored calibration: Platt (logistic on the logit) or isotonic (piecewise linear)."""
    if not calibration or calibration.get("method", "none") == "none":
        return scores
    if calibration["method"] == "platt":
        clipped = np.clip(scores, 1e-7, 1 - 1e-7)
        z = calibration["slope"] * np.log(clipped / (1 - clipped)) + calibration["intercept"]
        return 1.0 / (1.0 + np.exp(-z))
    if calibration["method"] == "isotonic":
        stepped = np.interp(scores, np.asarray(calibration["x"]), np.asarray(calibration["y"]))
        # Isotonic steps are flat (and flat beyond the fitted range), so on their own they tie every score inside a
        # step and change the ranking; mixing in a sliver of the raw score makes the map strictly increasing.
        weight = float(calibration.get("tie_break_weight", 0.0))
        return stepped if weight == 0 else (1.0 - weight) * stepped + weight * np.clip(scores, 0.0, 1.0)
    raise ValueError(f"unknown calibration method {calibration['method']!r}")


@dataclass(frozen=True)
class LoadedModel:
    """A registered model version, ready to score encoded rows."""

    name: str
    version: str
    booster: Any
    schema: FeatureSchema
    threshold: float
    metadata: dict[str, Any]
    loaded_at: float = field(default_factory=time.time)
    postprocess: ScorePostprocess | None = None

    def predict_matrix(self, matrix: np.ndarray, num_threads: int = 0) -> np.ndarray:
        """The model's score for encoded rows: the booster's probability, then the stored post-processing."""
        # num_threads=1 for single-row serving: LightGBM's thread pool costs more than it saves on one row.
        raw = self.booster.predict(matrix, num_threads=num_threads)
        return raw if self.postprocess is None else self.postprocess.apply(raw, matrix)


def resolve_alias(name: str, alias: str) -> str:
    from mlflow import MlflowClient

    return str(MlflowClient().get_model_version_by_alias(name, alias).version)


def load_model_version(name: str, version: str) -> LoadedModel:
    """Load a version's booster and the schema/threshold it was trained with; refuse a model that cannot predict
    its own stored input example."""
    import mlflow

    uri = f"models:/{name}/{version}"
    info = mlflow.models.get_model_info(uri)
    metadata = info.metadata or {}
    if "feature_schema" not in metadata:
        raise ValueError(
            f"model {name} v{version} has no feature schema in its metadata; it was not trained by churnops"
        )
    booster = mlflow.lightgbm.load_model(uri)
    # The booster's feature names are the order it was trained in: encode rows in exactly that order.
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
