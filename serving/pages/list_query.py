"""The current scoring list as the list page asks for it: filters read from the query string, and the SQL that pages
through a 1M-row list on the server.

Paging is by keyset, not OFFSET: the next page starts after the last (score, customer_id) shown, so page 20,000 of a
million rows costs what page 1 costs (an index range scan on `scores_list_by_score_idx`, migration 0004). A list with
the value model's columns can be sorted by expected saved value instead: its keyset is the campaign rank (1 = the
highest expected saved value, unique in a list), read without an index (see docs/pages.md). Segment
filters read the customer's published attributes (churnops.online_features, one primary-key probe per candidate row);
the attributes shown beside a page's rows are read for those rows only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from psycopg2 import sql

PAGE_ROWS = 50
# Counting the matches of a filter stops here: an exact count of a million joined rows would cost seconds, and a
# person deciding a campaign needs "more than 10,000", not the exact figure.
COUNT_CAP = 10_000
# With a segment filter every candidate row costs a probe of its attributes: 500 matches of a segment that holds one
# customer in twelve already cost 6,000 probes (1,000 took 225 ms on a 1M list, docs/benchmarks/pages.md).
SEGMENT_COUNT_CAP = 500
# The orders a list can be shown in: churn risk (every list), expected saved value (lists with value columns).
SORTS = ("risk", "saved_value")


class PageInputError(ValueError):
    """A query-string value the page cannot use; `field` names the form field."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(f"{field_name}: {message}")
        self.field = field_name
        self.message = message


@dataclass(frozen=True)
class Cursor:
    """Where a page starts or ends: its sort key (the score in (score DESC, customer_id ASC) order, the campaign
    rank in expected saved value order) and customer."""

    key: float
    customer_id: str

    def encode(self) -> str:
        return f"{self.key!r}:{self.customer_id}"

    @classmethod
    def decode(cls, field_name: str, text: str) -> Cursor:
        score_text, sep, customer_id = text.partition(":")
        try:
            score = float(score_text)
        except ValueError:
            score = math.nan
        if not sep or not math.isfinite(score):
            raise PageInputError(field_name, "not a page position of this list: go back to the first page")
        return cls(score, customer_id)


@dataclass(frozen=True)
class ListFilters:
    """What a person asked of the list: bands, segment values, a score range and a budget."""

    bands: tuple[str, ...] = ()
    segments: Mapping[str, str] = field(default_factory=dict)
    score_min: float | None = None
    score_max: float | None = None
    budget_count: int | None = None
    budget_money: float | None = None
    cost_per_contact: float | None = None
    sort: str = "risk"

    @property
    def count_cap(self) -> int:
        return SEGMENT_COUNT_CAP if self.segments else COUNT_CAP

    @property
    def selected_count(self) -> int | None:
        """How many customers the budget selects from the top of the filtered list (None: no budget)."""
        counts = [self.budget_count] if self.budget_count is not None else []
        if self.budget_money is not None and self.cost_per_contact is not None:
            counts.append(math.floor(self.budget_money / self.cost_per_contact))
        return min(counts) if counts else None

    def query_items(self) -> list[tuple[str, str]]:
        """The filters as query-string pairs, for the paging and export links."""
        items = [("band", band) for band in self.bands]
        items += [(f"segment_{name}", value) for name, value in self.segments.items()]
        for name in ("score_min", "score_max", "budget_count", "budget_money", "cost_per_contact"):
            value = getattr(self, name)
            if value is not None:
                items.append((name, str(value)))
        if self.sort != "risk":
            items.append(("sort", self.sort))
        return items


def _number(params: Mapping[str, str], name: str, *, low: float, high: float | None = None) -> float | None:
    text = params.get(name, "").strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        raise PageInputError(name, f"{text[:40]!r} is not a number") from None
    if not math.isfinite(value) or value < low or (high is not None and value > high):
        upper = f" and at most {high:g}" if high is not None else ""
        raise PageInputError(name, f"must be at least {low:g}{upper}, got {text[:40]}")
    return value


def parse_filters(
    params: Mapping[str, str], bands: Sequence[str], band_choices: Sequence[str], segment_columns: Sequence[str]
) -> ListFilters:
    """The filters of a list request; a value the page cannot use raises PageInputError naming its field."""
    unknown = [band for band in bands if band not in band_choices]
    if unknown:
        raise PageInputError("band", f"unknown risk band {unknown[0][:40]!r}; choose from {', '.join(band_choices)}")
    segments = {}
    for column in segment_columns:
        value = params.get(f"segment_{column}", "").strip()
        if value:
            segments[column] = value
    score_min = _number(params, "score_min", low=0, high=1)
    score_max = _number(params, "score_max", low=0, high=1)
    if score_min is not None and score_max is not None and score_min > score_max:
        raise PageInputError("score_min", f"the lowest score {score_min:g} is above the highest {score_max:g}")
    budget_count = _number(params, "budget_count", low=1)
    if budget_count is not None and budget_count != int(budget_count):
        raise PageInputError("budget_count", "must be a whole number of customers")
    budget_money = _number(params, "budget_money", low=0)
    cost = _number(params, "cost_per_contact", low=0)
    if (budget_money is None) != (cost is None):
        missing = "cost_per_contact" if cost is None else "budget_money"
        raise PageInputError(missing, "a money budget needs both the budget and the cost of one contact")
    if cost == 0:
        raise PageInputError("cost_per_contact", "must be more than 0")
    sort = params.get("sort", "").strip() or "risk"
    if sort not in SORTS:
        raise PageInputError("sort", f"unknown order {sort[:40]!r}; choose from {', '.join(SORTS)}")
    return ListFilters(
        bands=tuple(dict.fromkeys(bands)),
        segments=segments,
        score_min=score_min,
        score_max=score_max,
        budget_count=int(budget_count) if budget_count is not None else None,
        budget_money=budget_money,
        cost_per_contact=cost,
        sort=sort,
    )


def filtered_list_sql(
    dataset: str,
    logical_date: object,
    filters: ListFilters,
    *,
    after: Cursor | None = None,
    before: Cursor | None = None,
    for_count: bool = False,
    value_columns: bool = False,
) -> tuple[sql.Composed, list[object]]:
    """SELECT of the list's rows matching `filters`, in page order (or reversed when paging back from `before`);
    the caller appends LIMIT. Columns: customer_id, score, risk_band, risk_decile, decision, model_version, cutoff,
    then with `value_columns` expected_value, expected_saved_value, campaign_rank, in_campaign (with `for_count`,
    only a constant)."""
    conditions = [sql.SQL("s.dataset = %s AND s.list_kind = 'regular' AND s.logical_date = %s")]
    args: list[object] = [dataset, logical_date]
    if filters.bands:
        conditions.append(sql.SQL("s.risk_band = ANY(%s)"))
        args.append(list(filters.bands))
    if filters.score_min is not None:
        conditions.append(sql.SQL("s.score >= %s"))
        args.append(filters.score_min)
    if filters.score_max is not None:
        conditions.append(sql.SQL("s.score <= %s"))
        args.append(filters.score_max)
    if filters.segments:
        # A scalar subquery, not a join: PostgreSQL then walks the list in score order and probes each customer's
        # attributes by primary key until the page is full. As a join it hashed all published customers first
        # (1.7 s on a million).
        conditions.append(
            sql.SQL(
                "(SELECT ARRAY[{keys}] FROM churnops.online_features o"
                " WHERE o.dataset = s.dataset AND o.customer_id = s.customer_id) = %s::text[]"
            ).format(
                keys=sql.SQL(", ").join(sql.SQL("o.features ->> {}").format(sql.Literal(c)) for c in filters.segments)
            )
        )
        args.append(list(filters.segments.values()))
    by_value = filters.sort == "saved_value"
    if by_value:
        # The campaign rank is unique in a list: it alone says where a page starts.
        if after is not None:
            conditions.append(sql.SQL("s.campaign_rank > %s"))
            args.append(after.key)
        if before is not None:
            conditions.append(sql.SQL("s.campaign_rank < %s"))
            args.append(before.key)
    else:
        if after is not None:
            # `score <=` first: the index range condition; the OR alone would make PostgreSQL scan from the top.
            conditions.append(sql.SQL("s.score <= %s AND (s.score < %s OR s.customer_id > %s)"))
            args += [after.key, after.key, after.customer_id]
        if before is not None:
            conditions.append(sql.SQL("s.score >= %s AND (s.score > %s OR s.customer_id < %s)"))
            args += [before.key, before.key, before.customer_id]
    listed = "s.customer_id, s.score, s.risk_band, s.risk_decile, s.decision, s.model_version, s.cutoff"
    if value_columns:
        listed += ", s.expected_value, s.expected_saved_value, s.campaign_rank, s.in_campaign"
    columns = sql.SQL("1" if for_count else listed)
    if by_value:
        order = sql.SQL("s.campaign_rank DESC" if before is not None else "s.campaign_rank ASC")
    else:
        order = sql.SQL("s.score ASC, s.customer_id DESC" if before is not None else "s.score DESC, s.customer_id ASC")
    query = sql.SQL("SELECT {columns} FROM churnops.scores s WHERE {conditions} ORDER BY {order}").format(
        columns=columns, conditions=sql.SQL(" AND ").join(conditions), order=order
    )
    return query, args
