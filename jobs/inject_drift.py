"""Drift injection: a drifted copy of a dataset, for demos and tests of the drift DAG.

Three kinds of drift, each chosen explicitly:

- **shifts**: add an amount to numeric columns — entity attributes (e.g. `age`) for every customer, the event value
  column (e.g. `amount`) for events on or after `since`;
- **label rate**: silence a share of customers from `since` on (their later events are removed), which raises a
  churn label's rate and lowers a propensity label's rate;
- **new categories**: give a share of customers a category value never seen before (e.g. `region=region_new`).

The copy keeps the dataset's *name* (so the same registered model and snapshot folder apply) and gets its own
contract YAML next to the drifted files: run the feature and drift DAGs with `dataset=<that YAML>`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from churnops.dataset import DatasetContract
from churnops.run_dates import run_date_from_data
from churnops.storage import write_parquet_atomically

DRIFT_SEED = 2024


@dataclass(frozen=True)
class DriftedDataset:
    contract_path: Path
    events_path: Path
    entities_path: Path | None
    events_removed: int
    customers_silenced: int


def shift_columns(
    frame: pd.DataFrame,
    shifts: Mapping[str, float],
    new_categories: Mapping[str, str] | None = None,
    category_share: float = 0.3,
    rows: np.ndarray | None = None,
    seed: int = DRIFT_SEED,
) -> pd.DataFrame:
    """A copy of `frame` with `shifts` added to numeric columns and, for `new_categories` ({column: new value}),
    that value put into a `category_share` of the rows. `rows` (a boolean mask) limits both to some rows."""
    unknown = [c for c in [*shifts, *(new_categories or {})] if c not in frame.columns]
    if unknown:
        raise KeyError(f"cannot inject drift into columns {unknown}: not in {list(frame.columns)}")
    drifted = frame.copy()
    mask = np.ones(len(frame), dtype=bool) if rows is None else np.asarray(rows, dtype=bool)
    for column, amount in shifts.items():
        if not pd.api.types.is_numeric_dtype(drifted[column]):
            raise TypeError(f"column {column!r} is not numeric; use new_categories for categorical columns")
        drifted[column] = drifted[column].astype("float64")
        drifted.loc[mask, column] = drifted.loc[mask, column] + amount
    rng = np.random.default_rng(seed)
    for column, value in (new_categories or {}).items():
        chosen = mask & (rng.random(len(frame)) < category_share)
        drifted[column] = drifted[column].astype(object)
        drifted.loc[chosen, column] = value
    return drifted


def write_drifted_dataset(
    contract: DatasetContract,
    out_dir: Path,
    *,
    shifts: Mapping[str, float] | None = None,
    new_categories: Mapping[str, str] | None = None,
    category_share: float = 0.3,
    silence_share: float = 0.0,
    since: dt.date | None = None,
    seed: int = DRIFT_SEED,
) -> DriftedDataset:
    """Write a drifted copy of an event dataset's sources and a contract YAML for it under `out_dir`.

    `shifts` may name entity numeric columns and the event value column; `since` (default: the first training
    cutoff of the contract's plan, so a retrained model learns from the shifted data) is when event drift and
    silencing start.
    """
    if contract.events is None:
        raise ValueError(f"dataset {contract.name!r} has no event log; drift injection needs event data")
    if not 0.0 <= silence_share <= 1.0 or not 0.0 <= category_share <= 1.0:
        raise ValueError("silence_share and category_share are shares between 0 and 1")
    shifts, new_categories = dict(shifts or {}), dict(new_categories or {})
    requested = dict(shifts)
    source = contract.events
    entity_columns = set(contract.entities.numeric + contract.entities.categorical) if contract.entities else set()
    unknown = [c for c in [*shifts, *new_categories] if c not in entity_columns | {source.amount}]
    if unknown:
        raise KeyError(
            f"cannot inject drift into {unknown}: choose entity attributes {sorted(entity_columns)} "
            f"or the event value column {source.amount!r}"
        )

    events = _read(contract.resolve(source.path), source.format)
    timestamps = pd.to_datetime(events[source.timestamp])
    if since is None:
        # A run on the day after the data's last day trains from this cutoff on.
        since = contract.plan(run_date_from_data(timestamps.max().date())).train[0]
    after = (timestamps >= pd.Timestamp(since)).to_numpy()
    if source.amount in shifts:
        events = shift_columns(events, {source.amount: shifts.pop(source.amount)}, rows=after, seed=seed)
        # The contract forbids negative amounts unless allowed: keep a downward shift a valid event.
        if not source.allow_negative_amounts:
            events[source.amount] = events[source.amount].clip(lower=0.0)
    rng = np.random.default_rng(seed)
    customers = events[source.entity_key].unique()
    silenced = customers[rng.random(len(customers)) < silence_share]
    drop = after & events[source.entity_key].isin(silenced).to_numpy()
    events = events[~drop].reset_index(drop=True)

    out_dir = out_dir.resolve()
    events_path = out_dir / f"events.{source.format}"
    _write(events, events_path)
    entities_path = None
    raw = contract.model_dump(mode="json", exclude={"base_dir"}, exclude_none=True)
    raw["events"]["path"] = events_path.name
    if contract.entities is not None:
        entities = _read(contract.resolve(contract.entities.path), contract.entities.format)
        entities = shift_columns(entities, shifts, new_categories, category_share, seed=seed)
        entities_path = out_dir / f"customers.{contract.entities.format}"
        _write(entities, entities_path)
        raw["entities"]["path"] = entities_path.name
    elif shifts or new_categories:
        raise KeyError(f"dataset {contract.name!r} has no entity table for {list(shifts) + list(new_categories)}")
    raw["description"] = (
        f"Drifted copy of {contract.name}: shifts {requested}, new categories {new_categories}, "
        f"{len(silenced)} customers silenced, event drift from {since}."
    )
    contract_path = out_dir / f"{contract.name}-drifted.yaml"
    contract_path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return DriftedDataset(contract_path, events_path, entities_path, int(drop.sum()), len(silenced))


def _read(path: Path, fmt: str) -> pd.DataFrame:
    return pd.read_csv(path) if fmt == "csv" else pd.read_parquet(path)


def _write(frame: pd.DataFrame, path: Path) -> None:
    if path.suffix == ".csv":
        path.parent.mkdir(parents=True, exist_ok=True)
        frame.to_csv(path, index=False)
    else:
        write_parquet_atomically(frame, path)
