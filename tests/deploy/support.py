"""Shared readers for the deployment tests: the compose file, the dashboards, the metric names and promtool."""

from __future__ import annotations

import json
import os
import re
import shutil
from functools import cache
from pathlib import Path
from typing import Any

import psycopg2
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
COMPOSE_SCHEMA = REPO / "third_party" / "compose-spec" / "compose-spec.json"
SECRETS_DIR = REPO / "secrets"
GRAFANA_DIR = REPO / "grafana"
DASHBOARDS_DIR = GRAFANA_DIR / "dashboards"
DATASOURCES_FILE = GRAFANA_DIR / "provisioning" / "datasources" / "datasources.yml"
DEPLOYMENT_DOC = REPO / "docs" / "deployment.md"
MIGRATIONS_DIR = REPO / "churnops" / "migrations"

# The machine's PostgreSQL (a superuser), the same default as tests/db.
POSTGRES_ADMIN_URL = os.environ.get("CHURNOPS_TEST_POSTGRES_URL", "postgresql://root@127.0.0.1:5432/test")

# The services the native stack (`make stack-up`) starts under the same names.
NATIVE_STACK_SERVICES = (
    "postgres",
    "airflow-init",
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "spark-master",
    "spark-worker",
    "mlflow",
    "api",
    "monitoring-exporter",
    "prometheus",
    "grafana",
)

# Built-in series every Prometheus has, usable in panels and alerts next to the churnops metrics.
PROMETHEUS_BUILTIN_SERIES = frozenset({"up", "scrape_duration_seconds", "scrape_samples_scraped"})


@cache
def compose() -> dict[str, Any]:
    """docker-compose.yml as compose sees it after YAML anchors and merge keys (`<<`) are resolved."""
    return yaml.safe_load(COMPOSE_FILE.read_text())


def dashboards() -> dict[str, dict[str, Any]]:
    """Every dashboard JSON under grafana/dashboards, by file name."""
    return {path.name: json.loads(path.read_text()) for path in sorted(DASHBOARDS_DIR.glob("*.json"))}


def provisioned_datasources() -> dict[str, str]:
    """uid -> datasource type, as provisioned in grafana/provisioning/datasources."""
    document = yaml.safe_load(DATASOURCES_FILE.read_text())
    return {source["uid"]: source["type"] for source in document["datasources"]}


def panel_targets() -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(dashboard file, panel, target) for every query target of every panel, rows included."""
    found = []
    for name, board in dashboards().items():
        for panel in board["panels"]:
            for inner in [panel, *panel.get("panels", [])]:
                for target in inner.get("targets", []):
                    found.append((name, inner, target))
    return found


def serving_metric_names() -> set[str]:
    """Every series name the API exposes, read from the metrics that serving/metrics.py registers.

    A Counter declared as `churnops_requests` is exposed as `churnops_requests_total`; a Histogram as its
    `_bucket`, `_sum` and `_count` series.
    """
    from prometheus_client.metrics import MetricWrapperBase

    import serving.metrics

    names: set[str] = set()
    for value in vars(serving.metrics).values():
        if not isinstance(value, MetricWrapperBase):
            continue
        for family in value.describe():
            if family.type == "counter":
                names.add(f"{family.name}_total")
            elif family.type == "histogram":
                names.update(f"{family.name}{suffix}" for suffix in ("_bucket", "_sum", "_count"))
            else:
                names.add(family.name)
    return names


CONTRACT_ROW = re.compile(r"^\|\s*`(churnops_[a-z0-9_]+)`\s*\|\s*(counter|gauge)\s*\|")


def exporter_contract() -> dict[str, str]:
    """name -> type of the exporter's metrics, from the contract table in docs/deployment.md."""
    text = DEPLOYMENT_DOC.read_text()
    start, end = "<!-- exporter-metrics:start -->", "<!-- exporter-metrics:end -->"
    assert start in text and end in text, f"{DEPLOYMENT_DOC} lost its {start} ... {end} contract table"
    section = text[text.index(start) : text.index(end)]
    rows = [CONTRACT_ROW.match(line.strip()) for line in section.splitlines()]
    return {match.group(1): match.group(2) for match in rows if match}


_AGGREGATIONS_AND_KEYWORDS = frozenset(
    {
        "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk", "topk",
        "quantile", "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless",
        "bool", "offset", "inf", "nan",
    }
)  # fmt: skip
_LABEL_LISTS = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")


def metric_names_in(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (functions, keywords, labels and strings left out)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # label values may hold anything
    text = re.sub(r"\$\{?__\w+\}?", "5m", text)  # Grafana interval macros
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = _LABEL_LISTS.sub(" ", text)
    text = re.sub(r"\[[^\]]*\]", "", text)  # range and subquery windows
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        following = text[match.end() :].lstrip()
        if following.startswith("("):  # a function call
            continue
        if match.start() > 0 and (text[match.start() - 1].isdigit() or text[match.start() - 1] == "."):
            continue  # unit of a number or duration (`14 * 86400`, `1e3`)
        if match.group(0) not in _AGGREGATIONS_AND_KEYWORDS:
            names.add(match.group(0))
    return names


def grafana_expr_for_prometheus(expr: str) -> str:
    """A panel expression with Grafana's interval macros replaced, as the stack test sends it to Prometheus."""
    return re.sub(r"\$\{?__(?:rate_interval|interval|range)\}?", "5m", expr)


def promtool() -> str:
    """Path of promtool; fails (never skips) with the way to install it."""
    path = shutil.which("promtool")
    if path is None:
        pytest.fail(
            "promtool not found on PATH: install Prometheus' tools (Debian: `apt-get install -y prometheus`, "
            "which `make test-deps` / .ci/run do) to check the Prometheus config and alert rules"
        )
    return path


def admin_connection() -> psycopg2.extensions.connection:
    """An autocommit superuser connection to the test server; fails (never skips) when it is unreachable."""
    try:
        conn = psycopg2.connect(POSTGRES_ADMIN_URL, connect_timeout=5)
    except psycopg2.OperationalError as error:
        pytest.fail(f"PostgreSQL at {POSTGRES_ADMIN_URL} is unreachable (set CHURNOPS_TEST_POSTGRES_URL): {error}")
    conn.autocommit = True
    return conn
