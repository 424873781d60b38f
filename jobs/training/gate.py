"""The promotion gate: whether a newly trained model may replace the champion, as a pure function.

Inputs are plain data: the evaluation labels, the challenger's scores, what is known about the champion (none
exists, its scores on the same rows, or why it could not be scored), the leakage findings and the rules from
`TrainingSettings`. Nothing here talks to MLflow or a database, so every rule can be tested directly;
`jobs.training.registration` acts on the decision.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from churnops.config import TrainingSettings
from jobs.evaluate import binary_metrics


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
class PromotionDecision:
    promoted: bool
    reason: str
    champion_version: str | None
    champion_auc: float | None
    sanity_checks: dict[str, bool] = field(default_factory=dict)

    def as_record(self, training: TrainingSettings) -> dict[str, Any]:
        """The decision as JSON-able data, with the rules it was taken under (evaluation.json's `promotion`)."""
        return {
            "promoted": self.promoted,
            "reason": self.reason,
            "champion_version": self.champion_version,
            "champion_roc_auc": self.champion_auc,
            "margin": training.promotion_margin,
            "min_auc": training.min_auc,
            "sanity_checks": self.sanity_checks,
        }


def decide_promotion(
    labels: np.ndarray,
    challenger_scores: np.ndarray,
    champion: Champion,
    leakage: list[dict[str, Any]],
    training: TrainingSettings,
) -> PromotionDecision:
    """Promote only if no leakage finding blocks it, the challenger's ROC AUC reaches the floor, and it beats the
    champion re-scored on the same rows by more than the margin (or there is no champion to beat)."""
    new_auc = binary_metrics(labels, challenger_scores)["roc_auc"]
    floor, margin = training.min_auc, training.promotion_margin
    blocking = [f["feature"] for f in leakage if not f["allowed"]]
    checks = {"leakage_probes_clean": not blocking, "auc_above_floor": new_auc >= floor}
    champion_version = None if isinstance(champion, NoChampion) else champion.version
    champion_auc = binary_metrics(labels, champion.scores)["roc_auc"] if isinstance(champion, ChampionScores) else None
    if blocking:
        promoted, reason = False, f"leakage probes flagged {blocking}; not promoted until the features are fixed"
    elif not checks["auc_above_floor"]:
        promoted, reason = False, f"evaluation ROC AUC {new_auc:.4f} is below the floor {floor}"
    elif isinstance(champion, NoChampion):
        promoted, reason = True, "no champion yet"
    elif isinstance(champion, ChampionUnavailable):
        promoted, reason = True, f"champion v{champion.version} {champion.error}"
    else:
        promoted = new_auc > champion_auc + margin
        verdict = "beats" if promoted else "does not beat"
        reason = (
            f"evaluation ROC AUC {new_auc:.4f} {verdict} champion v{champion.version}'s {champion_auc:.4f} "
            f"on the same customers by more than {margin}"
        )
    return PromotionDecision(promoted, reason, champion_version, champion_auc, checks)
