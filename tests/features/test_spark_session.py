"""The SparkSessions churnops starts: a local one exposes nothing beyond this machine."""

from __future__ import annotations

from urllib.parse import urlparse

import psutil
import pytest

pytestmark = pytest.mark.slow

LOOPBACK = {"127.0.0.1", "::ffff:127.0.0.1", "::1"}


def test_a_local_session_serves_its_web_ui_on_loopback_only(spark) -> None:
    port = urlparse(spark.sparkContext.uiWebUrl).port
    listening = [
        connection.laddr.ip
        for connection in psutil.net_connections(kind="tcp")
        if connection.status == psutil.CONN_LISTEN and connection.laddr.port == port
    ]
    assert listening, f"nothing listens on the Spark UI's port {port}"
    assert set(listening) <= LOOPBACK, f"the Spark UI listens on {listening}"
