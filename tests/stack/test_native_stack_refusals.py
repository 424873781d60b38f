"""What the running stack refuses: a caller without MLflow credentials cannot move the registry's champion or
register a model or a version; the API's own read-only MLflow account cannot move champion; Prometheus cannot be
reloaded or stopped over HTTP; and the API works as its least-privilege database role, which can read no score."""

from __future__ import annotations

from contextlib import closing
from typing import Any

import httpx
import psycopg2
import pytest

from tests.deploy.support import admin_connection, native_stack
from tests.stack.support import SCRAPE_CEILING_S, send_traffic, url, wait

pytestmark = pytest.mark.slow


def test_the_api_works_as_its_least_privilege_database_role(pipeline_ran: Any) -> None:
    """Its online look-ups and prediction log run as churnops_api, which may change no score (its pages read the
    lists) and read nothing outside what the API and its pages show."""
    send_traffic(pipeline_ran)
    role = "churnops_api" + _suffix_of(pipeline_ran)
    with psycopg2.connect(pipeline_ran.secret("churnops_database_url")) as owner, owner.cursor() as cursor:
        # The writer thread keeps its connection open between batches: the log reaches the table as the API's role.
        wait(lambda: _logged_predictions(cursor) > 0, SCRAPE_CEILING_S, "the API's prediction log to be written")
    with closing(admin_connection()) as admin, admin.cursor() as cursor:
        cursor.execute(
            "SELECT DISTINCT usename FROM pg_stat_activity WHERE application_name LIKE 'churnops-api-%%'"
            " AND datname = %s",
            ("churnops" + _suffix_of(pipeline_ran),),
        )
        assert {row[0] for row in cursor.fetchall()} == {role}
    with psycopg2.connect(pipeline_ran.secret("churnops_api_database_url")) as api, api.cursor() as cursor:
        for statement in ("UPDATE churnops.scores SET score = 0", "SELECT count(*) FROM churnops.ingestion_reports"):
            with pytest.raises(psycopg2.errors.InsufficientPrivilege):
                cursor.execute(statement)
            api.rollback()


def _suffix_of(paths: Any) -> str:
    return paths.secret("churnops_database_url").rsplit("/", 1)[-1].removeprefix("churnops")


def _logged_predictions(cursor: Any) -> int:
    cursor.execute("SELECT count(*) FROM churnops.prediction_log")
    count = cursor.fetchone()[0]
    cursor.connection.commit()  # a fresh snapshot for the next look
    return count


def _mlflow(paths: Any, path: str, body: dict[str, Any], account: str | None) -> httpx.Response:
    """POST to the stack's MLflow REST API as `account` (None = a stranger with no credentials)."""
    stack = native_stack()
    auth = None
    if account == "admin":
        auth = (stack.MLFLOW_ADMIN_USERNAME, paths.secret("mlflow_admin_password"))
    elif account == "reader":
        auth = (stack.MLFLOW_READER_USERNAME, paths.secret("mlflow_reader_password"))
    return httpx.post(f"{url(paths, 'mlflow')}/api/2.0/mlflow/{path}", json=body, auth=auth, timeout=60)


def _champion(paths: Any) -> str:
    stack = native_stack()
    answer = httpx.get(
        f"{url(paths, 'mlflow')}/api/2.0/mlflow/registered-models/alias",
        params={"name": "churnops-synthetic", "alias": "champion"},
        auth=(stack.MLFLOW_READER_USERNAME, paths.secret("mlflow_reader_password")),
        timeout=60,
    )
    assert answer.status_code == 200, answer.text
    return answer.json()["model_version"]["version"]


def test_no_stranger_and_not_the_api_can_move_champion_or_register_a_model(pipeline_ran: Any) -> None:
    """The platform trained, registered and promoted through MLflow's basic-auth app (pipeline_ran); a caller
    without credentials gets 401 for every change, the API's read-only account 403 for changing the champion."""
    champion = _champion(pipeline_ran)
    move = {"name": "churnops-synthetic", "alias": "champion", "version": "1"}
    register = {"name": "churnops-stranger"}
    version = {"name": "churnops-synthetic", "source": "models:/m-stranger"}
    assert _mlflow(pipeline_ran, "registered-models/alias", move, None).status_code == 401
    assert _mlflow(pipeline_ran, "registered-models/create", register, None).status_code == 401
    assert _mlflow(pipeline_ran, "model-versions/create", version, None).status_code == 401
    assert _mlflow(pipeline_ran, "registered-models/alias", move, "reader").status_code == 403
    assert _mlflow(pipeline_ran, "model-versions/create", version, "reader").status_code == 403
    assert _champion(pipeline_ran) == champion


def test_prometheus_cannot_be_reloaded_or_stopped_over_http(stack: Any) -> None:
    prometheus = url(stack, "prometheus")
    for action in ("reload", "quit"):
        assert httpx.post(f"{prometheus}/-/{action}", timeout=30).status_code == 403, action
    assert httpx.get(f"{prometheus}/-/ready", timeout=30).status_code == 200
