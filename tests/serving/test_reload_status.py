"""What the API says of a failed reload: the failure's kind only. The message stays in the log: it can name internal
hosts, users and paths, and /ready and /model answer without credentials."""

from __future__ import annotations

from churnops.serving.state import ReloadStatus


def test_the_reload_status_shows_the_kind_of_failure_and_not_its_message() -> None:
    status = ReloadStatus(
        last_error="OperationalError: could not connect to server at mlflow-db.internal:5432 as user churnops",
        failed_version="7",
    )
    described = status.describe()
    assert described["last_error"] == "OperationalError"
    assert "internal" not in str(described) and "churnops" not in str(described)
    assert described["failed_version"] == "7"


def test_a_healthy_reload_status_shows_no_error() -> None:
    assert ReloadStatus().describe()["last_error"] is None
