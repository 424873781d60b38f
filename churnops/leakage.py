"""Leakage probes on labelled rows: a single feature that separates the label almost perfectly is a finding (a
field written after the outcome, an ID that encodes it), named and refused unless the dataset owner allows it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from churnops.features import LABEL


@dataclass(frozen=True)
class LeakageFinding:
    feature: str
    probe: str
    value: float
    message: str
    allowed: bool = False


def single_feature_auc(values: Any, label: Any) -> float:
    """ROC AUC of one feature used alone as a score, in its better direction (0.5 = useless, 1 = perfect).

    Missing values form their own group ranked below every observed value, so "is missing" can leak too.
    """

    y = np.asarray(label, dtype=float)
    positives, negatives = int((y == 1).sum()), int((y == 0).sum())
    if positives == 0 or negatives == 0:
        return 0.5
    series = pd.Series(values)
    if not pd.api.types.is_numeric_dtype(series):
        # A categorical feature scores each category by its positive rate: the best any model could do with it.
        rates = pd.Series(y).groupby(series.astype("string").fillna("<missing>").to_numpy()).transform("mean")
        score = rates.to_numpy(dtype=float)
    else:
        score = series.to_numpy(dtype=float)
        score = np.where(np.isnan(score), np.nanmin(score) - 1 if np.isfinite(score).any() else 0.0, score)
    ranks = pd.Series(score).rank(method="average").to_numpy()
    auc = (ranks[y == 1].sum() - positives * (positives + 1) / 2) / (positives * negatives)
    return float(max(auc, 1.0 - auc))


def check_leakage(
    frame: Any,
    numeric: list[str],
    categorical: list[str],
    label: str = LABEL,
    threshold: float = 0.95,
    allowed: tuple[str, ...] = (),
) -> list[LeakageFinding]:
    """Probe a training set for leakage: any single feature that separates the labels almost perfectly.

    Returns one finding per suspicious feature (empty = clean); findings for features in `allowed` are kept but
    marked `allowed=True`, so the caller fails the run only on `[f for f in findings if not f.allowed]`. Rows
    without a label are ignored. Pass `contract.leakage.max_single_feature_auc` and
    `contract.leakage.allowed_features` to honour the dataset owner's decisions.
    """
    labelled = frame[frame[label].notna()]
    findings: list[LeakageFinding] = []
    for feature in [*numeric, *categorical]:
        auc = single_feature_auc(labelled[feature], labelled[label])
        if auc > threshold:
            findings.append(
                LeakageFinding(
                    feature=feature,
                    probe="single_feature_auc",
                    value=round(auc, 4),
                    message=(
                        f"feature {feature!r} alone separates the label with ROC AUC {auc:.3f} > {threshold}: it "
                        "probably uses information from at or after the cutoff. Fix its definition, or list it "
                        "under `leakage.allowed_features` in the dataset contract if it is genuinely known in time"
                    ),
                    allowed=feature in allowed,
                )
            )
    return findings


# ---------------------------------------------------------------------------------------------------------------
# Feature catalog (docs/feature-catalog.md), generated from the specs above
# ---------------------------------------------------------------------------------------------------------------
