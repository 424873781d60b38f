"""How the native stack tells that a service is up: an answer to a real request, not an open port."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from pathlib import Path


def basic_auth(username: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()}


def http_ok(url: str, headers: dict[str, str] | None = None) -> bool:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=5) as response:
            return 200 <= response.status < 300
    except (urllib.error.URLError, OSError, ValueError):
        return False


def spark_worker_alive(ports: dict[str, int]) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{ports['spark-master-ui']}/json/", timeout=5) as response:
            return any(w.get("state") == "ALIVE" for w in json.load(response).get("workers", []))
    except (urllib.error.URLError, OSError, ValueError):
        return False


def mlflow_answers(password_file: Path, username: str, port: int) -> bool:
    """A real, authenticated API call (`/health` answers even when every client would be refused)."""
    if not password_file.exists():
        return False
    headers = basic_auth(username, password_file.read_text().strip())
    return http_ok(f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/search?max_results=1", headers)
