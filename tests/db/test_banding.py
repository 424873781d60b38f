"""Risk banding: decision at the threshold, deciles by rank, named bands at score quantiles."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from churnops.banding import (
    SCORE_COLUMNS,
    assign_risk_bands,
    band_by_rank,
    band_score_cutoffs,
    build_score_frame,
    count_scoring_higher,
)


def shuffled_scores(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).permutation(np.linspace(0.001, 0.999, n))


def test_each_decile_holds_a_tenth_of_distinct_scores_highest_first() -> None:
    scores = shuffled_scores(1_000)
    _, decile, _ = assign_risk_bands(scores, threshold=0.5)
    assert np.bincount(decile)[1:].tolist() == [100] * 10
    # Every score in decile d is above every score in decile d + 1.
    for d in range(1, 10):
        assert scores[decile == d].min() > scores[decile == d + 1].max()


def test_tied_scores_share_a_decile_and_a_band() -> None:
    scores = np.array([0.9] * 15 + [0.1] * 85)
    _, decile, band = assign_risk_bands(scores, threshold=0.5)
    assert set(decile[:15]) == {1} and set(band[:15]) == {"high"}
    # The 85 tied low scores have 15 customers above them: all in decile 2 and all "medium", none split.
    assert set(decile[15:]) == {2} and set(band[15:]) == {"medium"}


def test_default_bands_are_top_10_percent_high_next_20_medium_rest_low() -> None:
    _, decile, band = assign_risk_bands(shuffled_scores(1_000), threshold=0.5)
    names, counts = np.unique(band, return_counts=True)
    assert dict(zip(names, counts, strict=True)) == {"high": 100, "medium": 200, "low": 700}
    assert set(decile[band == "high"]) == {1}
    assert set(decile[band == "medium"]) == {2, 3}


def test_custom_bands_and_default_band_name() -> None:
    bands = {"critical": 0.95, "watch": 0.5}
    _, _, band = assign_risk_bands(shuffled_scores(200), threshold=0.5, bands=bands, default_band="ok")
    names, counts = np.unique(band, return_counts=True)
    assert dict(zip(names, counts, strict=True)) == {"critical": 10, "watch": 90, "ok": 100}


def test_decision_is_score_at_or_above_threshold() -> None:
    decision, _, _ = assign_risk_bands(np.array([0.2, 0.3, 0.30000001, 0.9]), threshold=0.3)
    assert decision.tolist() == [False, True, True, True]


def test_higher_score_never_gets_a_worse_decile() -> None:
    scores = np.random.default_rng(3).beta(2, 5, 5_000).round(3)  # many ties
    _, decile, _ = assign_risk_bands(scores, threshold=0.5)
    order = np.argsort(-scores, kind="stable")
    assert np.all(np.diff(decile[order]) >= 0)


@pytest.mark.parametrize(
    ("bands", "message"),
    [({"high": 1.0}, "strictly between"), ({"low": 0.8}, "default band"), ({"a": 0.8, "b": 0.8}, "share")],
)
def test_invalid_bands_are_refused(bands: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        assign_risk_bands(shuffled_scores(10), threshold=0.5, bands=bands)


def test_nan_scores_are_refused() -> None:
    with pytest.raises(ValueError, match="NaN"):
        assign_risk_bands(np.array([0.1, np.nan]), threshold=0.5)


def test_band_score_cutoffs_reproduce_the_bands_of_the_list() -> None:
    scores = shuffled_scores(1_000, seed=4)
    _, _, band = assign_risk_bands(scores, threshold=0.5)
    cutoffs = band_score_cutoffs(scores)
    assert cutoffs["high"] > cutoffs["medium"]
    rebanded = np.where(scores >= cutoffs["high"], "high", np.where(scores >= cutoffs["medium"], "medium", "low"))
    assert (rebanded == band).all()


def test_build_score_frame_has_the_columns_write_scores_takes() -> None:
    frame = build_score_frame(
        customer_ids=np.arange(20),
        scores=shuffled_scores(20),
        cutoff=dt.date(2024, 1, 31),
        threshold=0.5,
        model_name="churn_lgbm",
        model_version=3,
    )
    assert tuple(frame.columns) == SCORE_COLUMNS
    assert frame["customer_id"].tolist()[:2] == ["0", "1"] and frame["model_version"].unique().tolist() == ["3"]
    assert frame["decision"].dtype == bool and frame["risk_decile"].between(1, 10).all()


def test_a_list_banded_in_score_ordered_parts_given_the_counts_before_each_is_banded_as_a_whole() -> None:
    """What Spark scoring does per partition (churnops.jobs.score_spark): the same decisions, deciles and bands."""
    scores = np.round(np.random.default_rng(4).beta(2, 5, size=2_003), 3)  # rounded: many ties across the list
    whole = assign_risk_bands(scores, threshold=0.4)
    order = np.argsort(-scores, kind="stable")
    # Parts split between distinct scores, as a range partitioning keeps equal scores together.
    ranked = scores[order]
    edges = [0, *(int(np.searchsorted(-ranked, -ranked[i], side="left")) for i in (400, 1_100, 1_700)), len(scores)]
    banded = {name: np.empty(len(scores), dtype=dtype) for name, dtype in (("d", bool), ("q", np.int8), ("b", object))}
    for start, end in zip(edges[:-1], edges[1:], strict=True):
        part = order[start:end]
        higher = start + count_scoring_higher(scores[part])
        result = band_by_rank(scores[part], higher, len(scores), threshold=0.4)
        banded["d"][part], banded["q"][part], banded["b"][part] = result
    assert len(set(edges)) == 5
    np.testing.assert_array_equal(banded["d"], whole.decision)
    np.testing.assert_array_equal(banded["q"], whole.decile)
    np.testing.assert_array_equal(banded["b"], whole.band)
