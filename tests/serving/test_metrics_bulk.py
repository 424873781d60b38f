"""`observe_many` records in a histogram exactly what one `observe` per value records."""

from __future__ import annotations

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, Histogram

from churnops.serving.metrics import SCORE_BUCKETS, observe_many


def samples(registry: CollectorRegistry) -> dict[tuple[str, str], float]:
    return {
        (sample.name, sample.labels.get("le", "")): sample.value
        for family in registry.collect()
        for sample in family.samples
        if not sample.name.endswith("_created")
    }


@pytest.mark.parametrize(
    "values",
    [
        [0.5],
        [0.0, 0.05, 0.1, 0.95, 1.0],
        list(np.random.default_rng(3).uniform(0, 1, 1000)),
        [0.05000000000000001, 0.04999999999999999, 2.0, -1.0],
    ],
    ids=["one", "on-bounds", "many", "around-bounds-and-outside"],
)
def test_bulk_observation_equals_one_observation_per_value(values) -> None:
    one_by_one, bulk = CollectorRegistry(), CollectorRegistry()
    expected = Histogram("score", "s", ["v"], buckets=SCORE_BUCKETS, registry=one_by_one).labels(v="1")
    for value in values:
        expected.observe(value)
    observe_many(Histogram("score", "s", ["v"], buckets=SCORE_BUCKETS, registry=bulk).labels(v="1"), np.array(values))
    want, got = samples(one_by_one), samples(bulk)
    assert got.keys() == want.keys()
    for key, value in want.items():
        assert got[key] == pytest.approx(value), key
