"""The survival columns a scoring list can carry (time to the next event, `survival:` in the dataset contract).

Named once here because four rooms meet on them: the scoring job writes them, the database stores them (one column
per supported horizon, migration 0013), the export and the API read them back.
"""

from __future__ import annotations

from collections.abc import Iterable

# Days a list can carry P(event by day t) for: churnops.scores has a column for each.
SURVIVAL_HORIZONS_DAYS = (30, 60, 90, 180, 365)
MEDIAN_DAYS = "median_days_to_next_purchase"
# True when the median lies past the longest follow-up the model learned from (MEDIAN_DAYS is then empty).
MEDIAN_BEYOND_HORIZON = "median_beyond_horizon"


def p_buy_column(days: int) -> str:
    """The list column of P(buy, or stay active, by day `days` from the cutoff)."""
    return f"p_buy_{days}d"


def survival_list_columns(horizons: Iterable[int] = SURVIVAL_HORIZONS_DAYS) -> tuple[str, ...]:
    """The survival columns of a list with these horizons, in list order."""
    return (*(p_buy_column(h) for h in horizons), MEDIAN_DAYS, MEDIAN_BEYOND_HORIZON)
