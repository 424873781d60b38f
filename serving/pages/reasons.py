"""The model's contributions for one customer (the `/predict?explain=true` SHAP values) in words a person reads."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from churnops.serving.records import Contribution

# Log-odds steps: 0.5 moves a 20 % risk to about 29 %, 0.15 to about 22 %.
_STRONG = 0.5
_NOTABLE = 0.15


@dataclass(frozen=True)
class Reason:
    feature: str
    text: str
    direction: str  # "raises" or "lowers"
    strength: str  # "strongly", "somewhat" or "slightly"
    contribution: float


def _shown_value(value: float | str | None) -> str:
    if value is None:
        return "unknown"
    if isinstance(value, float):
        return f"{value:,.0f}" if value.is_integer() else f"{value:,.2f}"
    return str(value)


def reasons_in_words(contributions: Sequence[Contribution], definitions: Mapping[str, str]) -> list[Reason]:
    """One sentence per contribution, largest first: what the feature measures, its value, and which way it pushes.

    `definitions` maps a feature to its catalog definition (churnops.features); a feature without one (an entity
    attribute) is named by its column.
    """
    reasons = []
    for item in contributions:
        size = abs(item.contribution)
        strength = "strongly" if size >= _STRONG else "somewhat" if size >= _NOTABLE else "slightly"
        direction = "raises" if item.contribution > 0 else "lowers"
        what = definitions.get(item.feature, item.feature.replace("_", " "))
        text = f"{what[:1].upper()}{what[1:]}: {_shown_value(item.value)}. This {strength} {direction} the risk."
        reasons.append(Reason(item.feature, text, direction, strength, item.contribution))
    return reasons
