"""Risk banding of a scored population: decision at the model threshold, risk deciles and named risk bands.

Pure functions on numpy arrays, shared by the batch scoring job, the 1M-customer benchmark and anything that
needs the same banding. Deciles and bands are *relative*: they rank the customers of one scoring list against
each other (decile 1 = the 10 % most at risk), which is what a campaign with a fixed budget targets. The
decision is *absolute*: score at or above the threshold stored with the model.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

# Named bands as score-quantile cut points: a customer is "high" when their score is in the top 10 % of the
# list, "medium" in the next 20 %, and the rest is DEFAULT_BAND.
DEFAULT_RISK_BANDS: dict[str, float] = {"high": 0.9, "medium": 0.7}
DEFAULT_BAND = "low"

SCORE_COLUMNS = (
    "customer_id",
    "cutoff",
    "score",
    "decision",
    "risk_decile",
    "risk_band",
    "model_name",
    "model_version",
)


class RiskBanding(NamedTuple):
    decision: np.ndarray  # bool: score >= threshold
    decile: np.ndarray  # int8 in 1..10, 1 = highest risk
    band: np.ndarray  # object array of band names


def _validate_bands(bands: Mapping[str, float], default_band: str) -> list[tuple[str, float]]:
    for name, cut in bands.items():
        if not 0.0 < cut < 1.0:
            raise ValueError(f"risk band {name!r}: cut point {cut} must be a quantile strictly between 0 and 1")
        if name == default_band:
            raise ValueError(f"risk band {name!r} is the name of the default band; choose another name")
    cuts = [cut for _, cut in bands.items()]
    if len(set(cuts)) != len(cuts):
        raise ValueError(f"risk bands {dict(bands)} share a cut point; each band needs its own quantile")
    # Highest cut point first: a customer takes the first band whose cut point they clear.
    return sorted(bands.items(), key=lambda item: item[1], reverse=True)


def count_scoring_higher(scores: np.ndarray) -> np.ndarray:
    """For each customer, how many customers of the list have a strictly higher score (0 for the top one).

    Tied scores get the same count, so customers with equal scores always land in the same decile and band.
    """
    ascending_negated = np.sort(-scores)
    # Count of scores strictly greater than s = index of -s's first occurrence in the ascending negated scores.
    return np.searchsorted(ascending_negated, -scores, side="left")


def assign_risk_bands(
    scores: np.ndarray,
    threshold: float,
    bands: Mapping[str, float] = DEFAULT_RISK_BANDS,
    *,
    default_band: str = DEFAULT_BAND,
) -> RiskBanding:
    """Decision, risk decile and named risk band for every score of one scoring list.

    - decision: score >= threshold.
    - decile: by rank, 1 = the 10 % highest scores, 10 = the lowest; ties share a decile.
    - band: `bands` maps a name to a score-quantile cut point q; a customer whose score is in the top
      (1 - q) share of the list gets the band with the highest q they clear, everyone else `default_band`.
      With the defaults, the top 10 % are "high", the next 20 % "medium", the rest "low".
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 1:
        raise ValueError(f"scores must be one-dimensional, got shape {scores.shape}")
    if np.isnan(scores).any():
        raise ValueError(f"{int(np.isnan(scores).sum())} scores are NaN; every customer needs a score to be banded")
    return band_by_rank(scores, count_scoring_higher(scores), len(scores), threshold, bands, default_band=default_band)


def band_by_rank(
    scores: np.ndarray,
    higher: np.ndarray,
    list_size: int,
    threshold: float,
    bands: Mapping[str, float] = DEFAULT_RISK_BANDS,
    *,
    default_band: str = DEFAULT_BAND,
) -> RiskBanding:
    """`assign_risk_bands` for some customers of a list of `list_size`, given for each how many customers of the
    whole list score strictly higher (`higher`): what a partition of a list scored in Spark knows once the
    partitions before it in score order have been counted."""
    ordered_bands = _validate_bands(bands, default_band)
    if len(scores) == 0:
        return RiskBanding(np.zeros(0, dtype=bool), np.zeros(0, dtype=np.int8), np.zeros(0, dtype=object))

    n = list_size
    # Integer arithmetic: a list of 1,000 has exactly 100 customers per decile, with no float rounding at edges.
    decile = (higher * 10 // n + 1).astype(np.int8)
    band = np.full(len(scores), default_band, dtype=object)
    unassigned = np.ones(len(scores), dtype=bool)
    for name, cut in ordered_bands:
        # The band holds the top floor((1 - cut) * n) places (tolerance: 1 - 0.9 is 0.0999... in floats).
        places = int(np.floor((1.0 - cut) * n + 1e-9))
        in_band = unassigned & (higher < places)
        band[in_band] = name
        unassigned &= ~in_band
    return RiskBanding(decision=scores >= threshold, decile=decile, band=band)


def band_score_cutoffs(scores: np.ndarray, bands: Mapping[str, float] = DEFAULT_RISK_BANDS) -> dict[str, float]:
    """The lowest score in each named band of this list, to band single scores later (e.g. online serving).

    A score s then belongs to the first band, by decreasing cutoff, with s >= cutoff. Bands that no customer
    reached (a tiny list) are left out.
    """
    scores = np.asarray(scores, dtype=np.float64)
    banding = assign_risk_bands(scores, threshold=1.0, bands=bands)
    return {name: float(scores[banding.band == name].min()) for name in bands if (banding.band == name).any()}


# Model metadata key holding {band name: lowest score in the band} computed on the training population with
# `band_score_cutoffs`; without it, bands fall back to the model threshold.
RISK_BAND_CUTOFFS_KEY = "risk_band_cutoffs"


def agree_with_decision(cutoffs: list[tuple[str, float]], threshold: float) -> tuple[tuple[str, float], ...]:
    """Band cut-offs (highest first) moved so that a band never contradicts the decision at `threshold`: the top
    band holds only customers at or above the threshold, the default band only customers below it; bands in
    between may hold both. With one named band, it is exactly the decision.

    The stored cut-offs are training-score quantiles and the threshold is chosen apart from them, so without this a
    score between the top cut-off and the threshold was "high" but not targeted.
    """
    if not cutoffs:
        return ()
    moved = list(cutoffs)
    top_name, top_cut = moved[0]
    moved[0] = (top_name, max(top_cut, threshold))
    bottom_name, bottom_cut = moved[-1]
    moved[-1] = (bottom_name, threshold if len(moved) == 1 else min(bottom_cut, threshold))
    return tuple(moved)


@dataclass(frozen=True)
class RiskBands:
    """Bands single scores with the cut-offs stored with the model (made to agree with the decision,
    `agree_with_decision`): the first band, by decreasing cut-off, whose cut-off the score reaches. The API and
    `churnops score --input` band this way, so a customer's band does not depend on who else is in the request or
    the file."""

    cutoffs: tuple[tuple[str, float], ...]
    default: str
    source: str  # "model_metadata" or "threshold"

    @classmethod
    def for_model(cls, metadata: Mapping[str, Any], threshold: float) -> RiskBands:
        stored = metadata.get(RISK_BAND_CUTOFFS_KEY)
        if stored:
            cutoffs = sorted(((str(k), float(v)) for k, v in stored.items()), key=lambda kv: -kv[1])
            return cls(cutoffs=agree_with_decision(cutoffs, threshold), default=DEFAULT_BAND, source="model_metadata")
        # Fallback: "high" = at or above the decision threshold, "medium" = at least half of it.
        return cls(cutoffs=(("high", threshold), ("medium", threshold / 2)), default=DEFAULT_BAND, source="threshold")

    def band(self, score: float) -> str:
        for name, cutoff in self.cutoffs:
            if score >= cutoff:
                return name
        return self.default

    def band_many(self, scores: np.ndarray) -> list[str]:
        """`band` of every score, in one comparison per cut-off: with the cut-offs in decreasing order, the first
        one a score reaches is found by counting the cut-offs it misses."""
        if len(scores) <= 2:  # one row (/predict): the loop, before any array set-up
            return list(map(self.band, scores.tolist()))
        cuts = np.array([cutoff for _, cutoff in self.cutoffs], dtype=np.float64)
        if np.any(np.diff(cuts) > 0):  # cut-offs out of order: the loop
            return list(map(self.band, scores.tolist()))
        missed = (scores[:, None] < cuts[None, :]).sum(axis=1)
        names = (*(name for name, _ in self.cutoffs), self.default)
        return list(map(names.__getitem__, missed.tolist()))

    def describe(self) -> dict[str, Any]:
        return {"source": self.source, "cutoffs": dict(self.cutoffs), "default": self.default}


def build_score_frame(
    *,
    customer_ids: np.ndarray | pd.Series,
    scores: np.ndarray,
    cutoff: dt.date,
    threshold: float,
    model_name: str,
    model_version: str,
    bands: Mapping[str, float] = DEFAULT_RISK_BANDS,
    rank_in_list: tuple[np.ndarray, int] | None = None,
) -> pd.DataFrame:
    """The score frame `churnops.db.write_scores` takes: one row per customer, columns SCORE_COLUMNS.

    `rank_in_list` = (higher, list_size) when these customers are only part of the list (see `band_by_rank`)."""
    scores = np.asarray(scores, dtype=np.float64)
    if len(customer_ids) != len(scores):
        raise ValueError(f"{len(customer_ids)} customer ids but {len(scores)} scores")
    if rank_in_list is None:
        banding = assign_risk_bands(scores, threshold, bands)
    else:
        banding = band_by_rank(scores, rank_in_list[0], rank_in_list[1], threshold, bands)
    return pd.DataFrame(
        {
            "customer_id": np.asarray(customer_ids).astype(str),
            "cutoff": cutoff,
            "score": scores,
            "decision": banding.decision,
            "risk_decile": banding.decile,
            "risk_band": banding.band,
            "model_name": model_name,
            "model_version": str(model_version),
        },
        columns=list(SCORE_COLUMNS),
    )
