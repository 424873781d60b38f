"""The logistic-regression family: fitted with scikit-learn on the encoded matrix, cross-validated on the same
splits as LightGBM, and turned into the registrable `churnops.linear_model.LinearModel` (plain JSON numbers).

Fitting on the matrix `FeatureSchema` encodes (categorical codes decoded back to their levels) means the registered
model reads exactly what LightGBM reads, in serving as in batch scoring (docs/model-selection.md).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pandas as pd

from churnops.jobs.training.data import EncodedView, TrainingData
from churnops.linear_model import MISSING_LEVEL, LinearModel, signed_log1p


def logistic_pipeline(numeric: list[str], categorical: list[str]) -> Any:
    """Median imputation with missing-indicators, log scaling, standardisation, one-hot; balanced class weights."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler

    numeric_steps = Pipeline(
        [
            ("impute", SimpleImputer(strategy="median", add_indicator=True, keep_empty_features=True)),
            ("log", FunctionTransformer(signed_log1p)),
            ("scale", StandardScaler()),
        ]
    )
    parts = [("numeric", numeric_steps, numeric)] if numeric else []
    if categorical:
        parts.append(("categorical", OneHotEncoder(handle_unknown="ignore"), categorical))
    model = LogisticRegression(C=1.0, class_weight="balanced", max_iter=2000)
    return Pipeline([("encode", ColumnTransformer(parts)), ("model", model)])


def decoded_frame(view: EncodedView, matrix: np.ndarray) -> pd.DataFrame:
    """The encoded rows as the pipeline reads them: numerics as float, each categorical code as its level
    (missing or unseen: `<missing>`)."""
    schema = view.schema
    frame = pd.DataFrame(matrix[:, : len(schema.numeric)], columns=list(schema.numeric))
    for j, (name, vocab) in enumerate(schema.categorical.items(), start=len(schema.numeric)):
        levels = np.array([*vocab, MISSING_LEVEL], dtype=object)
        codes = matrix[:, j]
        frame[name] = levels[np.where(np.isnan(codes), len(vocab), np.nan_to_num(codes)).astype(np.intp)]
    return frame


def fit_pipeline(view: EncodedView, y: np.ndarray, mask: np.ndarray) -> Any:
    """The scikit-learn pipeline fitted on the masked training rows (one BLAS thread, like LightGBM's one)."""
    from threadpoolctl import threadpool_limits

    schema = view.schema
    with threadpool_limits(limits=1):
        return logistic_pipeline(list(schema.numeric), list(schema.categorical)).fit(
            decoded_frame(view, view.x_train[mask]), y[mask]
        )


def linear_model_from_pipeline(pipeline: Any, view: EncodedView, x_fit: np.ndarray) -> LinearModel:
    """The fitted pipeline's numbers as a `LinearModel`; `x_fit` (the rows it was fitted on) centres the
    categorical terms and measures each feature's importance."""
    schema = view.schema
    encode, coefficients = pipeline["encode"], pipeline["model"].coef_[0]
    numeric, vocabularies = list(schema.numeric), {k: list(v) for k, v in schema.categorical.items()}
    medians: list[float] = []
    indicators: list[int] = []
    scale_mean: list[float] = []
    scale_std: list[float] = []
    width = 0
    if numeric:
        steps = encode.named_transformers_["numeric"]
        medians = [float(v) for v in steps["impute"].statistics_]
        indicators = [int(i) for i in steps["impute"].indicator_.features_] if steps["impute"].indicator_ else []
        scale_mean = [float(v) for v in steps["scale"].mean_]
        scale_std = [float(v) for v in steps["scale"].scale_]
        width = len(numeric) + len(indicators)
    levels: dict[str, dict[str, float]] = {}
    if vocabularies:
        for name, categories in zip(vocabularies, encode.named_transformers_["categorical"].categories_, strict=True):
            levels[name] = {str(c): float(w) for c, w in zip(categories, coefficients[width:], strict=False)}
            width += len(categories)
    model = LinearModel(
        feature_names=schema.columns,
        numeric=numeric,
        vocabularies=vocabularies,
        medians=medians,
        indicator_columns=indicators,
        scale_mean=scale_mean,
        scale_std=scale_std,
        numeric_coefficients=[float(w) for w in coefficients[: len(numeric) + len(indicators)]],
        level_coefficients=levels,
        categorical_mean_terms=dict.fromkeys(vocabularies, 0.0),
        intercept=float(pipeline["model"].intercept_[0]),
        importance=[0.0] * len(schema.columns),
    )
    terms = model.contributions(x_fit)[:, :-1]
    centred = {name: float(terms[:, j].mean()) for j, name in enumerate(vocabularies, start=len(numeric))}
    terms[:, len(numeric) :] -= np.array(list(centred.values()))
    importance = [float(v) for v in np.abs(terms).mean(axis=0)]
    return dataclasses.replace(model, categorical_mean_terms=centred, importance=importance)


def fit_linear(view: EncodedView, y: np.ndarray, mask: np.ndarray) -> LinearModel:
    """A logistic regression fitted on the masked training rows of one encoded view."""
    return linear_model_from_pipeline(fit_pipeline(view, y, mask), view, view.x_train[mask])


def linear_cv_roc_auc(data: TrainingData, view: EncodedView) -> float:
    """Mean ROC AUC over the same cross-validation splits LightGBM's trials are scored on."""
    from sklearn.metrics import roc_auc_score

    aucs = []
    for split in data.splits:
        model = fit_linear(view, data.y_train, split.fit)
        aucs.append(float(roc_auc_score(data.y_train[split.valid], model.predict(view.x_train[split.valid]))))
    return float(np.mean(aucs))
