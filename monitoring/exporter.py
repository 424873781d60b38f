"""The monitoring exporter: a small HTTP process Prometheus scrapes for drift, realized performance, training and
pipeline figures (`python -m churnops.monitoring.exporter`, port 9108, `GET /metrics`).

The DAGs that produce these figures are short-lived, so their gauges would vanish between runs. The exporter
reads the latest values from where the DAGs record them at every scrape — the monitoring store (PostgreSQL or the
embedded JSON files), the MLflow registry, and in PostgreSQL the DAG-run and ingestion records — so a restart of
either side loses nothing. Metric names are the contract in docs/deployment.md.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from churnops.config import MonitoringSettings, Settings
from churnops.monitoring.store import MonitoringStore, open_store

log = logging.getLogger(__name__)

TRAINING_DAG = "churnops_training"


class MonitoringCollector(Collector):
    """Builds every exporter metric from the stores at scrape time."""

    def __init__(self, settings: Settings, monitoring: MonitoringSettings, store: MonitoringStore | None = None):
        self.settings = settings
        self.monitoring = monitoring
        self.store = store or open_store(settings)
        self._mlflow_cache: tuple[float, dict[str, dict[str, Any]]] | None = None

    def _datasets(self) -> list[str]:
        return sorted({self.settings.dataset, *self.store.datasets()})

    def collect(self) -> Iterator[Metric]:
        psi = GaugeMetricFamily(
            "churnops_feature_psi",
            "PSI (Evidently) of the feature in the latest drift run",
            labels=["dataset", "feature"],
        )
        share = GaugeMetricFamily(
            "churnops_drifted_feature_share",
            "Share of features drifted in the latest drift run",
            labels=["dataset"],
        )
        last_run = GaugeMetricFamily(
            "churnops_drift_last_run_timestamp_seconds",
            "Unix time the latest drift run finished",
            labels=["dataset"],
        )
        triggers = CounterMetricFamily(
            "churnops_retrain_triggers",
            "Retraining runs started, by reason",
            labels=["dataset", "reason"],
        )
        auc = GaugeMetricFamily(
            "churnops_realized_roc_auc", "ROC AUC of the latest matured scoring date", labels=["dataset"]
        )
        precision = GaugeMetricFamily(
            "churnops_realized_precision_at_10",
            "Precision in the top 10 % of that scoring date",
            labels=["dataset"],
        )
        for dataset in self._datasets():
            try:
                self._collect_store(dataset, psi, share, last_run, triggers, auc, precision)
            except Exception as error:  # one unreadable dataset must not blank the whole scrape
                log.warning("exporter: cannot read monitoring records of %s: %s", dataset, error)
        yield from (psi, share, last_run, triggers, auc, precision)
        yield from self._collect_mlflow()
        if self.settings.database_url is not None:
            yield from self._collect_pipeline_tables()

    def _collect_store(self, dataset: str, psi, share, last_run, triggers, auc, precision) -> None:
        runs = [r for r in self.store.recent_drift_runs(dataset, limit=5) if r.current_source == "snapshot"]
        if runs:
            latest = runs[0]
            for feature in latest.features:
                if feature.psi is not None:
                    psi.add_metric([dataset, feature.feature], feature.psi)
            share.add_metric([dataset], latest.drifted_share)
            last_run.add_metric([dataset], latest.finished_at.timestamp())
        fired: dict[str, int] = {}
        for decision in self.store.retrain_decisions(dataset):
            if decision.fired:
                fired[decision.trigger] = fired.get(decision.trigger, 0) + 1
        for reason, count in sorted(fired.items()):
            triggers.add_metric([dataset, reason], count)
        realized = [r for r in self.store.realized(dataset) if r.roc_auc is not None]
        if realized:
            latest_realized = max(realized, key=lambda r: r.logical_date)
            auc.add_metric([dataset], latest_realized.roc_auc)
            if latest_realized.precision_at_10 is not None:
                precision.add_metric([dataset], latest_realized.precision_at_10)

    def _registry_state(self) -> dict[str, dict[str, Any]]:
        """Per dataset: champion name/version and the last successful training time, cached for a while."""
        now = time.monotonic()
        if self._mlflow_cache and now - self._mlflow_cache[0] < self.monitoring.exporter_mlflow_cache_seconds:
            return self._mlflow_cache[1]
        from mlflow import MlflowClient

        from churnops.dataset import load_contract
        from churnops.registry import configure_mlflow, experiment_name

        configure_mlflow(self.settings)
        client = MlflowClient()
        state: dict[str, dict[str, Any]] = {}
        for dataset in self._datasets():
            try:
                contract = load_contract(dataset, self.settings)
            except (FileNotFoundError, ValueError):
                continue  # a dataset known only by a user YAML path: no registry look-up by name
            entry: dict[str, Any] = {}
            try:
                version = client.get_model_version_by_alias(contract.model_name, "champion")
                entry["champion"] = (contract.model_name, str(version.version))
            except Exception:  # no champion yet
                pass
            experiment = client.get_experiment_by_name(experiment_name(contract))
            if experiment is not None:
                finished = client.search_runs(
                    [experiment.experiment_id],
                    filter_string="tags.`churnops.kind` = 'training' and attributes.status = 'FINISHED'",
                    order_by=["attributes.end_time DESC"],
                    max_results=1,
                )
                if finished and finished[0].info.end_time:
                    entry["last_training"] = finished[0].info.end_time / 1000
            state[dataset] = entry
        self._mlflow_cache = (now, state)
        return state

    def _collect_mlflow(self) -> Iterator[Metric]:
        champion = GaugeMetricFamily(
            "churnops_champion_version",
            "The registry's champion version (value = version number)",
            labels=["dataset", "model_name", "model_version"],
        )
        trained = GaugeMetricFamily(
            "churnops_last_successful_training_timestamp_seconds",
            "Unix time of the last successful training run",
            labels=["dataset"],
        )
        try:
            state = self._registry_state()
        except Exception as error:  # MLflow down: the store's figures are still worth serving
            log.warning("exporter: MLflow unavailable: %s", error)
            state = {}
        for dataset, entry in sorted(state.items()):
            if "champion" in entry:
                name, version = entry["champion"]
                champion.add_metric([dataset, name, version], float(version))
            if "last_training" in entry:
                trained.add_metric([dataset], entry["last_training"])
        yield champion
        yield trained

    def _collect_pipeline_tables(self) -> Iterator[Metric]:
        durations = GaugeMetricFamily(
            "churnops_dag_run_duration_seconds",
            "Duration of the latest finished run of each DAG, by its final state",
            labels=["dag_id", "state"],
        )
        ingested = CounterMetricFamily("churnops_rows_ingested", "Rows read by ingestion", labels=["dataset"])
        quarantined = CounterMetricFamily(
            "churnops_rows_quarantined", "Rows sent to quarantine by ingestion", labels=["dataset"]
        )
        from churnops import db

        try:
            conn = db.connect(self.settings, application_name="churnops-exporter")
            try:
                with conn, conn.cursor() as cur:
                    cur.execute(
                        """
                        SELECT DISTINCT ON (dag_id, state) dag_id, state,
                               extract(epoch FROM end_date - start_date)
                        FROM churnops.dag_runs
                        WHERE state IN ('success', 'failed') AND start_date IS NOT NULL AND end_date IS NOT NULL
                        ORDER BY dag_id, state, end_date DESC
                        """
                    )
                    for dag_id, state, seconds in cur.fetchall():
                        durations.add_metric([dag_id, state], float(seconds))
                    cur.execute(
                        "SELECT dataset, sum(rows_read), sum(rows_quarantined) FROM churnops.ingestion_reports "
                        "GROUP BY dataset ORDER BY dataset"
                    )
                    for dataset, rows_read, rows_quarantined in cur.fetchall():
                        ingested.add_metric([dataset], float(rows_read))
                        quarantined.add_metric([dataset], float(rows_quarantined))
            finally:
                conn.close()
        except Exception as error:
            log.warning("exporter: cannot read pipeline tables: %s", error)
        yield from (durations, ingested, quarantined)
        yield from self._collect_value_at_stake()

    def _collect_value_at_stake(self) -> Iterator[Metric]:
        """Per risk band of each dataset's latest regular list, the summed expected value of its customers (the
        value the churn risk puts at stake) and how many the campaign selects; only lists with value columns."""
        at_stake = GaugeMetricFamily(
            "churnops_value_at_stake",
            "Summed expected value of the latest regular list's customers, by risk band (value model, migration 0012)",
            labels=["dataset", "risk_band"],
        )
        selected = GaugeMetricFamily(
            "churnops_campaign_customers",
            "Customers of the latest regular list the campaign selects under its budget, by risk band",
            labels=["dataset", "risk_band"],
        )
        from churnops import db

        try:
            conn = db.connect(self.settings, application_name="churnops-exporter")
            try:
                with conn, conn.cursor() as cur:
                    cur.execute(
                        """
                        SELECT s.dataset, s.risk_band, sum(s.expected_value), count(*) FILTER (WHERE s.in_campaign)
                        FROM churnops.scores s
                        JOIN (SELECT dataset, max(logical_date) AS logical_date FROM churnops.score_runs
                              WHERE list_kind = 'regular' GROUP BY dataset) latest
                          ON s.dataset = latest.dataset AND s.logical_date = latest.logical_date
                        WHERE s.list_kind = 'regular' AND s.expected_value IS NOT NULL
                        GROUP BY s.dataset, s.risk_band ORDER BY 1, 2
                        """
                    )
                    for dataset, band, value, campaign in cur.fetchall():
                        at_stake.add_metric([dataset, band], float(value))
                        selected.add_metric([dataset, band], float(campaign))
            finally:
                conn.close()
        except Exception as error:
            log.warning("exporter: cannot read the value columns of the lists: %s", error)
        yield from (at_stake, selected)


def build_registry(settings: Settings, monitoring: MonitoringSettings, store: MonitoringStore | None = None) -> Any:
    """A registry holding only the monitoring collector (no process metrics: the figures are about the platform)."""
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry(auto_describe=False)
    registry.register(MonitoringCollector(settings, monitoring, store))
    return registry


def serve(settings: Settings | None = None, monitoring: MonitoringSettings | None = None) -> None:
    """Serve /metrics until interrupted."""
    import threading

    from prometheus_client import start_http_server

    settings = settings or Settings()
    monitoring = monitoring or settings.monitoring
    server, thread = start_http_server(
        monitoring.exporter_port, addr=monitoring.exporter_host, registry=build_registry(settings, monitoring)
    )
    log.info("monitoring exporter on http://%s:%d/metrics", monitoring.exporter_host, monitoring.exporter_port)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
        thread.join(timeout=5)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    serve()
