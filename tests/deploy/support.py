"""Shared readers for the deployment tests: the compose file (and its compose-spec validation), the dashboards, the
metric names and promtool."""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import psycopg2
import pytest
import yaml
from compose_spec import PyCompose

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
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
    "airflow-worker",
    "redis",
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


def native_stack() -> ModuleType:
    """scripts/native_stack.py, imported as the stack test and `make stack-up` run it."""
    scripts = str(REPO / "scripts")
    if scripts not in sys.path:
        sys.path.insert(0, scripts)
    import native_stack as module

    return module


@cache
def compose() -> dict[str, Any]:
    """docker-compose.yml as compose sees it after YAML anchors and merge keys (`<<`) are resolved."""
    return yaml.safe_load(COMPOSE_FILE.read_text())


class InterpolationError(ValueError):
    """A `${...}` expression compose would refuse: malformed, or a required (`?`) variable without a value."""


_VARIABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_BRACED_EXPRESSION = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-+?])(.*))?", re.DOTALL)


def interpolate(node: Any, environment: dict[str, str]) -> Any:
    """`node` with every string value interpolated the way Compose does, against `environment` only.

    Supports `$$` (a literal `$`), `$VAR`, `${VAR}`, `${VAR:-default}` (default when unset or empty),
    `${VAR-default}` (when unset), `${VAR:?message}` / `${VAR?message}` (error), `${VAR:+alt}` / `${VAR+alt}`,
    and defaults that are themselves interpolated (`${A:-${B:-x}}`). Mapping keys are left as they are, as
    compose does. Values stay strings: the compose-spec parser accepts strings wherever this file interpolates.
    """
    if isinstance(node, str):
        return _interpolate_text(node, environment)
    if isinstance(node, dict):
        return {key: interpolate(value, environment) for key, value in node.items()}
    if isinstance(node, list):
        return [interpolate(value, environment) for value in node]
    return node


def _interpolate_text(text: str, environment: dict[str, str]) -> str:
    pieces, position = [], 0
    while position < len(text):
        if text[position] != "$":
            pieces.append(text[position])
            position += 1
        elif text.startswith("$$", position):
            pieces.append("$")
            position += 2
        elif text.startswith("${", position):
            end = _closing_brace(text, position + 2)
            pieces.append(_resolve(text[position + 2 : end], environment, text))
            position = end + 1
        elif name := _VARIABLE_NAME.match(text, position + 1):
            pieces.append(environment.get(name.group(), ""))
            position = name.end()
        else:  # a lone `$` (before a space or at the end) is kept, as compose keeps it
            pieces.append("$")
            position += 1
    return "".join(pieces)


def _closing_brace(text: str, start: int) -> int:
    """Index of the `}` closing the `${` that ends just before `start`, stepping over nested `${...}`."""
    depth, position = 1, start
    while position < len(text):
        if text.startswith("${", position):
            depth, position = depth + 1, position + 2
            continue
        if text[position] == "}":
            depth -= 1
            if depth == 0:
                return position
        position += 1
    raise InterpolationError(f"unclosed '${{' in {text!r}")


def _resolve(expression: str, environment: dict[str, str], text: str) -> str:
    match = _BRACED_EXPRESSION.fullmatch(expression)
    if match is None:
        raise InterpolationError(f"invalid interpolation '${{{expression}}}' in {text!r}")
    name, operator, argument = match.groups()
    value = environment.get(name)
    if operator is None:
        return value or ""
    # With a colon the variable must be set and non-empty; without, merely set.
    present = bool(value) if operator.startswith(":") else value is not None
    if operator.endswith("-"):
        return value if present else _interpolate_text(argument, environment)
    if operator.endswith("+"):
        return _interpolate_text(argument, environment) if present else ""
    if present:
        return value
    raise InterpolationError(f"required variable {name} has no value: {_interpolate_text(argument, environment)}")


def compose_spec_errors(document: dict[str, Any]) -> list[str]:
    """Why compose-spec (the Rust compose_spec parser, from PyPI) rejects an interpolated compose document.

    The parser is strict: an unknown key (one not starting with `x-`), an unknown `depends_on` condition or
    restart policy, a malformed port or duration, or a secret used but not declared each make it fail. It stops at
    the first problem and reports a position in the JSON it was given, so a failing service is also parsed alone
    to name it. It does not check `depends_on` targets or named volumes: tests/deploy/test_compose.py does.
    """
    try:
        PyCompose.from_json(json.dumps(document)).validate()
    except ValueError as error:
        per_service = []
        for name, service in (document.get("services") or {}).items():
            try:
                PyCompose.from_json(json.dumps({"services": {name: service}}))
            except ValueError as service_error:
                per_service.append(f"services.{name}: {service_error}")
        return per_service or [str(error)]
    return []


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

    import churnops.serving.metrics

    names: set[str] = set()
    for value in vars(churnops.serving.metrics).values():
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
            "which .ci/run installs on CI; `make test` checks it first) to check the Prometheus config and alert rules"
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


def run_sql_panels(conn: psycopg2.extensions.connection, who: str = "") -> int:
    """Run every Grafana SQL panel's query on `conn` (rolled back after each); fail naming the first that errors.
    Returns how many ran."""
    ran = 0
    for name, panel, target in panel_targets():
        if "rawSql" not in target:
            continue
        with conn.cursor() as cursor:
            try:
                cursor.execute(target["rawSql"])
                cursor.fetchall()
            except psycopg2.Error as error:
                conn.rollback()
                pytest.fail(f"{name} / {panel['title']}{who}: {error.pgerror or error}")
        conn.rollback()
        ran += 1
    return ran
