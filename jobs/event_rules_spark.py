"""The row rules of ingestion as Spark column expressions: the same rules, in the same order, with the same reason
texts as `churnops.jobs.event_rules` (the texts come from there: `rule_reasons`), evaluated on the executors.

What each rule means is documented once, in `jobs/event_rules.py`; this module only says how each is computed on a
Spark frame whose raw columns are as read (CSV: every value text; Parquet: its own types). Where pandas and Spark
parse differently the pandas reading is the reference and the difference is named here:

- A text event time is parsed by Spark's cast (ISO 8601 dates, `T` or space, optional fraction and `Z`/offset,
  converted to UTC), and like pandas only when it starts with a digit. ISO 8601 *basic* forms without separators
  (`20240105T1000`) parse in pandas but not here.
- A text amount is parsed by Spark's cast to double; both engines read `NaN`/`Infinity` as non-numeric amounts.

Both engines treat a blank text cell (nothing but whitespace) and a float NaN as missing.
"""

from __future__ import annotations

import datetime as dt

from pyspark.sql import Column
from pyspark.sql import functions as F

from churnops.bronze import AMOUNT, EVENT_DAY, EVENT_TIME, EVENT_TYPE
from churnops.dataset import EventSource
from churnops.features import ENTITY_ID
from churnops.jobs.event_rules import REASON_SEPARATOR, RULES, rule_reasons

_TEXT_TYPES = ("string",)
_FLOAT_TYPES = ("double", "float")
_NUMERIC_PREFIXES = ("tinyint", "smallint", "int", "bigint", "float", "double", "decimal")
# Python's str.strip() removes whitespace at both ends; Java's \s is the same set for the characters that occur
# in exports (space, tab, newlines, form feed, vertical tab).
_BLANK = r"^\s*$"
_EDGE_WHITESPACE = r"^\s+|\s+$"


def strip(column: Column) -> Column:
    return F.regexp_replace(column, _EDGE_WHITESPACE, "")


def is_missing(column: Column, dtype: str) -> Column:
    """Never null: a null, a blank text cell, or a float NaN."""
    if dtype in _TEXT_TYPES:
        return column.isNull() | column.rlike(_BLANK)
    if dtype in _FLOAT_TYPES:
        return column.isNull() | F.isnan(column)
    return column.isNull()


def event_time(column: Column, dtype: str) -> Column:
    """Naive UTC microsecond timestamps (the session's time zone is UTC); unparseable values become null."""
    if dtype == "timestamp_ntz":
        return column
    if dtype in ("timestamp", "date"):
        return column.cast("timestamp_ntz")
    text = strip(column.cast("string"))
    # A date starts with a digit: pandas would read "now" and "today" as the moment of ingestion.
    return F.when(text.rlike(r"^\d"), text.try_cast("timestamp").cast("timestamp_ntz"))


def amount(column: Column, dtype: str) -> Column:
    if dtype.startswith(_NUMERIC_PREFIXES):
        return column.cast("double")
    return column.cast("string").try_cast("double")


def typed_columns(dtypes: dict[str, str], source: EventSource) -> dict[str, Column]:
    """Every raw row in the platform's columns and types (broken values become null; the rules look at those)."""
    timestamps = event_time(F.col(source.timestamp), dtypes[source.timestamp])
    return {
        ENTITY_ID: strip(F.col(source.entity_key).cast("string")),
        EVENT_TIME: timestamps,
        EVENT_DAY: F.to_date(timestamps),
        EVENT_TYPE: strip(F.col(source.event_type).cast("string")) if source.event_type else F.lit(None).cast("string"),
        AMOUNT: amount(F.col(source.amount), dtypes[source.amount]),
    }


def broken_columns(
    dtypes: dict[str, str], source: EventSource, future_after: dt.datetime, times: Column, amounts: Column
) -> dict[str, Column]:
    """Every rule but `exact_duplicate` (it needs the other rows: `churnops.jobs.ingest_spark`) as a non-null
    boolean over the raw columns and the typed ones (`typed_columns`, already selected as `times` and `amounts`)."""
    ts_missing = is_missing(F.col(source.timestamp), dtypes[source.timestamp])
    amount_missing = is_missing(F.col(source.amount), dtypes[source.amount])
    infinite = F.abs(amounts) == F.lit(float("inf"))
    cutoff = F.lit(future_after.isoformat(sep=" ")).cast("timestamp_ntz")
    return {
        "missing_entity_key": is_missing(F.col(source.entity_key), dtypes[source.entity_key]),
        "missing_timestamp": ts_missing,
        "unparseable_timestamp": ~ts_missing & times.isNull(),
        "future_timestamp": F.coalesce(times > cutoff, F.lit(False)),
        "missing_amount": amount_missing,
        "non_numeric_amount": ~amount_missing & (amounts.isNull() | F.isnan(amounts) | infinite),
        "negative_amount": F.lit(False) if source.allow_negative_amounts else F.coalesce(amounts < 0, F.lit(False)),
        "missing_event_type": (
            is_missing(F.col(source.event_type), dtypes[source.event_type]) if source.event_type else F.lit(False)
        ),
    }


def day_number(day: Column) -> Column:
    """A date as days since 1970-01-01 (a long)."""
    return F.datediff(day, F.lit(dt.date(1970, 1, 1))).cast("long")


def rule_flag(rule: str) -> str:
    """The internal column holding whether a row broke `rule`."""
    return f"__broke_{rule}"


def reasons_column(source: EventSource) -> Column:
    """Every rule the row broke, in reporting order, joined as the pandas path joins them ("" when none)."""
    reasons = rule_reasons(source)
    return F.concat_ws(REASON_SEPARATOR, *[F.when(F.col(rule_flag(rule)), F.lit(reasons[rule])) for rule in RULES])
