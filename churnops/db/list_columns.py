"""A scoring list's optional columns: the value model's (migration 0012) and the survival model's (migration 0013).

A list has each group whole or not at all (a dataset with a `value` or `survival` section); they are checked on
write and parsed on read here, so `churnops.db.scores` only moves them. A list without a group reads back exactly as
before that group's migration: the group's columns are absent from the frame, not NULL.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from psycopg2 import sql

from churnops.survival_columns import MEDIAN_BEYOND_HORIZON, MEDIAN_DAYS, survival_list_columns
from churnops.value_contract import VALUE_LIST_COLUMNS

if TYPE_CHECKING:
    from psycopg2.extensions import connection as Connection

SURVIVAL_LIST_COLUMNS = survival_list_columns()
OPTIONAL_LIST_COLUMNS = (*VALUE_LIST_COLUMNS, *SURVIVAL_LIST_COLUMNS)


def validated_optional_columns(scores: pd.DataFrame) -> dict[str, Any]:
    """The optional columns `scores` has, checked, as arrays to write ({} for a churn-only list)."""
    return _value_rows(scores) | _survival_rows(scores)


def _value_rows(scores: pd.DataFrame) -> dict[str, Any]:
    present = [column for column in VALUE_LIST_COLUMNS if column in scores.columns]
    if not present:
        return {}
    if len(present) != len(VALUE_LIST_COLUMNS):
        missing = [column for column in VALUE_LIST_COLUMNS if column not in present]
        raise ValueError(f"score frame has value columns {present} but lacks {missing}; a list has all four or none")
    expected = scores["expected_value"].to_numpy(dtype=np.float64)
    if not np.isfinite(expected).all() or (expected < 0).any():
        raise ValueError("score frame: expected_value must be finite and not negative")
    saved = scores["expected_saved_value"].to_numpy(dtype=np.float64)
    if not np.isfinite(saved).all():
        raise ValueError("score frame: expected_saved_value must be finite")
    rank = scores["campaign_rank"]
    if not pd.api.types.is_integer_dtype(rank) or (rank < 1).any():
        raise ValueError("score frame: campaign_rank must be an integer from 1 (the best expected saved value)")
    if scores["in_campaign"].dtype != bool:
        raise ValueError(f"score frame: in_campaign must be boolean, got dtype {scores['in_campaign'].dtype}")
    return {
        "expected_value": expected,
        "expected_saved_value": saved,
        "campaign_rank": rank.to_numpy(),
        "in_campaign": scores["in_campaign"].to_numpy(),
    }


def _survival_rows(scores: pd.DataFrame) -> dict[str, Any]:
    """The survival columns the list has, checked: probabilities in [0, 1], a median only when not flagged."""
    rows: dict[str, Any] = {}
    for column in (c for c in SURVIVAL_LIST_COLUMNS if c in scores.columns):
        if column == MEDIAN_BEYOND_HORIZON:
            if scores[column].dtype != bool:
                raise ValueError(f"score frame: {column} must be boolean, got dtype {scores[column].dtype}")
            rows[column] = scores[column].to_numpy()
            continue
        values = scores[column].to_numpy(dtype=np.float64)
        finite = values[~np.isnan(values)]
        if column != MEDIAN_DAYS and (len(finite) < len(values) or (finite < 0).any() or (finite > 1).any()):
            raise ValueError(f"score frame: {column} must be a probability in [0, 1] for every customer")
        if column == MEDIAN_DAYS and (finite <= 0).any():
            raise ValueError(f"score frame: {column} must be a positive number of days (or empty)")
        rows[column] = values
    if (MEDIAN_DAYS in rows) != (MEDIAN_BEYOND_HORIZON in rows):
        raise ValueError(f"score frame: {MEDIAN_DAYS} and {MEDIAN_BEYOND_HORIZON} come together")
    return rows


def parsed_optional_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """The optional columns of a list read back as CSV text (an empty cell is NULL): parsed exactly, and dropped
    group by group when the whole list has none."""
    # The median is empty for every customer past the horizon: the flag tells whether the list has the pair.
    empty = {column: (frame[column] == "").all() for column in OPTIONAL_LIST_COLUMNS}
    empty[MEDIAN_DAYS] = empty[MEDIAN_BEYOND_HORIZON]
    for column in OPTIONAL_LIST_COLUMNS:
        cells = frame[column]
        if empty[column]:
            frame = frame.drop(columns=column)
        elif column == "in_campaign":
            frame[column] = cells.map({"t": True, "f": False, "": None}).astype("boolean")
        elif column == MEDIAN_BEYOND_HORIZON:
            frame[column] = cells.map({"t": True, "f": False, "": None})
        elif column == "campaign_rank":
            frame[column] = cells.replace("", None).astype("Int64")
        else:
            # astype parses each cell exactly (to_numeric's fast parser can be one ulp off).
            frame[column] = cells.replace("", "nan").astype(np.float64)
    return frame


def latest_list_rows_of(conn: Connection, dataset: str, customer_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """These customers' value and survival columns in the newest regular list of `dataset`, in one query:
    {customer_id: {"list_date", "value" (None without value columns), "survival" (None without survival columns)}};
    customers not in that list are left out."""
    # One customer (the /predict hot path) by equality: on a list not yet analyzed, `= ANY(...)` made the planner
    # walk the list's score index instead of the customer index (216 ms instead of 0.1 ms on 200,000 rows).
    single = len(customer_ids) == 1
    query = sql.SQL(
        "SELECT s.customer_id, s.logical_date, {columns} FROM churnops.scores s WHERE s.dataset = %s "
        "AND s.list_kind = 'regular' AND {customer} AND s.logical_date = (SELECT max(logical_date) "
        "FROM churnops.score_runs WHERE dataset = %s AND list_kind = 'regular')"
    ).format(
        columns=sql.SQL(", ").join(sql.SQL("s.{}").format(sql.Identifier(c)) for c in OPTIONAL_LIST_COLUMNS),
        customer=sql.SQL("s.customer_id = %s" if single else "s.customer_id = ANY(%s)"),
    )
    with conn.cursor() as cur:
        cur.execute(query, (dataset, customer_ids[0] if single else list(customer_ids), dataset))
        rows = cur.fetchall()
    return {row[0]: _list_row(row[1], dict(zip(OPTIONAL_LIST_COLUMNS, row[2:], strict=True))) for row in rows}


def _list_row(list_date: dt.date, values: dict[str, Any]) -> dict[str, Any]:
    day = list_date.isoformat()
    # Each group is written whole or not at all: its always-set column tells whether the list has it.
    value = {column: values[column] for column in VALUE_LIST_COLUMNS} if values["in_campaign"] is not None else None
    survival = None
    if values[MEDIAN_BEYOND_HORIZON] is not None:
        kept = {c: v for c, v in values.items() if c.startswith("p_buy_") and v is not None}
        survival = kept | {
            MEDIAN_DAYS: values[MEDIAN_DAYS],
            MEDIAN_BEYOND_HORIZON: values[MEDIAN_BEYOND_HORIZON],
            "list_date": day,
        }
    return {"list_date": day, "value": value, "survival": survival}


def latest_survival_of(conn: Connection, dataset: str, customer_id: str) -> dict[str, Any] | None:
    """A customer's survival columns in the newest regular list of `dataset` (with its date), or None when that
    list has no survival values for them (no survival model, or the customer is not in it)."""
    found = latest_list_rows_of(conn, dataset, [customer_id]).get(customer_id)
    return found["survival"] if found else None


def newest_list_has_model_columns(conn: Connection, dataset: str) -> bool:
    """Whether the newest regular list of `dataset` holds value or survival values (for anyone): the API asks this
    once per `serving.reload_interval_seconds` instead of querying every customer of a list that has neither."""
    # Each group's always-set column tells whether the list has the group (see `_list_row`).
    query = sql.SQL(
        "SELECT EXISTS (SELECT 1 FROM churnops.scores s WHERE s.dataset = %s AND s.list_kind = 'regular' "
        "AND s.logical_date = (SELECT max(logical_date) FROM churnops.score_runs WHERE dataset = %s "
        "AND list_kind = 'regular') AND (s.{survival_flag} IS NOT NULL OR s.{value_flag} IS NOT NULL))"
    ).format(survival_flag=sql.Identifier(MEDIAN_BEYOND_HORIZON), value_flag=sql.Identifier("in_campaign"))
    with conn.cursor() as cur:
        cur.execute(query, (dataset, dataset))
        return bool(cur.fetchone()[0])
