"""The served model: one immutable reference, swapped atomically when the `champion` alias moves.

Handlers read `ModelState.current` once per request, so a request is answered entirely by one model version even
while a reload happens beside it. A new version is loaded and checked (it scores and explains a probe row) before
the reference is rebound; a failed load leaves the old model serving, is counted in
`churnops_model_reloads_total{outcome="failed"}`, raises `churnops_model_reload_failing` and shows in `/ready` and
`/model`.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydantic import BaseModel

from churnops.banding import RiskBands
from churnops.config import ServingSettings, Settings
from churnops.input_ranges import InputRanges
from churnops.registry import CHAMPION_ALIAS, LoadedModel, configure_mlflow, load_model_version, resolve_alias
from churnops.schema import FeatureSchema
from churnops.serving import metrics
from churnops.serving.fast_body import FastBodyReader
from churnops.serving.problems import BodyLimit
from churnops.serving.records import (
    Contribution,
    Explanation,
    batch_body_bytes,
    batch_request_model,
    predict_request_model,
    record_model,
)
from churnops.serving.single_row import SingleRowPostprocess

log = logging.getLogger(__name__)


class SingleRowPredictor:
    """LightGBM's fast single-row C API (`LGBM_BoosterPredictForMatSingleRowFast`) for one-customer requests.

    `Booster.predict` re-parses its parameters and builds a predictor on every call, about half the cost of a
    single-row prediction with this model size; the fast API does that once. Same trees, same iterations, same
    probabilities (checked against `LoadedModel.predict_matrix` before a model serves). Not thread-safe: call it
    from the event loop thread only (batch requests and explanations use the regular path).
    """

    def __init__(self, booster: Any, n_features: int) -> None:
        import ctypes

        from lightgbm.basic import _LIB, _c_str, _safe_call

        self._ctypes, self._lib, self._safe_call = ctypes, _LIB, _safe_call
        self._handle = ctypes.c_void_p()
        # As Booster.predict: the best iteration when training recorded one, else every tree (-1).
        iterations = booster.best_iteration if booster.best_iteration > 0 else -1
        predict_normal, float64 = 0, 1  # C_API_PREDICT_NORMAL (probabilities), C_API_DTYPE_FLOAT64
        _safe_call(
            _LIB.LGBM_BoosterPredictForMatSingleRowFastInit(
                booster._handle,
                ctypes.c_int(predict_normal),
                ctypes.c_int(0),
                ctypes.c_int(iterations),
                ctypes.c_int(float64),
                ctypes.c_int32(n_features),
                _c_str("num_threads=1"),
                ctypes.byref(self._handle),
            )
        )
        self._booster = booster  # the fast config points into the booster: keep it alive
        self._out = np.empty(1, dtype=np.float64)
        self._out_pointer = self._out.ctypes.data_as(ctypes.POINTER(ctypes.c_double))
        self._out_length = ctypes.c_int64()
        self._out_length_ref = ctypes.byref(self._out_length)
        # The row is copied into this buffer, whose address is taken once: `row.ctypes.data_as` built a ctypes
        # object per call, a sizeable part of the call's cost.
        self._row = np.empty(n_features, dtype=np.float64)
        self._row_pointer = ctypes.c_void_p(self._row.ctypes.data)
        self._predict = _LIB.LGBM_BoosterPredictForMatSingleRowFast

    def __call__(self, row: np.ndarray) -> float:
        self._row[:] = row
        self._safe_call(self._predict(self._handle, self._row_pointer, self._out_length_ref, self._out_pointer))
        return float(self._out[0])

    def __del__(self) -> None:
        if getattr(self, "_handle", None) is not None and self._handle.value:
            self._lib.LGBM_FastConfigFree(self._handle)


def _checked_single_row_predictor(model: LoadedModel, n_features: int) -> SingleRowPredictor | None:
    """The fast single-row predictor if it reproduces `predict_matrix` exactly on probe rows, else None (the
    regular path then serves single rows too: slower, never wrong)."""
    if model.family != "lightgbm":
        return None  # a LightGBM C API; the linear model's numpy `predict` is the regular path
    # Probe rows: all missing, zeros, seeded noise.
    probes = np.vstack([np.full(n_features, np.nan), np.zeros(n_features)])
    probes = np.vstack([probes, np.random.default_rng(0).normal(0.0, 50.0, size=(8, n_features))])
    try:
        single_row = SingleRowPredictor(model.booster, n_features)
        fast = np.array([single_row(row) for row in probes])
        if model.postprocess is not None:
            fast = np.concatenate(
                [model.postprocess.apply(fast[i : i + 1], probes[i : i + 1]) for i in range(len(fast))]
            )
    except Exception as error:  # e.g. a LightGBM build without the fast C API
        log.warning("model v%s: no fast single-row path (%s: %s)", model.version, type(error).__name__, error)
        return None
    if not np.array_equal(fast, model.predict_matrix(probes, num_threads=1), equal_nan=True):
        log.warning("model v%s: fast single-row scores differ from predict_matrix; not using them", model.version)
        return None
    return single_row


def _checked_single_row_postprocess(model: LoadedModel, n_features: int) -> SingleRowPostprocess | None:
    """The scalar post-processing of one row if it reproduces the vectorised one on probe rows, else None."""
    if model.postprocess is None:
        return None
    rng = np.random.default_rng(0)
    # Customer-like RFM values (whole days, counts) and noise, plus missing and zero rows.
    probes = np.vstack(
        [
            np.full((1, n_features), np.nan),
            np.zeros((1, n_features)),
            rng.integers(0, 400, size=(200, n_features)).astype(np.float64),
            rng.normal(0.0, 50.0, size=(50, n_features)),
        ]
    )
    raw = rng.uniform(0.0, 1.0, size=len(probes))
    return SingleRowPostprocess.checked(model.postprocess, raw, probes)


def body_limit(schema: FeatureSchema, serving: ServingSettings) -> BodyLimit:
    """The configured body cap, or the one that lets `max_batch_rows` of the widest legal rows through."""
    if serving.max_body_bytes is not None:
        return BodyLimit(serving.max_body_bytes, "serving.max_body_bytes")
    rows = serving.max_batch_rows
    return BodyLimit(
        batch_body_bytes(schema, rows), f"serving.max_batch_rows = {rows:,} rows of this model's widest legal row"
    )


@dataclass(frozen=True)
class ServedModel:
    """A loaded model with everything a request needs, built once at load time (not per request)."""

    model: LoadedModel
    record_type: type[BaseModel]
    request_type: type[BaseModel]
    batch_type: type[BaseModel]
    # Reads the bodies that need no leniency column-wise, before the models above (serving/fast_body.py).
    fast_reader: FastBodyReader
    bands: RiskBands
    body_limit: BodyLimit
    # Numeric ranges seen in training; None for models registered before they were recorded.
    ranges: InputRanges | None
    # Metric children bound to this version: `.labels()` per request would cost a dict look-up and a lock.
    predictions_counter: Any = field(repr=False)
    score_histogram: Any = field(repr=False)
    single_row: SingleRowPredictor | None = field(default=None, repr=False)
    # The stored post-processing of one row in scalar maths (serving/single_row.py), when checked equal.
    single_row_postprocess: SingleRowPostprocess | None = field(default=None, repr=False)
    # The model's input columns in order (the prediction log's feature_names), built once.
    feature_names: tuple[str, ...] = ()

    @classmethod
    def build(cls, model: LoadedModel, serving: ServingSettings) -> ServedModel:
        max_batch_rows = serving.max_batch_rows
        record_type = record_model(model.schema)
        request_type = predict_request_model(model.schema, record_type)
        n_features = len(model.schema.columns)
        single_row = _checked_single_row_predictor(model, n_features)
        served = cls(
            model=model,
            record_type=record_type,
            request_type=request_type,
            batch_type=batch_request_model(request_type, max_batch_rows),
            fast_reader=FastBodyReader(model.schema, max_batch_rows),
            bands=RiskBands.for_model(model.metadata, model.threshold),
            body_limit=body_limit(model.schema, serving),
            ranges=InputRanges.from_metadata(model.metadata, model.schema.numeric),
            predictions_counter=metrics.PREDICTIONS.labels(model_version=model.version),
            score_histogram=metrics.PREDICTED_SCORE.labels(model_version=model.version),
            single_row=single_row,
            single_row_postprocess=_checked_single_row_postprocess(model, n_features),
            feature_names=tuple(model.schema.columns),
        )
        # Refuse a model that cannot explain before it serves a single request.
        probe = np.full((1, len(model.schema.columns)), np.nan)
        contributions = served.contributions(probe)
        if contributions.shape != (1, len(model.schema.columns) + 1):
            raise ValueError(f"model v{model.version} returns contributions of shape {contributions.shape}")
        return served

    @property
    def version(self) -> str:
        return self.model.version

    def score(self, matrix: np.ndarray) -> np.ndarray:
        """Probabilities for encoded rows (one OpenMP thread: a worker process per core instead)."""
        if len(matrix) == 1 and self.single_row is not None:
            # The booster's probability, then the blend/calibration stored with the model (as predict_matrix).
            raw = self.single_row(matrix[0])
            postprocess = self.model.postprocess
            if postprocess is None:
                scores = np.array([raw])
            elif self.single_row_postprocess is not None:
                scores = np.array([self.single_row_postprocess(raw, matrix[0])])
            else:
                scores = postprocess.apply(np.array([raw]), matrix)
        else:
            scores = self.model.predict_matrix(matrix, num_threads=1)
        metrics.BUFFER.inc(self.predictions_counter, len(scores))
        metrics.BUFFER.observe_many(self.score_histogram, scores)
        return scores

    def contributions(self, matrix: np.ndarray) -> np.ndarray:
        """SHAP values of the model's margin (log-odds before any stored blend or calibration), one column per
        feature plus the bias last: LightGBM's own TreeSHAP, or the linear model's centred terms."""
        return np.asarray(self.model.booster.predict(matrix, pred_contrib=True, num_threads=1))

    def explain(self, records: Sequence[Mapping[str, Any]], top: int) -> list[Explanation]:
        columns = self.model.schema.columns
        values = self.contributions(self.model.schema.encode_records(records))
        explanations = []
        for record, row in zip(records, values, strict=True):
            per_feature = row[:-1]
            order = np.argsort(-np.abs(per_feature), kind="stable")[:top]
            explanations.append(
                Explanation(
                    base_log_odds=float(row[-1]),
                    top_features=[
                        Contribution(feature=columns[i], value=record[columns[i]], contribution=float(per_feature[i]))
                        for i in order
                    ],
                )
            )
        return explanations


@dataclass
class ReloadStatus:
    last_attempt_at: float | None = None
    last_error: str | None = None
    last_error_at: float | None = None
    failed_version: str | None = None

    @property
    def last_error_kind(self) -> str | None:
        """The kind of the last failure (its exception's name) — what the API shows. The full message can name
        internal hosts and paths, and /ready and /model answer without credentials: it goes to the log only."""
        return None if self.last_error is None else self.last_error.split(":", 1)[0]

    def describe(self) -> dict[str, Any]:
        return {
            "last_attempt_at": self.last_attempt_at,
            "last_error": self.last_error_kind,
            "last_error_at": self.last_error_at,
            "failed_version": self.failed_version,
        }


class ModelState:
    """The champion served by this worker process, followed by polling and on admin request."""

    def __init__(self, settings: Settings, model_name: str) -> None:
        self.settings = settings
        self.model_name = model_name
        self.current: ServedModel | None = None
        self.status = ReloadStatus()
        self._lock = threading.Lock()

    @property
    def last_error(self) -> str | None:
        return self.status.last_error

    def refresh(self) -> bool:
        """Load the champion if it differs from the served version. Returns True when a new version is served."""
        with self._lock:  # one load at a time; readers never wait on this lock
            self.status.last_attempt_at = time.time()
            version = None
            try:
                configure_mlflow(self.settings)
                version = resolve_alias(self.model_name, CHAMPION_ALIAS)
                if self.current is not None and self.current.version == version:
                    self._mark_healthy()
                    return False
                loaded = ServedModel.build(load_model_version(self.model_name, version), self.settings.serving)
            except Exception as error:  # registry unreachable, alias missing, corrupted artifact...
                self.status.last_error = f"{type(error).__name__}: {error}"
                self.status.last_error_at = time.time()
                self.status.failed_version = version
                metrics.MODEL_RELOADS.labels(outcome="failed").inc()
                metrics.MODEL_RELOAD_FAILING.set(1)
                served = self.current.version if self.current else "nothing"
                log.warning(
                    "cannot load %s@%s (v%s), still serving %s: %s",
                    self.model_name,
                    CHAMPION_ALIAS,
                    version,
                    served,
                    self.status.last_error,
                )
                return False
            previous = self.current
            self.current = loaded  # the atomic switch: one reference rebound
            self._mark_healthy()
            metrics.MODEL_RELOADS.labels(outcome="loaded").inc()
            if previous is not None:
                metrics.MODEL_INFO.labels(model_name=self.model_name, model_version=previous.version).set(0)
            metrics.MODEL_INFO.labels(model_name=self.model_name, model_version=version).set(1)
            metrics.MODEL_LOADED_AT.set(time.time())
            log.info("serving %s v%s (was %s)", self.model_name, version, previous.version if previous else "none")
            return True

    def _mark_healthy(self) -> None:
        self.status.last_error = None
        self.status.failed_version = None
        metrics.MODEL_RELOAD_FAILING.set(0)

    async def poll(self) -> None:
        """Follow the alias forever (cancelled at shutdown); every worker polls, so every worker switches."""
        interval = self.settings.serving.reload_interval_seconds
        while True:
            await asyncio.sleep(interval)
            try:
                await asyncio.to_thread(self.refresh)
            except Exception:  # refresh reports its own failures; never let the poller die
                log.exception("champion poll failed")
