"""When a new value model becomes the `champion`: a pure rule on evaluation Spearman, tested with plain numbers.

The candidate and the current champion are scored on the same evaluation customers (the latest cutoff whose whole
value horizon is observed). The candidate is promoted only if its Spearman is higher than the champion's; the
first value model of a dataset only if it ranks customers better than the naive past-spend rate, so a model that
learned nothing never becomes the one the campaign list is built from.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class ValuePromotion:
    promoted: bool
    reason: str
    # What the candidate had to beat: the champion's Spearman, or the naive baseline's for a first model.
    bar: float
    bar_name: str


def decide_value_promotion(
    candidate_spearman: float, champion_spearman: float | None, naive_spearman: float
) -> ValuePromotion:
    """Promote when the candidate's evaluation Spearman beats the champion's (or, without one, the naive
    past-spend rate's)."""
    if champion_spearman is None:
        bar, name = naive_spearman, "the naive past-spend rate"
    else:
        bar, name = champion_spearman, "the current value champion"
    if not math.isfinite(candidate_spearman):
        return ValuePromotion(False, "refused: the candidate's evaluation Spearman is not a number", bar, name)
    if math.isfinite(bar) and candidate_spearman <= bar:
        return ValuePromotion(
            False, f"refused: Spearman {candidate_spearman:.4f} does not beat {name} ({bar:.4f})", bar, name
        )
    return ValuePromotion(True, f"promoted: Spearman {candidate_spearman:.4f} beats {name} ({bar:.4f})", bar, name)
