"""Dataset contracts: one YAML file per dataset says where the data is, what its columns mean and what to predict.

A contract is the only place that knows a dataset's column names; the feature job, training, scoring and serving
read them from here. Built-in contracts live in `churnops/datasets/`; any other YAML path works too.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Literal

import yaml
from dateutil.relativedelta import relativedelta
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from churnops.config import BUILTIN_DATASETS_DIR, Settings


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EventSource(_Strict):
    path: str
    format: Literal["parquet", "csv"] = "parquet"
    entity_key: str
    timestamp: str
    amount: str
    event_type: str | None = None
    # Event types that get their own count features (e.g. support calls before churn).
    counted_event_types: tuple[str, ...] = ()


class EntitySource(_Strict):
    path: str
    format: Literal["parquet", "csv"] = "parquet"
    key: str
    signup: str | None = None
    categorical: tuple[str, ...] = ()
    numeric: tuple[str, ...] = ()


class LabelDefinition(_Strict):
    kind: Literal["churn"] = "churn"
    horizon_days: int = Field(ge=1, le=366)


class CutoffSchedule(_Strict):
    """Monthly cutoffs from `first` up to `as_of` (the scoring cutoff: the end of observed data)."""

    first: dt.date
    as_of: dt.date
    every_months: int = Field(1, ge=1)
    # How many matured cutoffs (labels fully observed before the out-of-time cutoff) to train on.
    train_cutoffs: int = Field(6, ge=1)

    def all_cutoffs(self) -> list[dt.date]:
        cutoffs, current = [], self.first
        while current < self.as_of:
            cutoffs.append(current)
            current += relativedelta(months=self.every_months)
        return cutoffs


class Population(_Strict):
    # Only customers with an event in the last N days before the cutoff are scored; None = everyone seen so far.
    active_within_days: int | None = Field(None, ge=1)


class CutoffPlan(_Strict):
    """Which cutoff serves which purpose; training labels all end before the out-of-time cutoff."""

    train: tuple[dt.date, ...]
    out_of_time: dt.date
    scoring: dt.date

    @property
    def all(self) -> tuple[dt.date, ...]:
        return (*self.train, self.out_of_time, self.scoring)


class DatasetContract(_Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")
    description: str = ""
    events: EventSource
    entities: EntitySource | None = None
    label: LabelDefinition
    cutoffs: CutoffSchedule
    population: Population = Population()
    # The directory relative source paths resolve against; set when loading.
    base_dir: Path | None = None

    @property
    def model_name(self) -> str:
        return f"churnops-{self.name}"

    @model_validator(mode="after")
    def _schedule_leaves_room_for_out_of_time(self) -> DatasetContract:
        self.plan()  # raises with a clear message when the schedule cannot hold train + out-of-time cutoffs
        return self

    def resolve(self, path: str) -> Path:
        candidate = Path(path).expanduser()
        if candidate.is_absolute() or self.base_dir is None:
            return candidate
        return self.base_dir / candidate

    def plan(self) -> CutoffPlan:
        horizon = dt.timedelta(days=self.label.horizon_days)
        matured = [c for c in self.cutoffs.all_cutoffs() if c + horizon <= self.cutoffs.as_of]
        if not matured:
            raise ValueError(
                f"dataset {self.name!r}: no cutoff between {self.cutoffs.first} and {self.cutoffs.as_of} has a "
                f"fully observed {self.label.horizon_days}-day label; move `cutoffs.first` earlier"
            )
        out_of_time = matured[-1]
        trainable = [c for c in matured if c + horizon <= out_of_time]
        if not trainable:
            raise ValueError(
                f"dataset {self.name!r}: no training cutoff has labels that end before the out-of-time cutoff "
                f"{out_of_time}; move `cutoffs.first` earlier or shorten the horizon"
            )
        return CutoffPlan(
            train=tuple(trainable[-self.cutoffs.train_cutoffs :]),
            out_of_time=out_of_time,
            scoring=self.cutoffs.as_of,
        )


def load_contract(name_or_path: str, settings: Settings) -> DatasetContract:
    """Load a contract by built-in name (`synthetic`, `cdnow`) or by YAML path.

    Relative source paths resolve against the YAML's own folder for user files, and against the working data folder
    for built-in contracts (whose data the `generate` command writes there).
    """
    path = Path(name_or_path)
    if path.suffix not in {".yaml", ".yml"}:
        path = BUILTIN_DATASETS_DIR / f"{name_or_path}.yaml"
        base_dir = settings.data_dir
        if not path.exists():
            known = sorted(p.stem for p in BUILTIN_DATASETS_DIR.glob("*.yaml"))
            raise FileNotFoundError(f"no dataset named {name_or_path!r}; built-in datasets: {known}, or give a .yaml path")
    else:
        base_dir = path.resolve().parent
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise ValueError(f"cannot read dataset contract {path}: {error}") from error
    try:
        return DatasetContract.model_validate({**raw, "base_dir": raw.get("base_dir", base_dir)})
    except ValidationError as error:
        raise ValueError(f"invalid dataset contract {path}:\n{error}") from error
