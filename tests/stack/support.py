"""What the stack tests share: the stack's URLs, waits for events with generous ceilings, Airflow's REST API, the
API's traffic, the platform database's clean-up, and the logs a failure shows."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import psycopg2
from psycopg2 import sql

from tests.deploy.support import POSTGRES_ADMIN_URL, native_stack

REPO = Path(__file__).resolve().parents[2]
PIPELINE = ("churnops_features", "churnops_drift", "churnops_training", "churnops_scoring")
# Ceilings, not expectations: each wait returns as soon as its event happens.
STARTUP_CEILING_S = 1800
DAG_RUN_CEILING_S = 1800
SCRAPE_CEILING_S = 600


def url(paths: Any, service: str) -> str:
    """http://127.0.0.1:<port> of a service of this stack (its ports were chosen at start)."""
    return f"http://127.0.0.1:{native_stack().stack_ports(paths)[service]}"


def drop_databases(suffix: str) -> None:
    """The stack's databases first (mlflow_auth before its owner mlflow; churnops before the roles it grants to)."""
    conn = psycopg2.connect(POSTGRES_ADMIN_URL)
    conn.autocommit = True
    with conn.cursor() as cursor:
        for name in ("airflow", "mlflow_auth", "mlflow", "churnops"):
            cursor.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name + suffix)))
        for name in ("grafana_reader", "churnops_api", "airflow", "mlflow", "churnops"):
            cursor.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name + suffix)))
    conn.close()


def log_tails(paths: Any) -> str:
    """The last lines of every service's log, and every task failure the scheduler recorded."""
    tails = []
    scheduler_log = paths.logs / "airflow-scheduler.log"
    if scheduler_log.exists():
        failures = [
            line[:2000]
            for line in scheduler_log.read_text(errors="replace").splitlines()
            if "Task failed with exception" in line
        ]
        tails.append("--- task failures\n" + "\n".join(failures))
    for log in sorted(paths.logs.glob("*")):
        tails.append(f"--- {log.name}\n" + "\n".join(log.read_text(errors="replace").splitlines()[-25:]))
    return "\n".join(tails)


def airflow_client(paths: Any) -> httpx.Client:
    token = httpx.post(
        f"{url(paths, 'airflow-apiserver')}/auth/token",
        json={"username": "admin", "password": paths.secret("airflow_admin_password")},
        timeout=120,
    )
    assert token.status_code == 201, token.text
    return httpx.Client(
        base_url=url(paths, "airflow-apiserver"),
        headers={"Authorization": f"Bearer {token.json()['access_token']}"},
        timeout=120,
    )


def wait(condition: Any, timeout_s: float, what: str, interval_s: float = 5.0) -> Any:
    """Poll `condition` until it returns something true; a request that times out on a busy machine is a poll that
    said "not yet", not a failure."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            result = condition()
        except httpx.TransportError:
            result = None
        if result:
            return result
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def finished_run(client: httpx.Client, dag_id: str) -> dict[str, Any] | None:
    runs = client.get(f"/api/v2/dags/{dag_id}/dagRuns", params={"order_by": "-run_after", "limit": 1}).json()
    latest = (runs.get("dag_runs") or [None])[0]
    if latest and latest["state"] == "failed":
        raise AssertionError(f"{dag_id} run {latest['dag_run_id']} failed")
    return latest if latest and latest["state"] == "success" else None


def trigger(client: httpx.Client, dag_id: str, conf: dict[str, Any]) -> str:
    triggered = client.post(f"/api/v2/dags/{dag_id}/dagRuns", json={"logical_date": None, "conf": conf})
    assert triggered.status_code == 200, triggered.text
    return triggered.json()["dag_run_id"]


def succeeded(client: httpx.Client, dag_id: str, run_id: str, task_id: str | None = None) -> bool:
    """Whether one run (or one task of it) succeeded; a failure raises at once instead of waiting out the timeout."""
    path = f"/api/v2/dags/{dag_id}/dagRuns/{run_id}" + (f"/taskInstances/{task_id}" if task_id else "")
    state = client.get(path).json().get("state")
    if state in ("failed", "upstream_failed"):
        raise AssertionError(f"{dag_id} run {run_id} {task_id or ''} {state}")
    return state == "success"


def send_traffic(paths: Any) -> None:
    """Authenticated predictions, one refused caller and one bad request (the error panels need 4xx)."""
    api = url(paths, "api")
    key = paths.secret("churnops_serving__api_key")
    wait(
        lambda: httpx.get(f"{api}/ready", timeout=30).status_code == 200,
        STARTUP_CEILING_S,
        "the API to load the champion",
    )
    body = json.loads((REPO / "examples" / "predict_request.json").read_text())
    assert httpx.post(f"{api}/predict", json=body, timeout=30).status_code == 401
    for _ in range(30):
        answer = httpx.post(f"{api}/predict", json=body, headers={"X-API-Key": key}, timeout=30)
        assert answer.status_code == 200, answer.text
        assert 0 <= answer.json()["probability"] <= 1
    bad = httpx.post(f"{api}/predict", json={"features": {}}, headers={"X-API-Key": key}, timeout=30)
    assert bad.status_code == 422
    # An age no training row had: scored and flagged (the default policy), counted for the out-of-range panel.
    outlier = {"features": {**body["features"], "age": 10_000}}
    flagged = httpx.post(f"{api}/predict", json=outlier, headers={"X-API-Key": key}, timeout=30)
    assert flagged.status_code == 200 and "age" in flagged.json()["out_of_range"], flagged.text
    # By customer_id alone: the features come from the online table the feature DAG published.
    with psycopg2.connect(paths.secret("churnops_database_url")) as conn, conn.cursor() as cursor:
        cursor.execute("SELECT customer_id FROM churnops.online_features ORDER BY customer_id LIMIT 20")
        published = [row[0] for row in cursor.fetchall()]
    assert published, "the feature DAG published no online features"
    by_id = httpx.post(f"{api}/predict", json={"customer_id": published[0]}, headers={"X-API-Key": key}, timeout=30)
    assert by_id.status_code == 200, by_id.text
    batch = httpx.post(
        f"{api}/batch_predict",
        json={"instances": [{"customer_id": c} for c in published]},
        headers={"X-API-Key": key},
        timeout=60,
    )
    assert batch.status_code == 200, batch.text
