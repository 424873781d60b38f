"""The request path's metric writes, added up in the process and written to prometheus_client once a second.

In multiprocess mode every `inc` and `observe` of prometheus_client takes a lock, calls getpid and writes an mmap
page: a request paid about twenty of them (counts, durations, sizes, in-flight, scores). Here a request adds to a
dict keyed by the metric's own value objects, and `flush` writes each total once: every `FLUSH_SECONDS` (the app's
lifespan runs `flush_periodically`), before every `/metrics` rendering of this worker and at shutdown. A scrape sees
another worker's requests at most a second late, well inside any scrape interval.

Histograms are bucketed here with observe's rule (the first upper bound >= the value), through the child's value
objects (`_value`, `_sum`, `_buckets`, `_upper_bounds`: prometheus_client internals, pinned by uv.lock and checked
against plain `inc`/`observe` by tests/serving/test_metric_buffer.py).
"""

from __future__ import annotations

import asyncio
import threading
from bisect import bisect_left
from collections.abc import Callable
from typing import Any

import numpy as np

FLUSH_SECONDS = 1.0


class MetricBuffer:
    """Pending increments of counters and histogram children, written by `flush`; safe from any thread."""

    def __init__(self) -> None:
        self._pending: dict[Any, float] = {}
        self._lock = threading.Lock()
        self._on_flush: list[Callable[[], None]] = []

    def inc(self, counter: Any, amount: float = 1.0) -> None:
        """`counter.inc(amount)` at the next flush (a labelled child of a Counter)."""
        value = counter._value
        with self._lock:
            self._pending[value] = self._pending.get(value, 0.0) + amount

    def observe(self, histogram: Any, amount: float) -> None:
        """`histogram.observe(amount)` at the next flush (a labelled child of a Histogram)."""
        bucket = histogram._buckets[bisect_left(histogram._upper_bounds, amount)]
        pending = self._pending
        with self._lock:
            pending[bucket] = pending.get(bucket, 0.0) + 1.0
            pending[histogram._sum] = pending.get(histogram._sum, 0.0) + amount

    def observe_many(self, histogram: Any, values: np.ndarray) -> None:
        """`observe` of every value, counted per bucket with numpy."""
        if len(values) == 1:
            self.observe(histogram, float(values[0]))
            return
        bounds = np.asarray(histogram._upper_bounds, dtype=np.float64)
        counts = np.bincount(np.searchsorted(bounds, values, side="left"), minlength=len(bounds)).tolist()
        total = float(np.sum(values))
        pending = self._pending
        with self._lock:
            for bucket, count in zip(histogram._buckets, counts, strict=False):
                if count:
                    pending[bucket] = pending.get(bucket, 0.0) + count
            pending[histogram._sum] = pending.get(histogram._sum, 0.0) + total

    def on_flush(self, callback: Callable[[], None]) -> None:
        """Call `callback` at every flush (e.g. to set a gauge from a count kept in the process)."""
        self._on_flush.append(callback)

    def flush(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, {}
        for value, amount in pending.items():
            value.inc(amount)
        for callback in self._on_flush:
            callback()

    async def flush_periodically(self, seconds: float = FLUSH_SECONDS) -> None:
        """Flush every `seconds` until cancelled, then once more."""
        try:
            while True:
                await asyncio.sleep(seconds)
                self.flush()
        finally:
            self.flush()
