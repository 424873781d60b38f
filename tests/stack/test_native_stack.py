"""The full deployment, started natively and used as a person would: DAGs triggered through Airflow's REST API,
predictions over HTTP, every Grafana panel's query answered by a real Prometheus scraping the real services, every
SQL panel run against the platform database (test_native_stack_refusals.py: what it refuses).

The stack listens on free ports chosen at start (`up --free-ports`), so a `make serve` on 8000 or a developer's
stack on compose's ports cannot break it. Every wait is for an event, with a ceiling of minutes: a loaded machine
makes the test slower, not red.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import psycopg2
import pytest

from tests.deploy.support import grafana_expr_for_prometheus, native_stack, panel_targets
from tests.stack.support import PIPELINE, REPO, SCRAPE_CEILING_S, send_traffic, url, wait

pytestmark = pytest.mark.slow


def test_a_backfilled_cutoff_is_listed_under_its_date_and_its_realized_performance_recorded(
    pipeline_ran: Any, backtested: str
) -> None:
    with psycopg2.connect(pipeline_ran.secret("churnops_database_url")) as conn, conn.cursor() as cursor:
        cursor.execute(
            "SELECT DISTINCT cutoff FROM churnops.scores WHERE dataset = 'synthetic' AND logical_date = %s",
            (backtested,),
        )
        assert [str(row[0]) for row in cursor.fetchall()] == [backtested]
        cursor.execute(
            "SELECT roc_auc, n_scored FROM churnops.realized_performance WHERE dataset = 'synthetic'"
            " AND logical_date = %s",
            (backtested,),
        )
        realized = cursor.fetchall()
    assert realized and all(auc is not None and 0 <= auc <= 1 and n > 100 for auc, n in realized), realized


def test_feature_job_ran_on_the_spark_master_not_in_local_mode(pipeline_ran: Any) -> None:
    apps = httpx.get(f"{url(pipeline_ran, 'spark-master-ui')}/json/", timeout=30).json()
    names = [app["name"] for app in apps.get("completedapps", []) + apps.get("activeapps", [])]
    assert any(name.startswith("churnops-features") for name in names), names


def test_api_serves_the_champion_with_auth(pipeline_ran: Any) -> None:
    send_traffic(pipeline_ran)


def _prometheus_query(paths: Any, expr: str) -> list[dict[str, Any]]:
    answer = httpx.get(f"{url(paths, 'prometheus')}/api/v1/query", params={"query": expr}, timeout=30).json()
    assert answer["status"] == "success", answer
    return answer["data"]["result"]


def _panels_without_data(paths: Any) -> list[str]:
    empty = []
    for board, panel, target in panel_targets():
        if "expr" in target and not _prometheus_query(paths, grafana_expr_for_prometheus(target["expr"])):
            empty.append(f"{board} / {panel.get('title')}: {target['expr']}")
    return empty


def test_every_grafana_prometheus_panel_has_data(pipeline_ran: Any, backtested: str) -> None:
    # `backtested`: the realized-performance panels need a scored list whose label horizon has passed.
    send_traffic(pipeline_ran)
    key = pipeline_ran.secret("churnops_serving__api_key")
    body = json.loads((REPO / "examples" / "predict_request.json").read_text())

    def every_panel_answers() -> bool:
        # A little traffic between looks keeps rate() windows moving until Prometheus has scraped enough.
        httpx.post(f"{url(pipeline_ran, 'api')}/predict", json=body, headers={"X-API-Key": key}, timeout=30)
        return not _panels_without_data(pipeline_ran)

    try:
        wait(every_panel_answers, SCRAPE_CEILING_S, "every panel's query to return data", interval_s=10)
    except AssertionError as error:
        exposed = "\n".join(
            line
            for target in (f"{url(pipeline_ran, 'api')}/metrics", f"{url(pipeline_ran, 'monitoring-exporter')}/metrics")
            for line in httpx.get(target, timeout=30).text.splitlines()
            if any(word in line for word in ("lookup", "rows_", "realized"))
        )
        empty = "\n".join(_panels_without_data(pipeline_ran))
        raise AssertionError(f"{error}\npanels without data:\n{empty}\nexposed now:\n{exposed}") from error


def test_every_grafana_sql_panel_has_data_in_the_platform_database(pipeline_ran: Any, backtested: str) -> None:
    empty = []
    with psycopg2.connect(pipeline_ran.secret("churnops_database_url")) as conn, conn.cursor() as cursor:
        for board, panel, target in panel_targets():
            # Replay panels read what `churnops replay` writes; a stack run replays nothing.
            # tests/monitoring/test_timeline.py checks them on a recorded replay step instead.
            if "rawSql" not in target or "churnops.replay_timeline" in target["rawSql"]:
                continue
            sql = (
                target["rawSql"]
                .replace("$__timeFilter(", "(now() - interval '7 days' < ")
                .replace("$__timeFrom()", "now() - interval '7 days'")
                .replace("$__timeTo()", "now()")
            )
            cursor.execute(sql)
            assert cursor.description, f"{board} / {panel.get('title')} returned no result set"
            if not cursor.fetchall():
                empty.append(f"{board} / {panel.get('title')}")
        cursor.execute("SELECT count(*) FROM churnops.scores")
        assert cursor.fetchone()[0] > 100
    assert not empty, "SQL panels without data: " + ", ".join(empty)


def test_scores_and_dag_runs_reach_postgresql(pipeline_ran: Any) -> None:
    with psycopg2.connect(pipeline_ran.secret("churnops_database_url")) as conn, conn.cursor() as cursor:
        cursor.execute("SELECT DISTINCT dag_id FROM churnops.dag_runs WHERE state = 'success'")
        assert set(PIPELINE) <= {row[0] for row in cursor.fetchall()}


def test_stack_environment_takes_credentials_only_from_secret_files(tmp_path: Path) -> None:
    stack = native_stack()
    env = stack.stack_environment(stack.StackPaths(tmp_path))
    for key in env:
        # Whole words of the name: `..._SECRET_KEY_CMD` is one, `GLOBAL_KEYPREFIX` (Celery's key prefix) is not.
        words = set(key.replace("__", "_").split("_"))
        if key.startswith(("AIRFLOW__", "CHURNOPS_")) and words & {
            "PASSWORD",
            "PASSWORDS",
            "SECRET",
            "SECRETS",
            "KEY",
            "CONN",
        }:
            # Only commands that read a secret file, or the paths of such files, may carry these names.
            assert key.endswith(("_CMD", "_FILE", "_DIR")), f"{key} carries a credential inline"
