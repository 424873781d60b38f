"""Drift between two samples of the model's inputs: PSI per feature, missing-share drift, score PSI, and the
importance-weighted share of drifted features — plain functions of frames, the champion's importances and the
thresholds. `churnops.monitoring.drift` chooses the samples and records the run."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from churnops.config import MonitoringSettings
from churnops.monitoring.psi import missing_share, psi
from churnops.monitoring.store import FeatureDrift
from churnops.registry import LoadedModel

SCORE_COLUMN = "churn_score"


@dataclass(frozen=True)
class DriftMeasurement:
    """What `measure_drift` found on one reference/current pair."""

    features: list[FeatureDrift]
    score_psi: float | None
    weighted_drifted_share: float
    important_drifted: list[str]


def _evidently_report(
    reference: pd.DataFrame, current: pd.DataFrame, numeric: list[str], categorical: list[str], report_path: Path
) -> None:
    """Evidently's HTML report of the two samples (distributions per column) — for people to look at; the PSI
    values the platform acts on are `churnops.monitoring.psi`'s, on reference-quantile bins."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    columns = [*numeric, *categorical]
    definition = DataDefinition(numerical_columns=numeric, categorical_columns=categorical)
    report = Report([DataDriftPreset(columns=columns, method="psi")], include_tests=True)
    # Evidently's argument order: current first, then reference.
    snapshot = report.run(
        Dataset.from_pandas(current[columns], data_definition=definition),
        Dataset.from_pandas(reference[columns], data_definition=definition),
    )
    report_path.parent.mkdir(parents=True, exist_ok=True)
    snapshot.save_html(str(report_path))


def platform_psi(
    reference: pd.DataFrame, current: pd.DataFrame, numeric: list[str], categorical: list[str]
) -> dict[str, float]:
    """PSI per column (`churnops.monitoring.psi`: reference-decile bins for continuous columns, per value otherwise)."""
    values = {column: psi(reference[column], current[column], numeric=True) for column in numeric}
    return values | {column: psi(reference[column], current[column], numeric=False) for column in categorical}


def _has_values(frame: pd.DataFrame, column: str) -> bool:
    return column in frame and frame[column].replace([np.inf, -np.inf], np.nan).notna().any()


def measure_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    numeric: list[str],
    categorical: list[str],
    importances: dict[str, float],
    monitoring: MonitoringSettings,
    report_path: Path | None = None,
    reference_scores: np.ndarray | None = None,
    current_scores: np.ndarray | None = None,
) -> DriftMeasurement:
    """Per-feature PSI and missing-share drift, score PSI and drifted shares of two frames (and the Evidently
    report when `report_path` is given).

    `importances` are shares of the champion's total gain; a feature counts for the weighted share (and for
    retraining) only with at least `monitoring.min_feature_importance`. A column absent from `current` is treated
    as entirely missing.
    """
    reference, current = reference.copy(), current.copy()
    for column in categorical:
        # Evidently wants one dtype per categorical column; the model sees categories as strings anyway.
        for frame in (reference, current):
            if column in frame:
                frame[column] = frame[column].astype("string").astype(object).where(frame[column].notna(), None)
    for column in [*numeric, *categorical]:
        if column not in current:
            current[column] = np.nan if column in numeric else None
    psi_numeric = [c for c in numeric if _has_values(reference, c) and _has_values(current, c)]
    psi_categorical = [c for c in categorical if _has_values(reference, c) and _has_values(current, c)]
    score_included = reference_scores is not None and current_scores is not None
    if score_included:
        reference[SCORE_COLUMN], current[SCORE_COLUMN] = reference_scores, current_scores
        psi_numeric.append(SCORE_COLUMN)
    psi_values = platform_psi(reference, current, psi_numeric, psi_categorical)
    if report_path is not None:
        _evidently_report(reference, current, psi_numeric, psi_categorical, report_path)

    features = []
    for column in [*numeric, *categorical]:
        value = psi_values.get(column)
        missing_ref, missing_cur = missing_share(reference[column]), missing_share(current[column])
        features.append(
            FeatureDrift(
                feature=column,
                psi=value,
                missing_share=missing_cur,
                missing_share_reference=missing_ref,
                importance=float(importances.get(column, 0.0)),
                threshold=monitoring.psi_drift,
                psi_drifted=value is not None and value >= monitoring.psi_drift,
                missing_drifted=abs(missing_cur - missing_ref) >= monitoring.missing_share_drift,
            )
        )
    total_importance = sum(f.importance for f in features)
    drifted_importance = sum(f.importance for f in features if f.drifted)
    important = [f.feature for f in features if f.drifted and f.importance >= monitoring.min_feature_importance]
    return DriftMeasurement(
        features=features,
        score_psi=psi_values.get(SCORE_COLUMN) if score_included else None,
        weighted_drifted_share=drifted_importance / total_importance if total_importance > 0 else 0.0,
        important_drifted=important,
    )


def gain_importances(model: LoadedModel) -> dict[str, float]:
    """The champion's gain importance per model input column, as shares of the total (sum 1); for a linear
    champion, its mean |logit term| on the training rows."""
    gains = np.asarray(model.booster.feature_importance(importance_type="gain"), dtype=np.float64)
    names = list(model.booster.feature_name())
    total = gains.sum()
    if total <= 0:
        return dict.fromkeys(names, 1.0 / len(names))
    return {name: float(gain / total) for name, gain in zip(names, gains, strict=True)}
