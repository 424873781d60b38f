"""The promotion gate decides from numbers alone: every rule that refuses, and both ways to be promoted, tested
directly on generated scores (no training, no registry)."""

from __future__ import annotations

import numpy as np
import pytest

from churnops.config import TrainingSettings
from churnops.jobs.training.gate import ChampionScores, ChampionUnavailable, NoChampion, decide_promotion

RULES = TrainingSettings(
    min_auc=0.6,
    promotion_margin=0.002,
    promotion_significance_level=0.05,
    promotion_brier_tolerance=0.002,
    promotion_log_loss_tolerance=0.005,
)
CLEAN: list[dict] = []


def _probability(signal: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-signal))


def scored_rows(n: int, seed: int, challenger_strength: float, champion_strength: float):
    """Labels and two models' calibrated-ish probabilities that share most of their noise (as retrained models
    do), the challenger separating the classes with `challenger_strength`, the champion with `champion_strength`."""
    rng = np.random.default_rng(seed)
    labels = (rng.random(n) < 0.3).astype(np.int64)
    shared = rng.normal(size=n)
    centred = labels - 0.3
    challenger = _probability(-1.0 + challenger_strength * centred + shared + 0.3 * rng.normal(size=n))
    champion = _probability(-1.0 + champion_strength * centred + shared + 0.3 * rng.normal(size=n))
    return labels, challenger, champion


def test_a_significant_gain_above_the_margin_that_keeps_calibration_promotes() -> None:
    labels, challenger, champion = scored_rows(5000, seed=1, challenger_strength=2.2, champion_strength=1.6)
    decision = decide_promotion(labels, challenger, ChampionScores("3", champion), CLEAN, RULES)
    assert (decision.rule, decision.promoted) == ("beats_champion", True), decision.reason
    assert decision.comparison.p_value < 0.05 and decision.comparison.ci_low > 0
    assert decision.champion_version == "3"


def test_no_champion_promotes() -> None:
    labels, challenger, _ = scored_rows(2000, seed=2, challenger_strength=2.0, champion_strength=1.0)
    decision = decide_promotion(labels, challenger, NoChampion(), CLEAN, RULES)
    assert (decision.rule, decision.promoted, decision.reason) == ("no_champion", True, "no champion yet")
    assert decision.champion_version is None and decision.comparison is None


def test_a_gain_within_the_margin_is_refused() -> None:
    labels, challenger, champion = scored_rows(5000, seed=3, challenger_strength=2.2, champion_strength=1.6)
    wide_margin = RULES.model_copy(update={"promotion_margin": 0.2})
    decision = decide_promotion(labels, challenger, ChampionScores("3", champion), CLEAN, wide_margin)
    assert (decision.rule, decision.promoted) == ("auc_margin", False)
    assert "does not beat champion v3's" in decision.reason
    # Significant, but the margin decides first; every number is still recorded.
    assert decision.sanity_checks["auc_gain_significant"] is True
    assert decision.comparison.difference == pytest.approx(
        decision.challenger["roc_auc"] - decision.champion["roc_auc"], abs=1e-12
    )


def test_the_same_model_again_is_refused_by_the_margin_with_p_value_one() -> None:
    labels, challenger, _ = scored_rows(2000, seed=4, challenger_strength=2.0, champion_strength=2.0)
    decision = decide_promotion(labels, challenger, ChampionScores("3", challenger.copy()), CLEAN, RULES)
    assert (decision.rule, decision.promoted) == ("auc_margin", False)
    assert decision.comparison.difference == 0 and decision.comparison.p_value == 1.0


def test_a_gain_above_the_margin_that_is_not_significant_is_refused() -> None:
    # A small real gain on few rows: the AUC is higher by more than the margin, but within the noise.
    labels, challenger, champion = scored_rows(300, seed=5, challenger_strength=1.7, champion_strength=1.6)
    decision = decide_promotion(labels, challenger, ChampionScores("3", champion), CLEAN, RULES)
    assert decision.sanity_checks["auc_gain_above_margin"] is True
    assert (decision.rule, decision.promoted) == ("auc_significance", False), decision.reason
    assert decision.comparison.p_value >= 0.05 and decision.comparison.ci_low <= 0 < decision.comparison.ci_high
    assert "not significantly" in decision.reason


def _miscalibrated(probability: np.ndarray) -> np.ndarray:
    """The same ranking, overconfident upwards: AUC unchanged, Brier and log loss worse."""
    return probability**0.4


def test_a_better_ranking_with_a_worse_brier_score_is_refused() -> None:
    labels, challenger, champion = scored_rows(5000, seed=1, challenger_strength=2.2, champion_strength=1.6)
    decision = decide_promotion(labels, _miscalibrated(challenger), ChampionScores("3", champion), CLEAN, RULES)
    assert decision.sanity_checks["auc_gain_significant"] is True
    assert (decision.rule, decision.promoted) == ("brier_non_inferiority", False), decision.reason
    assert decision.challenger["brier"] > decision.champion["brier"] + RULES.promotion_brier_tolerance


def test_a_better_ranking_with_a_worse_log_loss_is_refused() -> None:
    labels, challenger, champion = scored_rows(5000, seed=1, challenger_strength=2.2, champion_strength=1.6)
    lenient_brier = RULES.model_copy(update={"promotion_brier_tolerance": 1.0})
    decision = decide_promotion(labels, _miscalibrated(challenger), ChampionScores("3", champion), CLEAN, lenient_brier)
    assert decision.sanity_checks["brier_non_inferior"] is True
    assert (decision.rule, decision.promoted) == ("log_loss_non_inferiority", False), decision.reason
    assert decision.challenger["log_loss"] > decision.champion["log_loss"] + RULES.promotion_log_loss_tolerance


def test_a_champion_that_cannot_be_loaded_is_refused_however_good_the_challenger() -> None:
    labels, challenger, _ = scored_rows(5000, seed=1, challenger_strength=3.0, champion_strength=1.0)
    unavailable = ChampionUnavailable("3", "loading failed: OSError: No such file or directory: 'model.lgb'")
    decision = decide_promotion(labels, challenger, unavailable, CLEAN, RULES)
    assert (decision.rule, decision.promoted) == ("champion_unavailable", False)
    assert decision.champion_version == "3" and "model.lgb" in decision.champion_error
    assert decision.sanity_checks["champion_available"] is False
    assert "could not be loaded or scored" in decision.reason


def test_a_challenger_below_the_floor_is_refused_even_without_a_champion() -> None:
    labels, challenger, _ = scored_rows(2000, seed=6, challenger_strength=2.0, champion_strength=1.0)
    high_floor = RULES.model_copy(update={"min_auc": 0.99})
    decision = decide_promotion(labels, challenger, NoChampion(), CLEAN, high_floor)
    assert (decision.rule, decision.promoted) == ("auc_floor", False)
    assert "below the floor 0.99" in decision.reason


def test_a_leakage_finding_is_refused_unless_the_contract_allows_it() -> None:
    labels, challenger, champion = scored_rows(5000, seed=1, challenger_strength=2.2, champion_strength=1.6)
    finding = {"feature": "refund_flag", "probe": "single_feature_auc", "value": 0.99, "message": "separates"}
    blocked = decide_promotion(
        labels, challenger, ChampionScores("3", champion), [{**finding, "allowed": False}], RULES
    )
    assert (blocked.rule, blocked.promoted) == ("leakage", False)
    assert "refund_flag" in blocked.reason
    allowed = decide_promotion(labels, challenger, ChampionScores("3", champion), [{**finding, "allowed": True}], RULES)
    assert allowed.promoted is True


def test_the_record_holds_every_number_the_gate_compared() -> None:
    labels, challenger, champion = scored_rows(3000, seed=7, challenger_strength=2.2, champion_strength=1.6)
    record = decide_promotion(labels, challenger, ChampionScores("3", champion), CLEAN, RULES).as_record()
    numbers = (
        "challenger_roc_auc champion_roc_auc challenger_brier champion_brier challenger_log_loss champion_log_loss "
        "auc_difference auc_difference_standard_error auc_difference_ci_low auc_difference_ci_high p_value "
        "significance_level margin min_auc brier_tolerance log_loss_tolerance evaluation_rows"
    ).split()
    assert all(isinstance(record[k], int | float) for k in numbers), {k: record[k] for k in numbers}
    assert record["champion_error"] is None and record["rule"] == "beats_champion"
