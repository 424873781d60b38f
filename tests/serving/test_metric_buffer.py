"""The metric buffer records in prometheus_client, at its flush, exactly what one `inc` or `observe` per event
records, and nothing before the flush."""

from __future__ import annotations

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram

from churnops.serving.metric_buffer import MetricBuffer
from churnops.serving.metrics import SCORE_BUCKETS


def samples(registry: CollectorRegistry) -> dict[tuple[str, str], float]:
    return {
        (sample.name, sample.labels.get("le", "")): sample.value
        for family in registry.collect()
        for sample in family.samples
        if not sample.name.endswith("_created")
    }


VALUES = {
    "one": [0.5],
    "on-bounds": [0.0, 0.05, 0.1, 0.95, 1.0],
    "many": list(np.random.default_rng(3).uniform(0, 1, 1000)),
    "around-bounds-and-outside": [0.05000000000000001, 0.04999999999999999, 2.0, -1.0],
}


@pytest.mark.parametrize("values", VALUES.values(), ids=VALUES.keys())
@pytest.mark.parametrize("bulk", [True, False], ids=["observe_many", "observe"])
def test_buffered_observations_equal_one_observe_per_value_after_the_flush(values, bulk) -> None:
    direct, buffered = CollectorRegistry(), CollectorRegistry()
    expected = Histogram("score", "s", ["v"], buckets=SCORE_BUCKETS, registry=direct).labels(v="1")
    for value in values:
        expected.observe(value)
    histogram = Histogram("score", "s", ["v"], buckets=SCORE_BUCKETS, registry=buffered).labels(v="1")
    buffer = MetricBuffer()
    if bulk:
        buffer.observe_many(histogram, np.array(values))
    else:
        for value in values:
            buffer.observe(histogram, value)
    assert samples(buffered)[("score_count", "")] == 0  # nothing written before the flush
    buffer.flush()
    want, got = samples(direct), samples(buffered)
    assert got.keys() == want.keys()
    for key, value in want.items():
        assert got[key] == pytest.approx(value), key


def test_buffered_counter_increments_add_up_at_the_flush_and_only_once() -> None:
    registry = CollectorRegistry()
    counter = Counter("requests", "r", ["endpoint"], registry=registry)
    buffer = MetricBuffer()
    for _ in range(5):
        buffer.inc(counter.labels(endpoint="/predict"))
    buffer.inc(counter.labels(endpoint="/batch_predict"), 100)
    buffer.flush()
    buffer.flush()
    assert registry.get_sample_value("requests_total", {"endpoint": "/predict"}) == 5
    assert registry.get_sample_value("requests_total", {"endpoint": "/batch_predict"}) == 100
