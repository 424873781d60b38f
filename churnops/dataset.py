"""Dataset contracts: one YAML file per dataset says where the data is, what its columns mean and what to predict.

A contract is the only place that knows a dataset's column names; the feature job, training, scoring and serving
read them from here. Built-in contracts live in `churnops/datasets/`; any other YAML path works too.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any, Literal

import yaml
from dateutil.relativedelta import relativedelta
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

from churnops.config import BUILTIN_DATASETS_DIR, Settings
from churnops.source_tables import PostgresTableRead
from churnops.survival_columns import SURVIVAL_HORIZONS_DAYS
from churnops.value_contract import ValueSection


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EventSource(_Strict):
    # A file, folder or glob; for format `postgres` the table, `schema.table`, read as `postgres` says.
    path: str
    format: Literal["parquet", "csv", "postgres"] = "parquet"
    postgres: PostgresTableRead = PostgresTableRead()
    entity_key: str
    timestamp: str
    amount: str
    event_type: str | None = None
    # Event types that get their own count features (e.g. support calls before churn).
    counted_event_types: tuple[str, ...] = ()
    # Ingestion rules. Refunds are negative in some ledgers; most event logs never are.
    allow_negative_amounts: bool = False
    # `quarantine`: a row identical in every column to an earlier one is a double delivery and is set aside.
    # `keep`: identical rows are separate events (e.g. two identical order lines on one day).
    exact_duplicates: Literal["quarantine", "keep"] = "quarantine"


class EntitySource(_Strict):
    path: str
    format: Literal["parquet", "csv"] = "parquet"
    key: str
    signup: str | None = None
    categorical: tuple[str, ...] = ()
    numeric: tuple[str, ...] = ()


class LabelDefinition(_Strict):
    """What the model predicts at a cutoff t.

    - `churn`: 1 if the customer has no event (of `event_type`, if given) in [t, t + H).
    - `propensity`: 1 if the customer has at least one event (of `event_type`, if given) in [t, t + H).
    - `column`: the entity table's own label column (entity-level data without timestamps); no horizon.

    A label column holds 0/1 unless `positive` names the value that means 1 (`positive: "Yes"`); every other value
    is then 0, or, when `negative` is given too, a value that is neither is an error. A blank cell is no label.
    """

    kind: Literal["churn", "propensity", "column"] = "churn"
    horizon_days: int | None = Field(None, ge=1, le=366)
    event_type: str | None = None
    # For kind `column`: the entity table's label column, and the values of its classes as written in the file.
    column: str | None = None
    positive: str | None = None
    negative: str | None = None

    @field_validator("positive", "negative", mode="before")
    @classmethod
    def _class_values_are_text(cls, value: object) -> object:
        if isinstance(value, bool):
            # YAML 1.1 reads an unquoted Yes/No/true/false/on/off as a boolean; which spelling was meant is lost.
            raise ValueError(
                "a label class value must be quoted text: YAML reads an unquoted Yes/No/true/false as a boolean; "
                'write it as in the file, e.g. positive: "Yes"'
            )
        return str(value) if isinstance(value, int | float) else value

    @model_validator(mode="after")
    def _fields_match_kind(self) -> LabelDefinition:
        if self.kind == "column":
            if not self.column:
                raise ValueError("label.kind `column` needs `label.column`, the entity table's 0/1 label column")
        elif self.horizon_days is None:
            raise ValueError(f"label.kind `{self.kind}` needs `label.horizon_days` (e.g. 30, 60, 90)")
        if self.kind != "column" and (self.positive is not None or self.negative is not None):
            raise ValueError("label.positive and label.negative are for label.kind `column` (a label column's values)")
        if self.negative is not None and self.positive is None:
            raise ValueError('label.negative needs label.positive, the value that means 1 (e.g. positive: "Yes")')
        if self.positive is not None and self.positive.strip() == (self.negative or "").strip():
            raise ValueError(f"label.positive and label.negative are both {self.positive!r}; give two different values")
        return self

    def class_of(self, value: str) -> int | None:
        """The 0/1 class of one label cell as written (surrounding blanks ignored); None for a blank cell.

        Raises ValueError for a value outside the declared classes (without `positive`: anything but 0 and 1).
        """
        text = value.strip()
        if not text:
            return None
        if self.positive is None:
            try:
                number = float(text)
            except ValueError:
                number = float("nan")
            if number not in (0.0, 1.0):
                raise ValueError(f"{value!r} is not 0 or 1")
            return int(number)
        if text == self.positive.strip():
            return 1
        if self.negative is None or text == self.negative.strip():
            return 0
        raise ValueError(f"{value!r} is neither the positive {self.positive!r} nor the negative {self.negative!r}")


class CutoffSchedule(_Strict):
    """The shape of the cutoff schedule: cutoffs every `every_months` months (or every `every_days` days) from
    `first`, a label horizon's worth of them fully observed for training.

    A run's own date is its scoring cutoff (see `plan`); `as_of` pins the scoring cutoff for one-off exports and
    fixed protocols, and `out_of_time` pins the out-of-time cutoff (it need not lie on the schedule). Entity-level
    datasets need neither.
    """

    first: dt.date | None = None
    every_months: int = Field(1, ge=1)
    # Weekly (7) or fortnightly (14) schedules; overrides `every_months` when set.
    every_days: int | None = Field(None, ge=1)
    # How many matured cutoffs (labels fully observed before the out-of-time cutoff) to train on.
    train_cutoffs: int = Field(6, ge=1)
    out_of_time: dt.date | None = None
    as_of: dt.date | None = None

    def cutoffs_before(self, end: dt.date) -> list[dt.date]:
        """Every scheduled cutoff from `first` up to, not including, `end`."""
        if self.first is None:
            return []
        step = dt.timedelta(days=self.every_days) if self.every_days else relativedelta(months=self.every_months)
        cutoffs, current = [], self.first
        while current < end:
            cutoffs.append(current)
            current += step
        return cutoffs


class Population(_Strict):
    # Only customers with an event in the last N days before the cutoff are scored; None = everyone seen so far.
    active_within_days: int | None = Field(None, ge=1)


class CutoffPlan(_Strict):
    """Which cutoff serves which purpose; training labels all end before the out-of-time cutoff."""

    train: tuple[dt.date, ...]
    out_of_time: dt.date
    scoring: dt.date
    # Labels whose horizon ends after this day are not observed (event data; the scoring cutoff at most).
    observed_until: dt.date | None = None

    @property
    def all(self) -> tuple[dt.date, ...]:
        return (*self.train, self.out_of_time, self.scoring)


class LeakagePolicy(_Strict):
    # A single feature separating the labels better than this (ROC AUC, either direction) is a leakage finding.
    max_single_feature_auc: float = Field(0.95, gt=0.5, le=1.0)
    # Features the dataset owner has checked and accepts despite a finding (named, never a wildcard).
    allowed_features: tuple[str, ...] = ()


class SurvivalModel(_Strict):
    """The time-to-next-event model trained beside the churn model (`churnops.jobs.survival.pipeline`): per customer
    P(event by each horizon) and the median days to the next event, in the lists and from /predict."""

    horizons: tuple[int, ...] = (30, 90, 180)
    # Optuna trials of the boosted hazard model (time folds inside the training period).
    trials: int = Field(10, ge=1, le=500)
    # The event type that ends a duration (e.g. `purchase`); None: `label.event_type`, or any event.
    event_type: str | None = None

    @field_validator("horizons")
    @classmethod
    def _stored_horizons(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        unknown = [h for h in value if h not in SURVIVAL_HORIZONS_DAYS]
        if not value or unknown:
            raise ValueError(
                f"survival.horizons {list(value)}: each must be one of {list(SURVIVAL_HORIZONS_DAYS)} days (the "
                "list columns p_buy_<days>d), at least one"
            )
        return tuple(sorted(set(value)))


class DatasetContract(_Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")
    description: str = ""
    # None = entity-level data (one row per customer, a label column, no event timestamps).
    events: EventSource | None = None
    entities: EntitySource | None = None
    label: LabelDefinition
    cutoffs: CutoffSchedule = CutoffSchedule()
    population: Population = Population()
    leakage: LeakagePolicy = LeakagePolicy()
    # Expected value and the campaign list (churnops/value_contract.py); None: churn scores only.
    value: ValueSection | None = None
    # Optional: a survival model trained and scored beside the churn model (event data only).
    survival: SurvivalModel | None = None
    # The directory relative source paths resolve against; set when loading.
    base_dir: Path | None = None

    @property
    def model_name(self) -> str:
        return f"churnops-{self.name}"

    @property
    def value_model_name(self) -> str:
        return f"{self.model_name}-value"

    @property
    def survival_model_name(self) -> str:
        return f"{self.model_name}-survival"

    @property
    def has_event_time(self) -> bool:
        """False for entity-level data: no out-of-time validation is possible, training uses a stratified holdout."""
        return self.events is not None

    @property
    def validation(self) -> Literal["out_of_time", "stratified_holdout"]:
        return "out_of_time" if self.has_event_time else "stratified_holdout"

    @model_validator(mode="after")
    def _sources_match_label(self) -> DatasetContract:
        if self.events is None:
            if self.entities is None:
                raise ValueError(f"dataset {self.name!r}: give `events`, `entities` or both")
            if self.label.kind != "column":
                raise ValueError(
                    f"dataset {self.name!r} has no event log, so a `{self.label.kind}` label cannot be derived; "
                    "use label.kind `column` with the entity table's label column"
                )
        elif self.label.kind == "column":
            raise ValueError(
                f"dataset {self.name!r}: label.kind `column` is for entity-level data without an event log; "
                "for event data use `churn` or `propensity`"
            )
        if self.events is not None and self.label.event_type is not None and self.events.event_type is None:
            raise ValueError(f"dataset {self.name!r}: label.event_type needs events.event_type (the type column)")
        if self.events is not None and self.cutoffs.first is None:
            raise ValueError(
                f"dataset {self.name!r}: event data needs `cutoffs.first`, the first training cutoff (e.g. the first "
                "month with a few hundred customers)"
            )
        if self.value is not None:
            self._check_value_section()
        if self.survival is not None:
            self._check_survival(self.survival)
        if self.cutoffs.as_of is not None:
            self.plan()  # a pinned date: refuse a schedule that cannot hold train + out-of-time cutoffs right away
        return self

    def _check_value_section(self) -> None:
        if self.events is None:
            raise ValueError(
                f"dataset {self.name!r}: the `value` section needs an event log with an amount per event "
                "(`events.amount`); entity-level data has none"
            )
        if self.value is not None and self.value.event_type is not None and self.events.event_type is None:
            raise ValueError(f"dataset {self.name!r}: value.event_type needs events.event_type (the type column)")

    @model_serializer(mode="wrap")
    def _dump_without_absent_sections(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # A contract without the optional model sections dumps exactly as before they existed: the snapshot key
        # digests the dump, so adding them to the code does not rebuild every snapshot.
        dumped: dict[str, Any] = handler(self)
        for section in ("value", "survival"):
            if getattr(self, section) is None:
                dumped.pop(section, None)
        return dumped

    def _check_survival(self, survival: SurvivalModel) -> None:
        if self.events is None:
            raise ValueError(f"dataset {self.name!r}: `survival` needs an event log (time to the next event)")
        if survival.event_type is not None and self.events.event_type is None:
            raise ValueError(f"dataset {self.name!r}: survival.event_type needs events.event_type (the type column)")

    @property
    def survival_event_type(self) -> str | None:
        """The event type that ends a survival duration (None: any event)."""
        if self.survival is None:
            return None
        return self.survival.event_type or self.label.event_type

    def resolve(self, path: str) -> Path:
        candidate = Path(path).expanduser()
        if candidate.is_absolute() or self.base_dir is None:
            return candidate
        return self.base_dir / candidate

    def plan(self, run_date: dt.date | None = None, observed_until: dt.date | None = None) -> CutoffPlan:
        """The cutoffs a run on `run_date` trains on, evaluates out of time, and scores.

        The scoring cutoff is the run's date (or the pinned `as_of`). A cutoff's label counts as observed when its
        horizon has passed by the scoring cutoff and by `observed_until` (the day after the last day of data, when
        known): data that has not arrived yet is never read as "no purchase". The out-of-time cutoff is the latest
        observed cutoff (or the pinned one); training uses the cutoffs whose labels end before it.
        Entity-level data has one date for all three roles; training then splits it with a stratified holdout.
        """
        scoring = self.cutoffs.as_of or run_date
        if self.label.horizon_days is None:
            day = scoring or dt.datetime.now(dt.UTC).date()
            return CutoffPlan(train=(day,), out_of_time=day, scoring=day)
        if scoring is None:
            raise ValueError(
                f"dataset {self.name!r}: a run of event data needs a run date (its scoring cutoff), or a pinned "
                "`cutoffs.as_of`"
            )
        observed = min(scoring, observed_until) if observed_until else scoring
        horizon = dt.timedelta(days=self.label.horizon_days)
        if self.cutoffs.out_of_time is not None:
            out_of_time = self.cutoffs.out_of_time
            if out_of_time + horizon > observed:
                raise ValueError(
                    f"dataset {self.name!r}: the out-of-time cutoff {out_of_time} plus the {self.label.horizon_days}-"
                    f"day horizon ends after the observed data ({observed}); its labels would be incomplete"
                )
            matured = [c for c in self.cutoffs.cutoffs_before(scoring) if c < out_of_time]
        else:
            matured = [c for c in self.cutoffs.cutoffs_before(scoring) if c + horizon <= observed]
            if not matured:
                raise ValueError(
                    f"dataset {self.name!r}: no cutoff between {self.cutoffs.first} and {observed} has a fully "
                    f"observed {self.label.horizon_days}-day label yet; run on a later date or move "
                    "`cutoffs.first` earlier"
                )
            out_of_time = matured[-1]
        trainable = [c for c in matured if c + horizon <= out_of_time]
        if not trainable:
            raise ValueError(
                f"dataset {self.name!r}: no training cutoff has labels that end before the out-of-time cutoff "
                f"{out_of_time}; run on a later date, move `cutoffs.first` earlier or shorten the horizon"
            )
        return CutoffPlan(
            train=tuple(trainable[-self.cutoffs.train_cutoffs :]),
            out_of_time=out_of_time,
            scoring=scoring,
            observed_until=observed,
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
            raise FileNotFoundError(
                f"no dataset named {name_or_path!r}; built-in datasets: {known}, or give a .yaml path"
            )
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


def bronze_dir(settings: Settings, dataset: str) -> Path:
    """The validated (bronze) copy of a dataset's event log, its quarantine and its ingestion report."""
    return settings.home / "bronze" / dataset
