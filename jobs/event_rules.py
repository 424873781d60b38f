"""The row rules of ingestion: one raw source file becomes accepted bronze rows and quarantined raw rows.

Every row read ends up in exactly one place: accepted (in the platform's column names, typed) or quarantined (the
raw values as read, the 1-based source row and every rule the row broke), so read = accepted + quarantined. A file
that cannot be read at all raises `IngestionError` naming the file and the cause.

Rules, in the order they are reported: `missing_entity_key`, `missing_timestamp`, `unparseable_timestamp`,
`future_timestamp`, `missing_amount`, `non_numeric_amount`, `negative_amount` (unless the contract allows them),
`missing_event_type` (when the contract names a type column), and `exact_duplicate` (unless the contract keeps
duplicates): a row identical in every column to an earlier valid row of the same file, or an event identical in the
platform's columns (customer, timestamp, type, amount) to one another source file already put in bronze.

A quarantined row's reason names the source column each rule looked at, as the file spells it
(`unparseable_timestamp(InvoiceDate)`); the counts per file are by rule. An event time is a date written in digits:
a relative word that pandas would read as the moment of ingestion ("now", "today") is an unparseable timestamp.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from churnops.bronze import AMOUNT, EVENT_DAY, EVENT_TIME, EVENT_TYPE, REASON, SOURCE_ROW
from churnops.dataset import EventSource
from churnops.features import ENTITY_ID

RULES = (
    "missing_entity_key",
    "missing_timestamp",
    "unparseable_timestamp",
    "future_timestamp",
    "missing_amount",
    "non_numeric_amount",
    "negative_amount",
    "missing_event_type",
    "exact_duplicate",
)
REASON_SEPARATOR = ";"
# What makes two events the same event across source files: the platform's columns, as typed in bronze.
EVENT_IDENTITY = [ENTITY_ID, EVENT_TIME, EVENT_TYPE, AMOUNT]

# Given the event days a file's valid rows fall on, the events other source files already put in bronze on those
# days (EVENT_IDENTITY columns).
EarlierEvents = Callable[[list[dt.date]], pd.DataFrame]


class IngestionError(RuntimeError):
    """A source cannot be ingested (unreadable, empty, or missing a required column); the message names it."""


@dataclass(frozen=True)
class ValidatedFile:
    """One source file split by the rules, with its reconciled counts."""

    rows_read: int
    accepted: pd.DataFrame
    quarantine: pd.DataFrame
    quarantined_by_reason: dict[str, int]

    @property
    def reconciles(self) -> bool:
        return self.rows_read == len(self.accepted) + len(self.quarantine)


def read_source(path: Path, fmt: str) -> pd.DataFrame:
    """Read the raw file as it is (CSV: every value as text, so bad numbers and dates can be reported)."""
    if not path.exists():
        raise IngestionError(
            f"cannot ingest {path}: the file does not exist (for built-in data run `churnops generate`)"
        )
    try:
        if fmt == "csv":
            return pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""], skipinitialspace=True)
        return pd.read_parquet(path)
    except Exception as error:  # noqa: BLE001 - any reader failure means the same thing: unreadable, write nothing
        raise IngestionError(
            f"cannot ingest {path}: not a readable {fmt} file ({type(error).__name__}: {error}); nothing was written"
        ) from error


def validate_file(
    path: Path, source: EventSource, future_after: dt.datetime, earlier_events: EarlierEvents | None = None
) -> ValidatedFile:
    """Read one source file and split it by the rules; refuse an empty or header-only file."""
    raw = read_source(path, source.format)
    if raw.empty:
        raise empty_file_error(path)
    try:
        accepted, quarantine = validate_events(raw, source, future_after, earlier_events)
    except IngestionError as error:
        raise IngestionError(f"cannot ingest {path}: {error}") from error
    # A reason is `rule(column)` or `rule`; rule names hold no "(" (column names may hold anything).
    rules = (
        quarantine[REASON].str.split(REASON_SEPARATOR).explode().str.split("(", n=1).str[0] if len(quarantine) else None
    )
    counts = rules.value_counts() if rules is not None else pd.Series()
    return ValidatedFile(
        rows_read=len(raw),
        accepted=accepted,
        quarantine=quarantine,
        quarantined_by_reason={rule: int(counts.get(rule, 0)) for rule in RULES if counts.get(rule, 0)},
    )


def rule_columns(source: EventSource) -> dict[str, str | None]:
    """Every rule, in reporting order, with the source column it judges (None: the whole row)."""
    return {
        "missing_entity_key": source.entity_key,
        "missing_timestamp": source.timestamp,
        "unparseable_timestamp": source.timestamp,
        "future_timestamp": source.timestamp,
        "missing_amount": source.amount,
        "non_numeric_amount": source.amount,
        "negative_amount": source.amount,
        "missing_event_type": source.event_type,
        "exact_duplicate": None,
    }


def rule_reasons(source: EventSource) -> dict[str, str]:
    """Every rule, in reporting order, with the reason a quarantined row gets for it: `rule(column)` or `rule`.
    Both engines (here and `churnops.jobs.ingest_spark`) write these texts, joined by `REASON_SEPARATOR`."""
    return {rule: f"{rule}({column})" if column else rule for rule, column in rule_columns(source).items()}


def required_columns(source: EventSource) -> list[str]:
    return [source.entity_key, source.timestamp, source.amount] + ([source.event_type] if source.event_type else [])


def missing_columns_error(missing: list[str], present: list[str]) -> IngestionError:
    return IngestionError(f"the source has no column(s) {missing} named in the dataset contract; it has {present}")


def empty_file_error(path: Path) -> IngestionError:
    # A header and no rows is a broken export, not "no customers did anything": accepting it would replace a
    # re-delivered file's rows with nothing.
    return IngestionError(
        f"cannot ingest {path}: it has no rows (an empty or header-only file); nothing was written and the rows "
        "of its previous delivery, if any, are kept"
    )


def _is_missing(values: pd.Series) -> np.ndarray:
    if pd.api.types.is_object_dtype(values) or pd.api.types.is_string_dtype(values):
        return (values.isna() | (values.astype("string").str.strip() == "")).to_numpy(dtype=bool)
    return values.isna().to_numpy(dtype=bool)


def parse_timestamps(values: pd.Series) -> pd.Series:
    """Parse to naive UTC timestamps; unparseable values become NaT."""
    if pd.api.types.is_datetime64_any_dtype(values):
        parsed = values if values.dt.tz is None else values.dt.tz_convert("UTC").dt.tz_localize(None)
    else:
        text = values.astype("string").str.strip()
        # pandas reads "now" and "today" as the current time even with an ISO 8601 format: a date starts with a digit.
        text = text.where(text.str.match(r"\d").fillna(False).astype(bool))
        parsed = pd.to_datetime(text, errors="coerce", format="ISO8601", utc=True).dt.tz_localize(None)
    return parsed.astype("datetime64[us]")


def _typed_events(raw: pd.DataFrame, source: EventSource) -> pd.DataFrame:
    """Every raw row in the platform's columns and types (broken values become NA; the rules look at those)."""
    timestamps = parse_timestamps(raw[source.timestamp])
    return pd.DataFrame(
        {
            ENTITY_ID: raw[source.entity_key].astype("string").str.strip(),
            EVENT_TIME: timestamps,
            EVENT_DAY: timestamps.dt.normalize().dt.date,
            EVENT_TYPE: (
                raw[source.event_type].astype("string").str.strip()
                if source.event_type
                else pd.Series(pd.NA, index=raw.index, dtype="string")
            ),
            AMOUNT: pd.to_numeric(raw[source.amount], errors="coerce").astype("float64"),
        }
    )


def _seen_in_other_files(typed: pd.DataFrame, candidates: np.ndarray, earlier_events: EarlierEvents) -> np.ndarray:
    """Rows among `candidates` whose event another source file already put in bronze."""
    seen = np.zeros(len(typed), dtype=bool)
    rows = typed.loc[candidates, EVENT_IDENTITY + [EVENT_DAY]]
    if rows.empty:
        return seen
    known = earlier_events(sorted(set(rows[EVENT_DAY])))
    if known.empty:
        return seen
    known = known[EVENT_IDENTITY].astype(rows[EVENT_IDENTITY].dtypes.to_dict()).drop_duplicates()
    matched = rows[EVENT_IDENTITY].reset_index().merge(known, on=EVENT_IDENTITY, how="inner")["index"]
    seen[matched.to_numpy()] = True
    return seen


def validate_events(
    raw: pd.DataFrame,
    source: EventSource,
    future_after: dt.datetime,
    earlier_events: EarlierEvents | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split raw events into (accepted rows in bronze columns, quarantined raw rows with their reasons)."""
    missing_columns = [c for c in required_columns(source) if c not in raw.columns]
    if missing_columns:
        raise missing_columns_error(missing_columns, list(raw.columns))
    raw = raw.reset_index(drop=True)
    typed = _typed_events(raw, source)
    broken: dict[str, np.ndarray] = {}

    broken["missing_entity_key"] = _is_missing(raw[source.entity_key])
    ts_missing = _is_missing(raw[source.timestamp])
    broken["missing_timestamp"] = ts_missing
    broken["unparseable_timestamp"] = ~ts_missing & typed[EVENT_TIME].isna().to_numpy()
    broken["future_timestamp"] = (typed[EVENT_TIME] > pd.Timestamp(future_after)).fillna(False).to_numpy(dtype=bool)

    amount_missing = _is_missing(raw[source.amount])
    amounts = typed[AMOUNT]
    broken["missing_amount"] = amount_missing
    broken["non_numeric_amount"] = ~amount_missing & ~np.isfinite(amounts.to_numpy())
    broken["negative_amount"] = (
        np.zeros(len(raw), dtype=bool) if source.allow_negative_amounts else (amounts < 0).fillna(False).to_numpy()
    )
    broken["missing_event_type"] = (
        _is_missing(raw[source.event_type]) if source.event_type else np.zeros(len(raw), dtype=bool)
    )

    invalid = np.logical_or.reduce(list(broken.values()))
    duplicated = np.zeros(len(raw), dtype=bool)
    if source.exact_duplicates == "quarantine":
        # Among otherwise valid rows only: a broken row is already set aside, and must not hide a good twin.
        valid_index = np.flatnonzero(~invalid)
        duplicated[valid_index] = raw.iloc[valid_index].duplicated(keep="first").to_numpy()
        if earlier_events is not None:
            duplicated |= _seen_in_other_files(typed, ~invalid & ~duplicated, earlier_events)
    broken["exact_duplicate"] = duplicated
    rejected = invalid | duplicated

    reasons = np.full(len(raw), "", dtype=object)
    for rule, reason in rule_reasons(source).items():
        mask = broken[rule]
        reasons[mask] = np.where(reasons[mask] == "", reason, reasons[mask] + REASON_SEPARATOR + reason)

    quarantine = raw.loc[rejected].astype("string")
    quarantine.insert(0, REASON, reasons[rejected].astype(str))
    quarantine.insert(1, SOURCE_ROW, np.flatnonzero(rejected) + 1)  # 1-based data row (after the header)
    return typed.loc[~rejected].reset_index(drop=True), quarantine.reset_index(drop=True)
