"""Grafana provisioning and dashboards, checked without Grafana: structure, datasource references, layout, and
that every metric a panel queries is one the API registers or the exporter contract promises. The SQL panels run
against the real platform schema built from churnops/migrations."""

from __future__ import annotations

import re
import secrets
from collections import Counter
from contextlib import closing

import psycopg2
import psycopg2.sql
import pytest

from churnops.db import migrate
from tests.deploy.support import (
    DASHBOARDS_DIR,
    MIGRATIONS_DIR,
    PROMETHEUS_BUILTIN_SERIES,
    admin_connection,
    dashboards,
    exporter_contract,
    metric_names_in,
    panel_targets,
    provisioned_datasources,
    run_sql_panels,
    serving_metric_names,
)

REQUIRED_DASHBOARDS = {"API SLO", "Model", "Drift", "Pipelines"}
GRID_COLUMNS = 24


def test_the_four_dashboards_are_provisioned_as_files():
    titles = {board["title"].split(" / ")[-1] for board in dashboards().values()}
    assert titles == REQUIRED_DASHBOARDS


def test_dashboards_have_unique_fixed_uids_and_no_import_placeholders():
    uids = [board["uid"] for board in dashboards().values()]
    assert len(set(uids)) == len(uids) and all(uids)
    for name, board in dashboards().items():
        assert board["id"] is None, f"{name}: a provisioned dashboard must not carry a database id"
        text = (DASHBOARDS_DIR / name).read_text()
        assert "__inputs" not in board and "${DS_" not in text, f"{name} is a UI export with import placeholders"


def test_panel_ids_are_unique_within_each_dashboard():
    for name, board in dashboards().items():
        ids = [panel["id"] for panel in board["panels"]]
        assert [i for i, n in Counter(ids).items() if n > 1] == [], f"{name} repeats panel ids"


def test_datasources_are_provisioned_with_fixed_unique_uids():
    provisioned = provisioned_datasources()
    assert provisioned == {"churnops-prometheus": "prometheus", "churnops-postgres": "grafana-postgresql-datasource"}


def test_every_panel_and_target_uses_a_provisioned_datasource_of_the_right_type():
    provisioned = provisioned_datasources()
    for name, board in dashboards().items():
        for panel in board["panels"]:
            for ref in [panel["datasource"], *(target["datasource"] for target in panel.get("targets", []))]:
                assert ref["uid"] in provisioned, f"{name} / {panel['title']}: unknown datasource {ref}"
                assert ref["type"] == provisioned[ref["uid"]], f"{name} / {panel['title']}: type mismatch {ref}"


def test_every_target_has_a_query_and_a_unique_ref_id():
    for name, board in dashboards().items():
        for panel in board["panels"]:
            targets = panel.get("targets", [])
            assert targets, f"{name} / {panel['title']} has no query"
            ref_ids = [target.get("refId") for target in targets]
            assert all(ref_ids) and len(set(ref_ids)) == len(ref_ids), f"{name} / {panel['title']}: refIds {ref_ids}"
            for target in targets:
                query = target.get("expr") if target["datasource"]["type"] == "prometheus" else target.get("rawSql")
                assert query and query.strip(), f"{name} / {panel['title']} / {target['refId']} has no query"


def test_panels_fit_the_24_column_grid_without_overlapping():
    for name, board in dashboards().items():
        cells: dict[tuple[int, int], str] = {}
        for panel in board["panels"]:
            grid = panel["gridPos"]
            assert grid["x"] >= 0 and grid["w"] > 0 and grid["h"] > 0 and grid["y"] >= 0
            assert grid["x"] + grid["w"] <= GRID_COLUMNS, f"{name} / {panel['title']} is wider than the grid"
            for x in range(grid["x"], grid["x"] + grid["w"]):
                for y in range(grid["y"], grid["y"] + grid["h"]):
                    assert (x, y) not in cells, f"{name}: {panel['title']} overlaps {cells[(x, y)]}"
                    cells[(x, y)] = panel["title"]


def test_metric_name_extraction_finds_metrics_and_ignores_functions_labels_and_keywords():
    expr = (
        'histogram_quantile(0.99, sum by (le, endpoint) (rate(churnops_request_duration_seconds_bucket{le="0.25"}'
        "[$__rate_interval]))) / on (endpoint) group_left sum(churnops_requests_total offset 5m) or vector(0)"
        " and time() - up > 14 * 86400"
    )
    assert metric_names_in(expr) == {"churnops_request_duration_seconds_bucket", "churnops_requests_total", "up"}


def test_the_exporter_contract_is_documented_and_does_not_clash_with_the_api_metrics():
    contract = exporter_contract()
    assert len(contract) >= 10
    for name, kind in contract.items():
        assert name.startswith("churnops_")
        assert name.endswith("_total") == (kind == "counter"), f"{name}: counters, and only counters, end in _total"
    assert set(contract).isdisjoint(serving_metric_names())


def test_every_metric_a_panel_queries_is_registered_by_the_api_or_promised_by_the_exporter():
    known = serving_metric_names() | set(exporter_contract()) | PROMETHEUS_BUILTIN_SERIES
    unknown = {
        (name, panel["title"], metric)
        for name, panel, target in panel_targets()
        if "expr" in target
        for metric in metric_names_in(target["expr"])
        if metric not in known
    }
    assert unknown == set()


def test_every_api_metric_is_shown_on_some_dashboard():
    queried = {
        metric for _, _, target in panel_targets() if "expr" in target for metric in metric_names_in(target["expr"])
    }
    families = {re.sub(r"_(bucket|sum|count)$", "", name) for name in queried}
    missing = {
        name
        for name in serving_metric_names()
        if name not in queried and re.sub(r"_(bucket|sum|count)$", "", name) not in families
    }
    # Only the per-kind error counter is left to the error-rate panels, which read the status label instead.
    assert missing <= {"churnops_request_errors_total"}


SCHEMA_TABLE = re.compile(r"CREATE TABLE churnops\.(\w+)")


def test_sql_panels_read_only_tables_of_the_platform_schema():
    tables = {table for path in MIGRATIONS_DIR.glob("*.sql") for table in SCHEMA_TABLE.findall(path.read_text())}
    for name, panel, target in panel_targets():
        if "rawSql" in target:
            sql = target["rawSql"]
            assert re.match(r"\s*SELECT\b", sql, flags=re.IGNORECASE), f"{name} / {panel['title']} is not a query"
            used = set(re.findall(r"churnops\.(\w+)", sql))
            assert used and used <= tables, f"{name} / {panel['title']} reads unknown tables {used - tables}"


@pytest.fixture(scope="module")
def platform_schema_database():
    """A throwaway database with the platform schema of churnops/migrations; dropped afterwards."""
    name = f"churnops_deploy_{secrets.token_hex(4)}"
    with closing(admin_connection()) as admin:
        with admin.cursor() as cursor:
            cursor.execute(psycopg2.sql.SQL("CREATE DATABASE {}").format(psycopg2.sql.Identifier(name)))
        dsn = admin.get_dsn_parameters()
        try:
            with closing(psycopg2.connect(dbname=name, user=dsn["user"], host=dsn["host"], port=dsn["port"])) as conn:
                migrate(conn, MIGRATIONS_DIR)
                yield conn
        finally:
            with admin.cursor() as cursor:
                cursor.execute(psycopg2.sql.SQL("DROP DATABASE {} WITH (FORCE)").format(psycopg2.sql.Identifier(name)))


def test_every_sql_panel_runs_against_the_platform_schema(platform_schema_database):
    assert run_sql_panels(platform_schema_database) > 5
