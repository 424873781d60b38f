"""The survival frame at a cutoff: each customer's time from the cutoff to their next purchase, or its censoring.

Time is counted in whole days, the cutoff day being day 1, so "bought by day t" means an event in
[cutoff, cutoff + t) — the same window as the churn/propensity label with horizon t. For a customer seen before a
cutoff c whose follow-up is observed up to and including the day `observed_until`:

- `duration_days` = days from c to the first event on or after c, plus one, when that event is on or before
  `observed_until`, and `event_observed` = 1;
- otherwise `duration_days` = the whole follow-up, `observed_until - c + 1` days, and `event_observed` = 0: the
  customer is censored there — not counted as a non-buyer, since they may still buy later.

Out-of-time training uses earlier cutoffs whose follow-up is censored the day before the evaluation cutoff, so no
event on or after it is ever seen (`censor_before`). Features come from the snapshot (Spark) or the DuckDB reference,
both of which read only events strictly before each cutoff.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import numpy as np
import pandas as pd

from churnops.features import CUTOFF, ENTITY_ID

DURATION = "duration_days"
EVENT = "event_observed"
# Bronze event-log columns the targets read (jobs/ingest.py writes them).
EVENT_DAY, EVENT_TYPE = "event_day", "event_type"


def _as_day(value: dt.date | pd.Timestamp | str) -> pd.Timestamp:
    return pd.Timestamp(value).normalize()


def survival_targets(
    events: pd.DataFrame,
    cutoffs: Sequence[dt.date],
    observed_until: dt.date,
    event_type: str | None = None,
) -> pd.DataFrame:
    """(customer_id, cutoff, duration_days, event_observed) for every customer with an event before each cutoff.

    `events` is the bronze log (`customer_id`, `event_day`, and `event_type` when `event_type` is given: then only
    events of that type end a duration, while any event makes the customer part of the population, as for labels).
    `observed_until` is the last day whose events may be used; it must not be before any cutoff.
    """
    missing = [c for c in (ENTITY_ID, EVENT_DAY) if c not in events.columns]
    if event_type is not None and EVENT_TYPE not in events.columns:
        missing.append(EVENT_TYPE)
    if missing:
        raise ValueError(f"the event log lacks column(s) {missing}; pass the bronze events (jobs/ingest.py)")
    end = _as_day(observed_until)
    days = pd.DatetimeIndex(pd.to_datetime(events[EVENT_DAY])).normalize()
    late = [c for c in cutoffs if _as_day(c) > end]
    if late:
        raise ValueError(f"cutoffs {late} fall after observed_until ({end.date()}): they have no follow-up day")
    log = pd.DataFrame({ENTITY_ID: events[ENTITY_ID].to_numpy(), "day": days})
    ending = log if event_type is None else log[events[EVENT_TYPE].to_numpy() == event_type]
    ending = ending[ending["day"] <= end].sort_values("day")
    frames = []
    for cutoff in cutoffs:
        start = _as_day(cutoff)
        seen = pd.Index(log.loc[log["day"] < start, ENTITY_ID].unique(), name=ENTITY_ID)
        after = ending[ending["day"] >= start].drop_duplicates(ENTITY_ID).set_index(ENTITY_ID)["day"]
        next_day = after.reindex(seen)
        follow_up = (end - start).days + 1
        bought = next_day.notna().to_numpy()
        duration = np.where(bought, (next_day - start).dt.days.to_numpy(dtype=float) + 1, follow_up)
        frames.append(
            pd.DataFrame(
                {
                    ENTITY_ID: seen.to_numpy(),
                    CUTOFF: start,
                    DURATION: duration.astype(np.int64),
                    EVENT: bought.astype(np.int64),
                }
            )
        )
    if not frames:
        return pd.DataFrame({ENTITY_ID: [], CUTOFF: [], DURATION: [], EVENT: []})
    return pd.concat(frames, ignore_index=True)


def out_of_time_targets(
    events: pd.DataFrame, training_cutoffs: Sequence[dt.date], evaluation_cutoff: dt.date, event_type: str | None = None
) -> pd.DataFrame:
    """Training targets for a model evaluated at `evaluation_cutoff`: every follow-up ends the day before it."""
    early = [c for c in training_cutoffs if c >= evaluation_cutoff]
    if early:
        raise ValueError(f"training cutoffs {early} are not before the evaluation cutoff {evaluation_cutoff}")
    targets = survival_targets(events, training_cutoffs, evaluation_cutoff - dt.timedelta(days=1), event_type)
    assert_follow_up_before(targets, evaluation_cutoff)
    return targets


def censor_before(targets: pd.DataFrame, boundary: dt.date) -> pd.DataFrame:
    """The same targets with every follow-up censored the day before `boundary` (e.g. the evaluation cutoff).

    Used to build training folds from already computed targets: an event on or after `boundary` becomes a
    censoring at the last day before it, so nothing from `boundary` on can reach a model fitted on the result.
    """
    limit = (_as_day(boundary) - pd.to_datetime(targets[CUTOFF])).dt.days.to_numpy()
    if (limit < 1).any():
        raise ValueError(f"censor_before({boundary}): some cutoffs are on or after the boundary; drop them first")
    duration = targets[DURATION].to_numpy()
    beyond = duration > limit
    return targets.assign(
        **{DURATION: np.where(beyond, limit, duration), EVENT: np.where(beyond, 0, targets[EVENT].to_numpy())}
    )


def survival_frame(features: pd.DataFrame, targets: pd.DataFrame) -> pd.DataFrame:
    """Features (one row per customer and cutoff) joined to their survival targets; every feature row must match."""
    feature_cutoffs = pd.to_datetime(features[CUTOFF]).dt.normalize()
    keyed = features.assign(**{CUTOFF: feature_cutoffs, ENTITY_ID: features[ENTITY_ID].astype(str)})
    target_keys = targets.assign(**{ENTITY_ID: targets[ENTITY_ID].astype(str)})
    merged = keyed.merge(target_keys, on=[ENTITY_ID, CUTOFF], how="left", validate="one_to_one")
    unmatched = merged[DURATION].isna()
    if unmatched.any():
        example = merged.loc[unmatched, [ENTITY_ID, CUTOFF]].iloc[0].to_dict()
        raise ValueError(
            f"{int(unmatched.sum())} feature rows have no survival target (e.g. {example}): the features and the "
            "targets must come from the same event log and cutoffs"
        )
    return merged.assign(**{DURATION: merged[DURATION].astype(np.int64), EVENT: merged[EVENT].astype(np.int64)})


def cutoffs_every(last: dt.date, every_days: int, earliest: dt.date) -> list[dt.date]:
    """Training cutoffs `every_days` apart counting back from (and excluding) `last`, none before `earliest`.

    Anchoring the schedule on the evaluation cutoff makes every training follow-up a whole number of steps long.
    """
    if every_days < 1:
        raise ValueError(f"every_days must be at least 1, got {every_days}")
    cutoffs, current = [], last - dt.timedelta(days=every_days)
    while current >= earliest:
        cutoffs.append(current)
        current -= dt.timedelta(days=every_days)
    return sorted(cutoffs)


def assert_follow_up_before(targets: pd.DataFrame, boundary: dt.date) -> None:
    """Refuse targets whose follow-up reaches `boundary` or later: a training frame must end the day before it."""
    last_day = pd.to_datetime(targets[CUTOFF]) + pd.to_timedelta(targets[DURATION] - 1, unit="D")
    late = last_day >= pd.Timestamp(boundary)
    if late.any():
        row = targets.loc[late].iloc[0]
        raise ValueError(
            f"{int(late.sum())} training rows follow customers up to or past {boundary} (e.g. customer "
            f"{row[ENTITY_ID]} at cutoff {pd.Timestamp(row[CUTOFF]).date()}, {int(row[DURATION])} days): censor them "
            "with censor_before() first"
        )
