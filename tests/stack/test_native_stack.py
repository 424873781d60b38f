"""The full deployment, started natively and used as a person would: DAGs triggered through Airflow's REST API,
predictions over HTTP, every Grafana panel's query answered by a real Prometheus scraping the real services, every
SQL panel run against the platform database.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg2
import pytest
from psycopg2 import sql

from churnops.config import Settings
from churnops.snapshots import METADATA_FILE, latest_snapshot_dir
from tests.deploy.support import POSTGRES_ADMIN_URL, grafana_expr_for_prometheus, panel_targets

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))
import native_stack  # noqa: E402

AIRFLOW = f"http://127.0.0.1:{native_stack.PORTS['airflow-apiserver']}"
API = f"http://127.0.0.1:{native_stack.PORTS['api']}"
PROMETHEUS = f"http://127.0.0.1:{native_stack.PORTS['prometheus']}"
PIPELINE = ("churnops_features", "churnops_drift", "churnops_training", "churnops_scoring")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stack() -> Iterator[native_stack.StackPaths]:
    # Not under pytest's basetemp: other pytest sessions on the machine rotate those folders away mid-run.
    paths = native_stack.StackPaths(Path(tempfile.mkdtemp(prefix="churnops-native-stack-")))
    # Databases of its own on the machine's server, so a developer's `make stack-up` data is never touched and
    # every run starts empty (no champion left over from an earlier run).
    suffix = f"_stacktest_{os.getpid()}"
    env = {
        **native_stack.stack_environment(paths),
        "CHURNOPS_TRAINING__N_TRIALS": "10",
        "CHURNOPS_SERVING__RELOAD_INTERVAL_SECONDS": "3",
        "CHURNOPS_STACK_DB_SUFFIX": suffix,
    }
    # The data the feature DAG reads, as a user would have it in place before switching the DAGs on.
    subprocess.run(
        [sys.executable, "-m", "churnops.cli", "generate", "--customers", "1500"],
        env=env,
        check=True,
        capture_output=True,
    )
    up = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "native_stack.py"), "up", "--dir", str(paths.root)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    try:
        assert up.returncode == 0, up.stdout + up.stderr + _log_tails(paths)
        yield paths
    finally:
        subprocess.run(
            [sys.executable, str(REPO / "scripts" / "native_stack.py"), "down", "--dir", str(paths.root)],
            env=env,
            capture_output=True,
            timeout=180,
        )
        _drop_databases(suffix)
        # The logs outlive the run (the newest run's only), for whoever reads a failure.
        kept_logs = Path(tempfile.gettempdir()) / "churnops-native-stack-last-logs"
        shutil.rmtree(kept_logs, ignore_errors=True)
        shutil.copytree(paths.logs, kept_logs, dirs_exist_ok=True)
        shutil.rmtree(paths.root, ignore_errors=True)


def _drop_databases(suffix: str) -> None:
    conn = psycopg2.connect(POSTGRES_ADMIN_URL)
    conn.autocommit = True
    with conn.cursor() as cursor:
        for name in ("airflow", "mlflow", "churnops"):
            cursor.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name + suffix)))
            cursor.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name + suffix)))
        # Grafana's read-only role (postgres-init/); its grants went with the churnops database.
        cursor.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier("grafana_reader" + suffix)))
    conn.close()


def _log_tails(paths: native_stack.StackPaths) -> str:
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


def _airflow_client(paths: native_stack.StackPaths) -> httpx.Client:
    token = httpx.post(
        f"{AIRFLOW}/auth/token",
        json={"username": "admin", "password": paths.secret("airflow_admin_password")},
        timeout=30,
    )
    assert token.status_code == 201, token.text
    return httpx.Client(
        base_url=AIRFLOW, headers={"Authorization": f"Bearer {token.json()['access_token']}"}, timeout=30
    )


def _wait(condition: Any, timeout_s: float, what: str, interval_s: float = 3.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def _finished_run(client: httpx.Client, dag_id: str) -> dict[str, Any] | None:
    runs = client.get(f"/api/v2/dags/{dag_id}/dagRuns", params={"order_by": "-run_after", "limit": 1}).json()
    latest = (runs.get("dag_runs") or [None])[0]
    if latest and latest["state"] == "failed":
        raise AssertionError(f"{dag_id} run {latest['dag_run_id']} failed")
    return latest if latest and latest["state"] == "success" else None


@pytest.fixture(scope="module")
def pipeline_ran(stack: native_stack.StackPaths) -> native_stack.StackPaths:
    """Switch the DAGs on and trigger the feature DAG over REST; the drift DAG follows the new snapshot and, with
    no champion yet, requests the first training; scoring follows the new model (all through Assets)."""
    with _airflow_client(stack) as client:
        _wait(
            lambda: all(client.get(f"/api/v2/dags/{d}").status_code == 200 for d in PIPELINE),
            180,
            "the dag-processor to parse the DAGs",
        )
        for dag_id in PIPELINE:
            assert client.patch(f"/api/v2/dags/{dag_id}", json={"is_paused": False}).status_code == 200
        triggered = client.post(
            "/api/v2/dags/churnops_features/dagRuns", json={"logical_date": None, "conf": {"dataset": "synthetic"}}
        )
        assert triggered.status_code == 200, triggered.text
        try:
            for dag_id in PIPELINE:
                _wait(lambda dag_id=dag_id: _finished_run(client, dag_id), 900, f"{dag_id} to succeed")
        except AssertionError as error:
            raise AssertionError(f"{error}\n{_log_tails(stack)}") from error
    return stack


def _trigger(client: httpx.Client, dag_id: str, conf: dict[str, Any]) -> str:
    triggered = client.post(f"/api/v2/dags/{dag_id}/dagRuns", json={"logical_date": None, "conf": conf})
    assert triggered.status_code == 200, triggered.text
    return triggered.json()["dag_run_id"]


def _succeeded(client: httpx.Client, dag_id: str, run_id: str, task_id: str | None = None) -> bool:
    """Whether one run (or one task of it) succeeded; a failure raises at once instead of waiting out the timeout."""
    path = f"/api/v2/dags/{dag_id}/dagRuns/{run_id}" + (f"/taskInstances/{task_id}" if task_id else "")
    state = client.get(path).json().get("state")
    if state in ("failed", "upstream_failed"):
        raise AssertionError(f"{dag_id} run {run_id} {task_id or ''} {state}")
    return state == "success"


@pytest.fixture(scope="module")
def backtested(pipeline_ran: native_stack.StackPaths) -> str:
    """A backfill, as a user backtests: the scoring DAG triggered over REST for the snapshot's out-of-time cutoff,
    whose label horizon has passed; then a manual drift run, whose realized-performance task evaluates that list
    (the rest of the drift run, and any retraining it requests, is not waited for). Returns the cutoff."""
    snapshot = latest_snapshot_dir(Settings(home=pipeline_ran.home), "synthetic")
    cutoff = json.loads((snapshot / METADATA_FILE).read_text())["cutoffs"]["out_of_time"][0]
    with _airflow_client(pipeline_ran) as client:
        try:
            scoring = _trigger(client, "churnops_scoring", {"dataset": "synthetic", "cutoff": cutoff})
            _wait(lambda: _succeeded(client, "churnops_scoring", scoring), 600, f"the backfill of {cutoff}")
            drift = _trigger(client, "churnops_drift", {"dataset": "synthetic"})
            _wait(
                lambda: _succeeded(client, "churnops_drift", drift, "realized_performance"),
                600,
                "the drift DAG's realized performance",
            )
        except AssertionError as error:
            raise AssertionError(f"{error}\n{_log_tails(pipeline_ran)}") from error
    return cutoff


def test_a_backfilled_cutoff_is_listed_under_its_date_and_its_realized_performance_recorded(
    pipeline_ran: native_stack.StackPaths, backtested: str
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


def test_feature_job_ran_on_the_spark_master_not_in_local_mode(pipeline_ran: native_stack.StackPaths) -> None:
    apps = httpx.get(f"http://127.0.0.1:{native_stack.PORTS['spark-master-ui']}/json/", timeout=10).json()
    names = [app["name"] for app in apps.get("completedapps", []) + apps.get("activeapps", [])]
    assert any(name.startswith("churnops-features") for name in names), names


def _send_traffic(paths: native_stack.StackPaths) -> None:
    """Authenticated predictions, one refused caller and one bad request (the error panels need 4xx)."""
    key = paths.secret("churnops_serving__api_key")
    _wait(lambda: httpx.get(f"{API}/ready", timeout=5).status_code == 200, 120, "the API to load the champion")
    body = json.loads((REPO / "examples" / "predict_request.json").read_text())
    assert httpx.post(f"{API}/predict", json=body, timeout=10).status_code == 401
    for _ in range(30):
        answer = httpx.post(f"{API}/predict", json=body, headers={"X-API-Key": key}, timeout=10)
        assert answer.status_code == 200, answer.text
        assert 0 <= answer.json()["probability"] <= 1
    bad = httpx.post(f"{API}/predict", json={"features": {}}, headers={"X-API-Key": key}, timeout=10)
    assert bad.status_code == 422
    # By customer_id alone: the features come from the online table the feature DAG published.
    with psycopg2.connect(paths.secret("churnops_database_url")) as conn, conn.cursor() as cursor:
        cursor.execute("SELECT customer_id FROM churnops.online_features ORDER BY customer_id LIMIT 20")
        published = [row[0] for row in cursor.fetchall()]
    assert published, "the feature DAG published no online features"
    by_id = httpx.post(f"{API}/predict", json={"customer_id": published[0]}, headers={"X-API-Key": key}, timeout=10)
    assert by_id.status_code == 200, by_id.text
    batch = httpx.post(
        f"{API}/batch_predict",
        json={"instances": [{"customer_id": c} for c in published]},
        headers={"X-API-Key": key},
        timeout=30,
    )
    assert batch.status_code == 200, batch.text


def test_api_serves_the_champion_with_auth(pipeline_ran: native_stack.StackPaths) -> None:
    _send_traffic(pipeline_ran)


def _prometheus_query(expr: str) -> list[dict[str, Any]]:
    answer = httpx.get(f"{PROMETHEUS}/api/v1/query", params={"query": expr}, timeout=10).json()
    assert answer["status"] == "success", answer
    return answer["data"]["result"]


def test_every_grafana_prometheus_panel_has_data(pipeline_ran: native_stack.StackPaths, backtested: str) -> None:
    # `backtested`: the realized-performance panels need a scored list whose label horizon has passed.
    _send_traffic(pipeline_ran)
    _wait(lambda: _prometheus_query("churnops_requests_total"), 90, "Prometheus to scrape the API")
    time.sleep(35)  # two more scrapes (15 s apart), so rate() over the window has two points
    _send_traffic(pipeline_ran)
    time.sleep(35)
    empty = []
    for board, panel, target in panel_targets():
        if "expr" not in target:
            continue
        if not _prometheus_query(grafana_expr_for_prometheus(target["expr"])):
            empty.append(f"{board} / {panel.get('title')}: {target['expr']}")
    exposed = "\n".join(
        line
        for url in (f"{API}/metrics", f"http://127.0.0.1:{native_stack.PORTS['monitoring-exporter']}/metrics")
        for line in httpx.get(url, timeout=10).text.splitlines()
        if any(word in line for word in ("lookup", "rows_", "realized"))
    )
    assert not empty, "panels without data:\n" + "\n".join(empty) + "\nexposed now:\n" + exposed


def test_every_grafana_sql_panel_has_data_in_the_platform_database(
    pipeline_ran: native_stack.StackPaths, backtested: str
) -> None:
    empty = []
    with psycopg2.connect(pipeline_ran.secret("churnops_database_url")) as conn, conn.cursor() as cursor:
        for board, panel, target in panel_targets():
            if "rawSql" not in target:
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


def test_scores_and_dag_runs_reach_postgresql(pipeline_ran: native_stack.StackPaths) -> None:
    with psycopg2.connect(pipeline_ran.secret("churnops_database_url")) as conn, conn.cursor() as cursor:
        cursor.execute("SELECT DISTINCT dag_id FROM churnops.dag_runs WHERE state = 'success'")
        assert set(PIPELINE) <= {row[0] for row in cursor.fetchall()}


def test_stack_environment_takes_credentials_only_from_secret_files(tmp_path: Path) -> None:
    env = native_stack.stack_environment(native_stack.StackPaths(tmp_path))
    for key in env:
        if key.startswith(("AIRFLOW__", "CHURNOPS_")) and any(w in key for w in ("PASSWORD", "SECRET", "KEY", "CONN")):
            # Only commands that read a secret file, or the paths of such files, may carry these names.
            assert key.endswith(("_CMD", "_FILE", "_DIR")), f"{key} carries a credential inline"
