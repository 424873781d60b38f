"""The logistic-regression candidate, cross-validated on the same splits as LightGBM and reported next to it.

Serving loads LightGBM boosters only, so this candidate is never registered; it answers "would a linear model do
as well?" in every training's report (docs/model-selection.md).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from churnops.jobs.training.data import TrainingData


def _signed_log1p(x: np.ndarray) -> np.ndarray:
    # Counts and amounts are heavy-tailed; a linear model needs them on a log scale.
    return np.sign(x) * np.log1p(np.abs(x))


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
            ("log", FunctionTransformer(_signed_log1p)),
            ("scale", StandardScaler()),
        ]
    )
    encode = ColumnTransformer(
        [("numeric", numeric_steps, numeric), ("categorical", OneHotEncoder(handle_unknown="ignore"), categorical)]
    )
    model = LogisticRegression(C=1.0, class_weight="balanced", max_iter=2000)
    return Pipeline([("encode", encode), ("model", model)])


def logistic_frame(frame: pd.DataFrame, numeric: list[str], categorical: list[str]) -> pd.DataFrame:
    """The columns the pipeline reads: numerics as float, categories as strings with an explicit missing level."""
    out = frame[numeric].astype("float64")
    for name in categorical:
        out[name] = frame[name].astype("object").where(frame[name].notna(), "<missing>").astype(str)
    return out


def logistic_candidate(data: TrainingData) -> dict[str, Any]:
    """Cross-validated ROC AUC on the same splits as LightGBM, then a refit on all training rows, scored on eval."""
    from sklearn.metrics import roc_auc_score
    from threadpoolctl import threadpool_limits

    numeric, categorical = data.numeric, data.categorical
    x_train = logistic_frame(data.train, numeric, categorical)
    fold_aucs = []
    # One BLAS thread, for the same reason as LightGBM's num_threads=1.
    with threadpool_limits(limits=1):
        for split in data.splits:
            model = logistic_pipeline(numeric, categorical).fit(x_train[split.fit], data.y_train[split.fit])
            valid_scores = model.predict_proba(x_train[split.valid])[:, 1]
            fold_aucs.append(float(roc_auc_score(data.y_train[split.valid], valid_scores)))
        model = logistic_pipeline(numeric, categorical).fit(x_train, data.y_train)
        scores = model.predict_proba(logistic_frame(data.eval, numeric, categorical))[:, 1]
    return {"cv_roc_auc": float(np.mean(fold_aucs)), "scores": scores}
