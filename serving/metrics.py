"""Prometheus metrics of the API. Names follow Prometheus practice: `churnops_` prefix, base units, `_total` counters.

Works with several uvicorn workers: when PROMETHEUS_MULTIPROC_DIR is set (by the start command, before Python
starts), every worker writes its samples there and `/metrics` aggregates them. The request path's counts go through
`BUFFER`, written once a second (serving/metric_buffer.py).
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

from churnops.serving.metric_buffer import MetricBuffer

# The request path writes through this (serving/metric_buffer.py): one mmap write per metric per second.
BUFFER = MetricBuffer()

# 1 ms to 1 s resolved, with the 250 ms SLO threshold on a bucket edge.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
SCORE_BUCKETS = tuple(round(0.05 * i, 2) for i in range(1, 20)) + (1.0,)
BODY_BUCKETS = (100, 300, 1_000, 3_000, 10_000, 30_000, 100_000, 300_000, 1_000_000)

REQUESTS = Counter("churnops_requests", "HTTP requests answered, by endpoint and status code", ["endpoint", "status"])
REQUEST_DURATION = Histogram(
    "churnops_request_duration_seconds",
    "Time to answer a request, by endpoint",
    ["endpoint"],
    buckets=LATENCY_BUCKETS,
)
REQUEST_BODY = Histogram(
    "churnops_request_body_bytes", "Size of request bodies, by endpoint", ["endpoint"], buckets=BODY_BUCKETS
)
IN_FLIGHT = Gauge(
    "churnops_requests_in_flight", "Requests being answered now", ["endpoint"], multiprocess_mode="livesum"
)
ERRORS = Counter(
    "churnops_request_errors",
    "Requests answered with a 4xx or 5xx, by endpoint and kind",
    ["endpoint", "kind"],
)
PREDICTIONS = Counter("churnops_predictions", "Customers scored, by model version", ["model_version"])
PREDICTED_SCORE = Histogram(
    "churnops_predicted_score",
    "Distribution of predicted probabilities",
    ["model_version"],
    buckets=SCORE_BUCKETS,
)
MODEL_INFO = Gauge(
    "churnops_model_info",
    "1 for the model version being served",
    ["model_name", "model_version"],
    multiprocess_mode="max",
)
MODEL_LOADED_AT = Gauge(
    "churnops_model_loaded_timestamp_seconds",
    "When the served model was loaded (Unix time)",
    multiprocess_mode="max",
)
MODEL_RELOADS = Counter("churnops_model_reloads", "Champion reload attempts, by outcome", ["outcome"])
PREDICTION_LOG_DROPPED = Counter(
    "churnops_prediction_log_dropped", "Predictions that could not be written to the prediction log"
)
PREDICTION_LOG_SPOOLED = Counter(
    "churnops_prediction_log_spooled",
    "Predictions the database could not take yet, kept in the worker's local spool file for replay",
)
PREDICTION_LOG_REPLAYED = Counter(
    "churnops_prediction_log_replayed", "Predictions replayed from a spool file into the database"
)
PREDICTION_LOG_WRITTEN = Counter(
    "churnops_prediction_log_written", "Predictions written to the prediction log (PostgreSQL)"
)
MODEL_RELOAD_FAILING = Gauge(
    "churnops_model_reload_failing",
    "1 while the latest attempt to load the champion failed (the previous model keeps serving)",
    multiprocess_mode="max",
)
BATCH_ROWS = Histogram(
    "churnops_batch_rows",
    "Rows per /batch_predict request",
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000),
)
OUT_OF_RANGE = Counter(
    "churnops_out_of_range_values",
    "Numeric values outside the range seen in training, by feature (whatever serving.out_of_range_policy did)",
    ["feature"],
)
ONLINE_LOOKUPS = Counter(
    "churnops_online_feature_lookups",
    "Customers looked up in the online feature table, by outcome (found, missing, error)",
    ["outcome"],
)


def render_metrics() -> tuple[bytes, str]:
    """The exposition text for `/metrics`, aggregated over workers in multiprocess mode."""
    BUFFER.flush()  # this worker's latest requests included
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    from prometheus_client import REGISTRY

    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
