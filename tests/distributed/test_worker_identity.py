"""The host name Airflow records for a task tells apart two workers on one machine, and is the plain host name
wherever no worker name is set."""

from __future__ import annotations

import socket

import pytest

from churnops.worker_identity import WORKER_NAME_VARIABLE, airflow_hostname


def test_a_named_worker_is_recorded_as_worker_at_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(WORKER_NAME_VARIABLE, "airflow-worker-2")
    assert airflow_hostname() == f"airflow-worker-2@{socket.getfqdn()}"


def test_without_a_worker_name_the_host_name_is_airflows_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(WORKER_NAME_VARIABLE, raising=False)
    assert airflow_hostname() == socket.getfqdn()
