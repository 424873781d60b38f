"""The survival columns of a scoring list: the survival champion's P(buy by each horizon) and median days to the next
purchase for every customer of the list, from the same snapshot rows the churn model scored.

Called by one line of `churnops.jobs.score.score`. A dataset without `survival:` gets its list unchanged; one whose
survival model has no champion yet gets it unchanged too, with a warning (the churn list never waits for it).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from churnops.dataset import DatasetContract
from churnops.features import ENTITY_ID
from churnops.jobs.survival.boosting import HazardBoostingModel
from churnops.jobs.survival.model_store import load_survival_version
from churnops.registry import champion_or_none
from churnops.snapshots import load_snapshot
from churnops.survival_columns import MEDIAN_BEYOND_HORIZON, MEDIAN_DAYS, survival_list_columns

log = logging.getLogger(__name__)


def with_survival_columns(
    contract: DatasetContract,
    scored: pd.DataFrame,
    snapshot_dir: Path | None,
    cutoff: dt.date,
    loaded: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """`scored` (a list, in its order) with `p_buy_<t>d` per configured horizon, `median_days_to_next_purchase`
    (NaN beyond the model's horizon) and `median_beyond_horizon`; unchanged without a survival champion. `loaded`:
    the cutoff's snapshot rows the caller already read (used when they hold the survival model's columns); without
    a `snapshot_dir` (a file scored by `churnops score --input`), the only rows there are."""
    champion = list_survival_champion(contract, cutoff)
    if champion is None:
        return scored
    model, version = champion
    name = contract.survival_model_name
    if loaded is not None and set(model.schema.columns) <= set(loaded.columns):
        # The cutoff's rows the churn model scored, already read and verified: not read a second time.
        features = loaded
    elif snapshot_dir is not None:
        features, _ = load_snapshot(snapshot_dir, cutoffs=[cutoff], columns=model.schema.columns)
    else:
        have = set(loaded.columns) if loaded is not None else set()
        missing = [column for column in model.schema.columns if column not in have]
        raise ValueError(
            f"{name} v{version} reads feature(s) {missing} that the scored rows lack: retrain it "
            "(`churnops train`) or restore the contract it was trained with"
        )
    horizons = contract.survival.horizons
    predicted = survival_predictions(model, features, horizons).drop(columns=[ENTITY_ID])
    # Each list row's position in the rows read (one hash look-up; a merge on a million ids cost seconds). An id
    # read twice makes get_indexer refuse, as the one-to-one merge did.
    positions = pd.Index(features[ENTITY_ID]).get_indexer(scored[ENTITY_ID])
    missing = positions < 0
    if missing.any():
        raise customers_without_survival_rows(int(missing.sum()), cutoff, scored[ENTITY_ID].to_numpy()[missing][0])
    aligned = predicted.iloc[positions].reset_index(drop=True)
    merged = pd.concat([scored.reset_index(drop=True), aligned], axis=1)
    merged[MEDIAN_BEYOND_HORIZON] = merged[MEDIAN_BEYOND_HORIZON].astype(bool)
    merged[MEDIAN_DAYS] = merged[MEDIAN_DAYS].astype(float)
    log.info("survival columns from %s v%s added to the %s list of %s", name, version, cutoff, contract.name)
    return merged.loc[:, [*scored.columns, *survival_list_columns(horizons)]]


def list_survival_champion(contract: DatasetContract, cutoff: dt.date) -> tuple[HazardBoostingModel, str] | None:
    """(model, version) of the survival champion a list is given columns by; None without a survival section, or
    (with a warning) before a survival model has a champion."""
    if contract.survival is None:
        return None
    name = contract.survival_model_name
    current = champion_or_none(name)
    if current is None:
        log.warning("list of %s at %s has no survival columns: %s has no champion yet", contract.name, cutoff, name)
        return None
    model, _ = load_survival_version(name, str(current.version))
    return model, str(current.version)


def survival_predictions(
    model: HazardBoostingModel, features: pd.DataFrame, horizons: Sequence[int], threads: int | None = None
) -> pd.DataFrame:
    """customer_id and the survival columns of these snapshot rows (all of a cutoff's, or a batch: each row's
    columns depend on that row only, up to float rounding of the trees' sum, about 1e-15). `threads`: cores to use
    (default: all; a Spark task passes its own)."""
    predicted = model.predict_customers(features, horizons, threads)
    predicted.insert(0, ENTITY_ID, features[ENTITY_ID].to_numpy())
    return predicted.reset_index(drop=True)


def customers_without_survival_rows(count: int, cutoff: dt.date, example: object) -> ValueError:
    """The refusal of a list some of whose customers the survival model read no row for."""
    return ValueError(
        f"{count} customers of the {cutoff} list have no row in the snapshot the survival model read (e.g. {example!r})"
    )
