"""Metrics stay correct with several uvicorn workers: `churnops serve --workers 2`, N requests, one scrape says N
once every worker has flushed its metric buffer (at most `FLUSH_SECONDS` later)."""

from __future__ import annotations

import re
import time

import httpx
import pytest

from churnops.serving.metric_buffer import FLUSH_SECONDS
from tests.serving.conftest import metric_value, start_server

REQUESTS = 60


@pytest.mark.slow
def test_one_scrape_counts_the_requests_of_every_worker(trained_platform, example_request, tmp_path) -> None:
    metrics_dir = tmp_path / "prometheus"
    server = start_server(
        trained_platform.settings,
        tmp_path,
        workers=2,
        env={"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir), "CHURNOPS_SERVING__API_KEY": "k"},
    )
    try:
        for _ in range(REQUESTS):
            # A new connection per request, so the kernel spreads them over both workers' accept() calls.
            response = httpx.post(f"{server.base_url}/predict", json=example_request, headers={"X-API-Key": "k"})
            assert response.status_code == 200, response.text
        labels = {"endpoint": "/predict", "status": "200"}
        deadline = time.monotonic() + 10 * FLUSH_SECONDS
        while time.monotonic() < deadline:  # the other worker writes its counts at its next flush
            scrape = httpx.get(f"{server.base_url}/metrics").text
            if metric_value(scrape, "churnops_requests_total", labels) == REQUESTS:
                break
            time.sleep(FLUSH_SECONDS / 10)
        scrapes = [httpx.get(f"{server.base_url}/metrics").text for _ in range(6)]
    finally:
        server.stop()
    for text in scrapes:  # whichever worker answers the scrape reports every worker's requests
        assert metric_value(text, "churnops_requests_total", labels) == REQUESTS
        assert metric_value(text, "churnops_predictions_total") == REQUESTS
        assert metric_value(text, "churnops_request_duration_seconds_count", {"endpoint": "/predict"}) == REQUESTS
    worker_pids = {m.group(1) for f in metrics_dir.iterdir() if (m := re.match(r"counter_(\d+)\.db", f.name))}
    assert len(worker_pids) == 2, f"expected files from 2 worker processes, found {sorted(worker_pids)}"
