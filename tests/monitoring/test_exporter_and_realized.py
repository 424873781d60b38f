"""The exporter serves the recorded figures under the contract's names; realized performance and calibration."""

from __future__ import annotations

import datetime as dt
import socket
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from churnops.config import MonitoringSettings, Settings
from churnops.dataset import load_contract
from churnops.monitoring.exporter import build_registry
from churnops.monitoring.realized import calibration, realized_outcomes
from churnops.monitoring.store import LocalStore, RealizedPerformance, RetrainDecision
from tests.monitoring.test_retrain import T0, drift_run

CONTRACT_NAMES = (
    "churnops_feature_psi",
    "churnops_drifted_feature_share",
    "churnops_drift_last_run_timestamp_seconds",
    "churnops_retrain_triggers_total",
    "churnops_realized_roc_auc",
    "churnops_realized_precision_at_10",
)


def test_exporter_serves_the_latest_drift_run_triggers_and_realized_figures(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path)
    store = LocalStore(tmp_path / "monitoring")
    store.record_drift_run(drift_run("old", T0 - dt.timedelta(days=1), {}))
    store.record_drift_run(drift_run("new", T0, {"spend_30d": 0.5}))
    for fired in (True, False, True):
        store.record_retrain_decision(RetrainDecision("synthetic", "drift_detected", fired, "test", T0))
    store.record_realized(
        [RealizedPerformance("synthetic", dt.date(2025, 1, 1), "m", "3", 60, 100, 20, 0.81, 0.55, 0.2, 0.2, 0.01)]
    )
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monitoring = MonitoringSettings(exporter_port=port)

    from prometheus_client import start_http_server

    server, thread = start_http_server(port, addr="127.0.0.1", registry=build_registry(settings, monitoring, store))
    try:
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30).read().decode()
    finally:
        server.shutdown()
        thread.join(timeout=5)

    from prometheus_client.parser import text_string_to_metric_families

    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body)
        for sample in family.samples
    }
    assert set(CONTRACT_NAMES) <= {name for name, _ in samples}
    synthetic = (("dataset", "synthetic"),)
    assert samples[("churnops_feature_psi", (("dataset", "synthetic"), ("feature", "spend_30d")))] == 0.9
    assert samples[("churnops_drifted_feature_share", synthetic)] == 0.25  # 1 of 4 features, latest run only
    assert samples[("churnops_drift_last_run_timestamp_seconds", synthetic)] == T0.timestamp()
    reason = (("dataset", "synthetic"), ("reason", "drift_detected"))
    assert samples[("churnops_retrain_triggers_total", reason)] == 2  # fired ones only
    assert samples[("churnops_realized_roc_auc", synthetic)] == 0.81
    assert samples[("churnops_realized_precision_at_10", synthetic)] == 0.55


def test_calibration_error_is_zero_for_calibrated_scores_and_the_gap_otherwise() -> None:
    scores = np.array([0.05] * 20 + [0.95] * 20)
    labels = np.array([0] * 19 + [1] + [1] * 19 + [0])
    error, bins = calibration(labels, scores)
    assert error == pytest.approx(0.0)
    assert [b["n"] for b in bins] == [20, 20]
    error, _ = calibration(np.zeros(40, dtype=int), scores)
    assert error == pytest.approx(0.5)


def test_realized_churn_outcome_is_no_event_in_the_horizon(tmp_path: Path) -> None:
    contract = load_contract("synthetic", Settings(home=tmp_path))  # churn, 60-day horizon
    events = pd.DataFrame(
        {
            "customer_id": ["a", "b", "c"],
            "event_day": pd.to_datetime(["2024-11-15", "2025-01-05", "2024-12-31"]),
            "event_type": ["purchase", "visit", "visit"],
        }
    )
    # a: event inside [2024-11-01, 2024-12-31) -> stayed; b: only after the horizon -> churned;
    # c: event on the day the horizon ends (excluded) -> churned; d: never seen -> churned.
    outcomes = realized_outcomes(events, contract, pd.Series(["a", "b", "c", "d"]), dt.date(2024, 11, 1))
    assert outcomes.tolist() == [0, 1, 1, 1]


def test_realized_performance_reads_the_committed_bronze_layer(tmp_path: Path) -> None:
    """Outcomes come from the bronze the last ingestion committed (a file landed since is not read), and a dataset
    never ingested is refused with the command that fixes it."""
    from churnops.bronze import BronzeMissingError
    from churnops.jobs.ingest import ingest_events
    from churnops.monitoring.realized import compute_realized_performance
    from churnops.paths import scores_path
    from tests.features.test_incremental_ingest import deliver
    from tests.features.test_ingest import NOW, contract_for

    contract, settings = contract_for(tmp_path, "landing"), Settings(home=tmp_path / "home")  # churn, 30 days
    cutoff = dt.date(2024, 4, 1)
    path = scores_path(settings, contract.name, cutoff)
    path.parent.mkdir(parents=True)
    pd.DataFrame(
        {"customer_id": ["a", "b", "c"], "score": [0.2, 0.9, 0.6], "cutoff": cutoff}
        | {"model_name": "m", "model_version": "1"}
    ).to_parquet(path)
    with pytest.raises(BronzeMissingError, match="churnops features"):
        compute_realized_performance(settings, contract, store=LocalStore(tmp_path / "monitoring"))

    deliver(tmp_path / "landing", "april.csv", ["a,2024-04-03 10:00:00,visit,0", "c,2024-05-01 10:00:00,visit,0"])
    ingest_events(contract, settings, future_after=NOW)
    deliver(tmp_path / "landing", "late.csv", ["b,2024-04-20 10:00:00,visit,0"])  # landed, not ingested

    (realized,) = compute_realized_performance(settings, contract, store=LocalStore(tmp_path / "monitoring"))
    # a: an event in [04-01, 05-01) -> stayed; b: nothing committed -> churned; c: only on 05-01 -> churned.
    assert (realized.n_scored, realized.n_positive, realized.roc_auc) == (3, 2, 1.0)
