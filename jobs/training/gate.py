"""The promotion gate: whether a newly trained model may replace the champion, as a pure function.

Inputs are plain data: the evaluation labels, the challenger's scores, what is known about the champion (none
exists, its scores on the same rows, or why it could not be loaded or scored), the leakage findings and the rules
from `TrainingSettings`. Nothing here talks to MLflow or a database, so every rule is tested directly
(tests/training/test_gate.py); `churnops.jobs.training.registration` acts on the decision and records it.

Rules, in the order they decide (every number is computed and recorded whichever rule decides):

1. `leakage`: a leakage finding the contract does not allow refuses.
2. `auc_floor`: a challenger ROC AUC below `min_auc` refuses.
3. `champion_unavailable`: a champion that exists but could not be loaded or scored refuses — only a missing
   model or `champion` alias means "no champion"; the training job then fails after recording the refusal.
4. `no_champion`: nothing to beat, so the challenger is promoted.
5. With the champion's scores on the same rows: `auc_margin` (the AUC gain must exceed `promotion_margin`),
   `auc_significance` (DeLong's paired test must find the difference significant at
   `promotion_significance_level`), `brier_non_inferiority` and `log_loss_non_inferiority` (neither may be worse
   than the champion's by more than its tolerance). All four pass: `beats_champion`, promoted.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from churnops.config import TrainingSettings
from churnops.jobs.evaluate import PairedAucComparison, binary_metrics, compare_aucs

COMPARED_METRICS = ("roc_auc", "brier", "log_loss")


@dataclass(frozen=True)
class NoChampion:
    """The registry has no champion for this model (the model or its `champion` alias does not exist)."""


@dataclass(frozen=True)
class ChampionScores:
    """The champion's scores on the same evaluation rows as the challenger's."""

    version: str
    scores: np.ndarray


@dataclass(frozen=True)
class ChampionUnavailable:
    """A champion exists but could not be loaded or scored on the evaluation rows."""

    version: str
    error: str


Champion = NoChampion | ChampionScores | ChampionUnavailable


@dataclass(frozen=True)
class GateRules:
    min_auc: float
    margin: float
    significance_level: float
    brier_tolerance: float
    log_loss_tolerance: float

    @classmethod
    def from_settings(cls, training: TrainingSettings) -> GateRules:
        return cls(
            min_auc=training.min_auc,
            margin=training.promotion_margin,
            significance_level=training.promotion_significance_level,
            brier_tolerance=training.promotion_brier_tolerance,
            log_loss_tolerance=training.promotion_log_loss_tolerance,
        )


@dataclass(frozen=True)
class PromotionDecision:
    """The gate's verdict, the rule that decided it, and every number it looked at."""

    promoted: bool
    rule: str
    reason: str
    rules: GateRules
    evaluation_rows: int
    challenger: dict[str, float]
    champion_version: str | None = None
    champion: dict[str, float] | None = None
    comparison: PairedAucComparison | None = None
    champion_error: str | None = None
    sanity_checks: dict[str, bool] = field(default_factory=dict)

    @property
    def champion_auc(self) -> float | None:
        return None if self.champion is None else self.champion["roc_auc"]

    def as_record(self) -> dict[str, Any]:
        """Flat JSON-able record: evaluation.json's `promotion`, the database row, the MLflow tags."""
        comparison = self.comparison
        champion = self.champion or {}
        return {
            "promoted": self.promoted,
            "rule": self.rule,
            "reason": self.reason,
            "champion_version": self.champion_version,
            "champion_error": self.champion_error,
            "evaluation_rows": self.evaluation_rows,
            **{f"challenger_{k}": self.challenger[k] for k in COMPARED_METRICS},
            **{f"champion_{k}": champion.get(k) for k in COMPARED_METRICS},
            "auc_difference": None if comparison is None else comparison.difference,
            "auc_difference_standard_error": None if comparison is None else comparison.standard_error,
            "auc_difference_ci_low": None if comparison is None else comparison.ci_low,
            "auc_difference_ci_high": None if comparison is None else comparison.ci_high,
            "p_value": None if comparison is None else comparison.p_value,
            **asdict(self.rules),
            "sanity_checks": self.sanity_checks,
        }


def decide_promotion(
    labels: np.ndarray,
    challenger_scores: np.ndarray,
    champion: Champion,
    leakage: list[dict[str, Any]],
    training: TrainingSettings,
) -> PromotionDecision:
    """Apply the rules of the module docstring, in order; the first that refuses (or promotes) decides."""
    rules = GateRules.from_settings(training)
    challenger = _compared(labels, challenger_scores)
    blocking = [f["feature"] for f in leakage if not f["allowed"]]
    checks = {"leakage_probes_clean": not blocking, "auc_above_floor": challenger["roc_auc"] >= rules.min_auc}
    base: dict[str, Any] = {"rules": rules, "evaluation_rows": len(labels), "challenger": challenger}
    if not isinstance(champion, NoChampion):
        base["champion_version"] = champion.version
        checks["champion_available"] = not isinstance(champion, ChampionUnavailable)
    if isinstance(champion, ChampionUnavailable):
        base["champion_error"] = champion.error
    if isinstance(champion, ChampionScores):
        base["champion"] = _compared(labels, champion.scores)
        base["comparison"] = compare_aucs(labels, challenger_scores, champion.scores, 1 - rules.significance_level)
        checks.update(_comparison_checks(challenger, base["champion"], base["comparison"], rules))
    rule, promoted, reason = _verdict(checks, base, blocking, champion)
    return PromotionDecision(promoted=promoted, rule=rule, reason=reason, sanity_checks=checks, **base)


def _compared(labels: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    metrics = binary_metrics(labels, scores)
    return {k: metrics[k] for k in COMPARED_METRICS}


def _comparison_checks(
    challenger: dict[str, float], champion: dict[str, float], comparison: PairedAucComparison, rules: GateRules
) -> dict[str, bool]:
    return {
        "auc_gain_above_margin": challenger["roc_auc"] > champion["roc_auc"] + rules.margin,
        "auc_gain_significant": comparison.difference > 0 and comparison.p_value < rules.significance_level,
        "brier_non_inferior": challenger["brier"] <= champion["brier"] + rules.brier_tolerance,
        "log_loss_non_inferior": challenger["log_loss"] <= champion["log_loss"] + rules.log_loss_tolerance,
    }


def _verdict(
    checks: dict[str, bool], base: dict[str, Any], blocking: list[str], champion: Champion
) -> tuple[str, bool, str]:
    """(rule, promoted, reason) of the first rule that decides."""
    rules: GateRules = base["rules"]
    new_auc = base["challenger"]["roc_auc"]
    if blocking:
        return "leakage", False, f"leakage probes flagged {blocking}; not promoted until the features are fixed"
    if not checks["auc_above_floor"]:
        return "auc_floor", False, f"evaluation ROC AUC {new_auc:.4f} is below the floor {rules.min_auc}"
    if isinstance(champion, ChampionUnavailable):
        return (
            "champion_unavailable",
            False,
            f"champion v{champion.version} could not be loaded or scored ({champion.error}); not promoted, because "
            "only a missing model or `champion` alias means there is no champion: restore the champion's "
            "artifact and retry, or move the alias by hand after review",
        )
    if isinstance(champion, NoChampion):
        return "no_champion", True, "no champion yet"
    return _comparison_verdict(checks, base, champion.version)


def _comparison_verdict(checks: dict[str, bool], base: dict[str, Any], version: str) -> tuple[str, bool, str]:
    rules: GateRules = base["rules"]
    new, old, comparison = base["challenger"], base["champion"], base["comparison"]
    beats = f"evaluation ROC AUC {new['roc_auc']:.4f} beats champion v{version}'s {old['roc_auc']:.4f}"
    statistics = (
        f"difference {comparison.difference:+.4f}, {comparison.confidence:.0%} CI "
        f"[{comparison.ci_low:+.4f}, {comparison.ci_high:+.4f}], DeLong p = {comparison.p_value:.3g}"
    )
    if not checks["auc_gain_above_margin"]:
        return (
            "auc_margin",
            False,
            f"evaluation ROC AUC {new['roc_auc']:.4f} does not beat champion v{version}'s {old['roc_auc']:.4f} "
            f"on the same customers by more than {rules.margin} ({statistics})",
        )
    if not checks["auc_gain_significant"]:
        return (
            "auc_significance",
            False,
            f"{beats} by more than {rules.margin}, but not significantly at level {rules.significance_level} "
            f"({statistics})",
        )
    for metric, tolerance in (("brier", rules.brier_tolerance), ("log_loss", rules.log_loss_tolerance)):
        if not checks[f"{metric}_non_inferior"]:
            return (
                f"{metric}_non_inferiority",
                False,
                f"{beats} significantly ({statistics}), but its {metric.replace('_', ' ')} {new[metric]:.4f} is "
                f"worse than the champion's {old[metric]:.4f} by more than {tolerance}",
            )
    return (
        "beats_champion",
        True,
        f"{beats} on the same customers by more than {rules.margin} ({statistics}); Brier "
        f"{new['brier']:.4f} vs {old['brier']:.4f} and log loss {new['log_loss']:.4f} vs {old['log_loss']:.4f} "
        "within their tolerances",
    )
