"""The Spark job's feature kernel (jobs/feature_kernel.py) on its own, without Spark: what a cutoff's row holds
never depends on day buckets at or after the cutoff, nor on the other customers in the group; and a feature the
kernel does not implement is refused by name instead of being dropped. (Its values are compared with the SQL
definitions and a brute-force oracle on Spark output in test_spark_features.py.)"""

from __future__ import annotations

import dataclasses
import datetime as dt

import numpy as np
import pyarrow as pa
import pytest

from churnops.config import Settings
from churnops.dataset import load_contract
from churnops.features import CUTOFF, ENTITY_ID, FeatureSpec, event_feature_specs, type_column
from churnops.jobs.feature_kernel import LABEL_VALUE, compute_group, kernel_plan

CUTOFF_DAY = (dt.date(2024, 6, 1) - dt.date(1970, 1, 1)).days


@pytest.fixture(scope="module")
def contract(tmp_path_factory):
    return load_contract("synthetic", Settings(home=tmp_path_factory.mktemp("home")))


def plan_for(contract, cutoff_days: list[int]):
    assert contract.events is not None
    return kernel_plan(
        event_feature_specs(contract),
        cutoff_days,
        contract.label.horizon_days,
        contract.population.active_within_days,
        event_types=tuple(contract.events.counted_event_types),
        churn_label=True,
    )


def day_buckets(contract, customers: int, seed: int) -> pa.Table:
    """Random day buckets (customer, day) around the cutoff, shuffled: the kernel sorts them itself."""
    rng = np.random.default_rng(seed)
    rows = []
    for customer in range(customers):
        days = rng.choice(np.arange(CUTOFF_DAY - 500, CUTOFF_DAY + 90), size=rng.integers(1, 80), replace=False)
        rows += [(f"c{seed}-{customer}", int(day)) for day in days]
    rng.shuffle(rows)
    n = rng.integers(1, 6, size=len(rows))
    amounts = rng.gamma(2.0, 30.0, size=len(rows)) * n
    columns = {
        ENTITY_ID: [r[0] for r in rows],
        "day_index": np.array([r[1] for r in rows], dtype=np.int32),
        "n": n,
        "amount_sum": amounts,
        "amount_sumsq": amounts * amounts / n,
        "amount_max": amounts / n * 1.5,
        "n_label": n,
    }
    for event_type in contract.events.counted_event_types:
        columns[type_column(event_type)] = rng.integers(0, 2, size=len(rows)) * n
    return pa.table(columns)


def by_customer(table: pa.Table) -> dict[tuple[str, object], dict]:
    rows = table.drop_columns([LABEL_VALUE]).to_pylist()
    return {(row[ENTITY_ID], row[CUTOFF]): row for row in rows}


def test_a_cutoffs_features_ignore_day_buckets_at_or_after_it(contract) -> None:
    plan = plan_for(contract, [CUTOFF_DAY])
    buckets = day_buckets(contract, customers=300, seed=1)
    past_only = buckets.filter(pa.compute.less(buckets.column("day_index"), CUTOFF_DAY))
    full, past = by_customer(compute_group(plan, buckets)), by_customer(compute_group(plan, past_only))
    assert len(full) > 100
    assert full == past


def test_a_customers_row_does_not_depend_on_the_other_customers_in_the_group(contract) -> None:
    plan = plan_for(contract, [CUTOFF_DAY - 60, CUTOFF_DAY])
    alone, other = day_buckets(contract, customers=50, seed=2), day_buckets(contract, customers=200, seed=3)
    together = by_customer(compute_group(plan, pa.concat_tables([other, alone])))
    separately = by_customer(compute_group(plan, alone))
    assert len(separately) > 20
    assert {key: together[key] for key in separately} == separately


def test_a_feature_without_a_kernel_implementation_is_refused_by_name(contract) -> None:
    unknown = dataclasses.replace(event_feature_specs(contract)[0], name="amount_median_all")
    with pytest.raises(ValueError, match="amount_median_all"):
        kernel_plan(
            [*event_feature_specs(contract), unknown],
            [CUTOFF_DAY],
            60,
            None,
            event_types=tuple(contract.events.counted_event_types),
            churn_label=True,
        )
    assert isinstance(unknown, FeatureSpec)
