"""The Spark job's per-customer feature kernel: every catalog feature for every cutoff, in O(days + cutoffs) per
customer, as an Arrow function Spark runs on groups of whole customers.

The definitions are the SQL aggregates of `churnops.features` (evaluated as written by the DuckDB reference and the
leakage probe, over day buckets joined to cutoffs). Joining each day bucket to every cutoff it informs repeats a
customer's history once per cutoff; here a customer's day buckets are sorted once and, per cutoff and window, the
window is a slice `[lo, hi)` of them found by binary search. Counts are differences of integer prefix sums (exact);
amounts are summed over the slice directly (`np.add.reduceat`), so a value depends only on the customer's own rows
in the window, never on which other customers or days share the group (an incremental build equals a full one).
Tests compare the result with the SQL on every customer and with a brute-force oracle (tests/features/).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from churnops.features import CUTOFF, ENTITY_ID, EWM_HALF_LIFE_DAYS, WINDOWS_DAYS, FeatureSpec, type_column

LABEL_VALUE = "_label"
# Day indices are shifted into the low 32 bits of the (customer, day) search key.
_DAY_OFFSET = 1 << 31


@dataclass(frozen=True)
class KernelPlan:
    """What the kernel needs besides the rows: the cutoffs (as day indices), the contract's fields, the outputs."""

    cutoff_days: tuple[int, ...]
    horizon_days: int
    active_within_days: int | None
    event_types: tuple[str, ...]
    churn_label: bool
    numeric: tuple[str, ...]
    categorical: tuple[str, ...]


def output_schema(plan: KernelPlan) -> str:
    columns = [f"{ENTITY_ID} string", f"{CUTOFF} date", *(f"`{n}` double" for n in plan.numeric)]
    columns += [f"`{n}` string" for n in plan.categorical]
    return ", ".join([*columns, f"{LABEL_VALUE} int"])


def kernel_plan(
    specs: list[FeatureSpec], cutoff_days: list[int], horizon_days: int, active_within_days: int | None, **contract
) -> KernelPlan:
    unknown = [s.name for s in specs if s.name not in _known_names(contract["event_types"])]
    if unknown:
        raise ValueError(f"features without a kernel implementation (jobs/feature_kernel.py): {unknown}")
    return KernelPlan(
        tuple(cutoff_days),
        horizon_days,
        active_within_days,
        tuple(contract["event_types"]),
        contract["churn_label"],
        tuple(s.name for s in specs if s.kind == "numeric"),
        tuple(s.name for s in specs if s.kind == "categorical"),
    )


@functools.cache
def _known_names(event_types: tuple[str, ...]) -> frozenset[str]:
    names = {"amount_std_all", "active_days_90d", "active_days_all", "days_since_last_event"}
    names |= {"days_since_first_event", "gap_days_mean_all", "gap_days_std_all", "gap_days_max_all"}
    names |= {"recency_over_mean_gap", "event_trend_30d", "event_rate_30d_vs_own_norm", "weekend_event_share_all"}
    names |= {f"event_count_ewm_{EWM_HALF_LIFE_DAYS}d", "most_frequent_event_type"}
    for window in WINDOWS_DAYS:
        label = "all" if window is None else f"{window}d"
        names |= {f"event_count_{label}", f"amount_sum_{label}", f"amount_mean_{label}", f"amount_max_{label}"}
    names |= {f"{t}_count_{w}d" for t in event_types for w in (30, 90)}
    return frozenset(names)


class _Slices:
    """One customer's day buckets as a slice of the sorted rows; per cutoff, windows as sub-slices."""

    def __init__(self, customer_codes: np.ndarray, days: np.ndarray) -> None:
        self.days = days
        self.key = (customer_codes.astype(np.int64) << 32) | (days + _DAY_OFFSET)
        change = np.flatnonzero(customer_codes[1:] != customer_codes[:-1]) + 1
        self.start = np.concatenate([[0], change]).astype(np.int64)
        self.end = np.concatenate([change, [len(days)]]).astype(np.int64)
        self.code_base = customer_codes[self.start].astype(np.int64) << 32

    def first_at_or_after(self, day: int) -> np.ndarray:
        """Per customer, the first row dated `day` or later (the customer's end when none)."""
        return np.searchsorted(self.key, self.code_base | (day + _DAY_OFFSET), side="left")


def _prefix(values: np.ndarray) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(values, dtype=np.int64)])


def _range_reduce(ufunc: np.ufunc, values: np.ndarray, lo: np.ndarray, hi: np.ndarray, empty: float) -> np.ndarray:
    """`ufunc` over values[lo:hi] for each pair, left to right; `empty` where the slice is empty."""
    if len(lo) == 0:
        return np.empty(0)
    extended = np.append(values.astype(np.float64), empty)
    bounds = np.empty(2 * len(lo), dtype=np.int64)
    bounds[0::2], bounds[1::2] = lo, hi
    reduced = ufunc.reduceat(extended, bounds)[0::2]
    return np.where(hi > lo, reduced, empty)


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denominator > 0, numerator / np.where(denominator > 0, denominator, 1), np.nan)


def _cutoff_features(plan: KernelPlan, rows: dict[str, np.ndarray], s: _Slices, cutoff: int) -> dict[str, np.ndarray]:
    """Every feature of every customer at one cutoff (day index), and the label's event count."""
    days, start = s.days, s.start
    n, prefix_n = rows["n"], rows["prefix_n"]
    hi = s.first_at_or_after(cutoff)  # rows before `hi`: days_before >= 1

    def count(prefix: np.ndarray, lo: np.ndarray, upto: np.ndarray = hi) -> np.ndarray:
        return (prefix[upto] - prefix[lo]).astype(np.float64)

    out: dict[str, np.ndarray] = {}
    lows = {window: start if window is None else s.first_at_or_after(cutoff - window) for window in WINDOWS_DAYS}
    for window, lo in lows.items():
        label = "all" if window is None else f"{window}d"
        events, total = count(prefix_n, lo), _range_reduce(np.add, rows["amount_sum"], lo, hi, 0.0)
        out[f"event_count_{label}"], out[f"amount_sum_{label}"] = events, total
        out[f"amount_mean_{label}"] = _ratio(total, events)
        out[f"amount_max_{label}"] = _range_reduce(np.maximum, rows["amount_max"], lo, hi, np.nan)
    count_all, sum_all = out["event_count_all"], out["amount_sum_all"]
    sumsq_all = _range_reduce(np.add, rows["amount_sumsq"], start, hi, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        variance = (sumsq_all - sum_all * sum_all / count_all) / (count_all - 1)
    out["amount_std_all"] = np.where(count_all > 1, np.sqrt(np.maximum(variance, 0.0)), np.nan)
    out["active_days_90d"] = (hi - lows[90]).astype(np.float64)
    out["active_days_all"] = (hi - start).astype(np.float64)
    for event_type in plan.event_types:
        prefix = rows[f"prefix_{type_column(event_type)}"]
        for window in (30, 90):
            out[f"{event_type}_count_{window}d"] = count(prefix, lows[window])

    seen = hi > start
    last, first = days[np.maximum(hi - 1, 0)], days[np.minimum(start, len(days) - 1)]
    recency = np.where(seen, cutoff - last, np.nan).astype(np.float64)
    tenure = np.where(seen, cutoff - first, np.nan).astype(np.float64)
    out["days_since_last_event"], out["days_since_first_event"] = recency, tenure
    # Gaps of the event days before the cutoff: their sum telescopes to last - first.
    gaps = (hi - start - 1).astype(np.float64)
    gap_sum = (last - first).astype(np.float64)
    gap_sumsq = count(rows["prefix_gap_sq"], np.minimum(start + 1, hi))
    mean_gap = _ratio(gap_sum, gaps)
    out["gap_days_mean_all"] = mean_gap
    with np.errstate(divide="ignore", invalid="ignore"):
        gap_variance = (gaps * gap_sumsq - gap_sum * gap_sum) / (gaps * (gaps - 1))
    out["gap_days_std_all"] = np.where(gaps > 1, np.sqrt(np.maximum(gap_variance, 0.0)), np.nan)
    out["gap_days_max_all"] = _range_reduce(np.maximum, rows["gap"], np.minimum(start + 1, hi), hi, np.nan)
    out["recency_over_mean_gap"] = _ratio(recency, mean_gap)
    count_30d = out["event_count_30d"]
    count_60d = count(prefix_n, s.first_at_or_after(cutoff - 60), lows[30])
    out["event_trend_30d"] = (count_30d + 1) / (count_60d + 1)
    prior_count = count(prefix_n, start, lows[30])
    with np.errstate(divide="ignore", invalid="ignore"):
        expected = prior_count / (tenure - 30) * 30 + 1
        out["event_rate_30d_vs_own_norm"] = np.where(tenure > 60, (count_30d + 1) / expected, np.nan)
    weights = n * np.power(0.5, (cutoff - days - 1).astype(np.float64) / EWM_HALF_LIFE_DAYS)
    out[f"event_count_ewm_{EWM_HALF_LIFE_DAYS}d"] = _range_reduce(np.add, weights, start, hi, 0.0)
    out["weekend_event_share_all"] = _ratio(count(rows["prefix_weekend"], start), count_all)

    totals = [count(rows[f"prefix_{type_column(t)}"], start) for t in plan.event_types]
    frequent = np.full(len(start), None, dtype=object)
    for i in reversed(range(len(totals))):  # earlier types win ties: they are assigned last
        wins = totals[i] > 0
        for later in totals[i + 1 :]:
            wins &= totals[i] >= later
        frequent[wins] = plan.event_types[i]
    out["most_frequent_event_type"] = frequent

    label_end = s.first_at_or_after(cutoff + plan.horizon_days)
    out[LABEL_VALUE] = count(rows["prefix_n_label"], hi, label_end)
    in_population = seen
    if plan.active_within_days is not None:
        in_population &= recency <= plan.active_within_days
    return {name: values[in_population] for name, values in out.items()} | {"_customers": np.flatnonzero(in_population)}


def compute_group(plan: KernelPlan, table: pa.Table) -> pa.Table:
    """Every (customer, cutoff) row of the customers in `table` (their whole day buckets: customer_id,
    day_index, n, amount_sum, amount_sumsq, amount_max, n_label, n_type_<type>)."""
    table = table.sort_by([(ENTITY_ID, "ascending"), ("day_index", "ascending")])
    customers = table.column(ENTITY_ID).combine_chunks()
    codes = np.asarray(customers.dictionary_encode().indices)
    days = table.column("day_index").to_numpy().astype(np.int64)
    s = _Slices(codes, days)
    n = table.column("n").to_numpy().astype(np.int64)
    rows = {c: table.column(c).to_numpy() for c in ("amount_sum", "amount_sumsq", "amount_max")}
    rows |= {"n": n, "prefix_n": _prefix(n), "prefix_n_label": _prefix(table.column("n_label").to_numpy())}
    for event_type in plan.event_types:
        column = type_column(event_type)
        rows[f"prefix_{column}"] = _prefix(table.column(column).to_numpy())
    rows["prefix_weekend"] = _prefix(np.where((days + 3) % 7 >= 5, n, 0))
    gap = np.diff(days, prepend=0)
    gap[s.start] = 0
    rows["gap"], rows["prefix_gap_sq"] = gap, _prefix(gap * gap)

    parts = [_cutoff_features(plan, rows, s, cutoff) for cutoff in plan.cutoff_days]
    first_rows = np.concatenate([s.start[p["_customers"]] for p in parts])
    cutoff_days = np.concatenate(
        [np.full(len(p["_customers"]), c, dtype=np.int32) for p, c in zip(parts, plan.cutoff_days, strict=True)]
    )
    columns = {
        ENTITY_ID: customers.take(pa.array(first_rows, type=pa.int64())),
        CUTOFF: pa.array(cutoff_days, type=pa.int32()).cast(pa.date32()),
    }
    for name in plan.numeric:
        values = np.concatenate([p[name] for p in parts]).astype(np.float64)
        columns[name] = pa.array(values, mask=np.isnan(values), type=pa.float64())
    for name in plan.categorical:
        columns[name] = pa.array(np.concatenate([p[name] for p in parts]), type=pa.string())
    label_events = np.concatenate([p[LABEL_VALUE] for p in parts])
    label = label_events == 0 if plan.churn_label else label_events > 0
    columns[LABEL_VALUE] = pa.array(label.astype(np.int32))
    return pa.table(columns)


def group_function(plan: KernelPlan) -> Callable[[pa.Table], pa.Table]:
    """`compute_group` for `plan` as the one-argument, type-hinted function `GroupedData.applyInArrow` takes (it
    picks the Arrow flavour from the hints)."""

    def features_of_group(table: pa.Table) -> pa.Table:
        return compute_group(plan, table)

    return features_of_group
