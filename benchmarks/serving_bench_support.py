"""What the serving benchmark (`serving_bench.py`) runs on: the prediction-log database, server processes in their
own process groups, and `wrk` with a Lua script that prints one JSON line of results."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg2
import psycopg2.sql

from churnops import db

API_KEY = "serving-bench-key"
ADMIN_URL = os.environ.get("CHURNOPS_BENCH_POSTGRES_URL", "postgresql://root@127.0.0.1:5432/test")
BENCH_DATABASE = "churnops_serving_bench"

# wrk posts the body of $BENCH_BODY with $BENCH_HEADERS (JSON object) and prints one JSON line at the end.
WRK_SCRIPT = r"""
local body_file = assert(io.open(os.getenv("BENCH_BODY"), "rb"))
wrk.method = "POST"
wrk.body = body_file:read("*a")
body_file:close()
wrk.headers["Content-Type"] = "application/json"
local key = os.getenv("BENCH_API_KEY")
if key and key ~= "" then wrk.headers["X-API-Key"] = key end

done = function(summary, latency, requests)
  io.write(string.format(
    "BENCH_JSON {\"requests\": %d, \"duration_us\": %d, \"p50_us\": %d, \"p99_us\": %d, \"status_errors\": %d, " ..
    "\"connect_errors\": %d, \"read_errors\": %d, \"write_errors\": %d, \"timeouts\": %d}\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99), summary.errors.status,
    summary.errors.connect, summary.errors.read, summary.errors.write, summary.errors.timeout))
end
"""


def unused_port() -> int:
    with contextlib.closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


@contextlib.contextmanager
def bench_database() -> Iterator[str]:
    """A fresh platform database for the prediction log of the run."""
    admin = psycopg2.connect(ADMIN_URL, connect_timeout=5)
    admin.autocommit = True
    name = psycopg2.sql.Identifier(BENCH_DATABASE)
    with admin.cursor() as cur:
        cur.execute(psycopg2.sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name))
        cur.execute(psycopg2.sql.SQL("CREATE DATABASE {}").format(name))
    dsn = psycopg2.extensions.make_dsn(ADMIN_URL, dbname=BENCH_DATABASE)
    with contextlib.closing(psycopg2.connect(dsn)) as conn:
        db.migrate(conn)
    parsed = psycopg2.extensions.parse_dsn(dsn)
    url = f"postgresql://{parsed.get('user', 'root')}@{parsed.get('host', '127.0.0.1')}:{parsed.get('port', '5432')}"
    try:
        yield f"{url}/{BENCH_DATABASE}"
    finally:
        admin.close()


def drop_bench_database() -> None:
    with contextlib.closing(psycopg2.connect(ADMIN_URL, connect_timeout=5)) as admin:
        admin.autocommit = True
        with admin.cursor() as cur:
            cur.execute(
                psycopg2.sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                    psycopg2.sql.Identifier(BENCH_DATABASE)
                )
            )


@contextlib.contextmanager
def server(command: list[str], env: dict[str, str], ready_url: str, log_path: Path) -> Iterator[None]:
    """Start a server in its own process group, wait for `ready_url`, stop the whole group afterwards."""
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while True:
            if process.poll() is not None:
                raise SystemExit(f"{command[:3]} exited:\n{log_path.read_text()[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(ready_url, timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise SystemExit(f"{command[:3]} not ready in 180 s:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.5)
        yield
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)


def wrk(url: str, body: bytes, connections: int, duration: int, threads: int, workdir: Path, key: str) -> dict:
    body_path = workdir / f"body-{len(body)}.json"
    body_path.write_bytes(body)
    script = workdir / "post.lua"
    script.write_text(WRK_SCRIPT)
    command = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{duration}s",
        "--timeout",
        "10s",
        "-s",
        str(script),
        url,
    ]
    env = {**os.environ, "BENCH_BODY": str(body_path), "BENCH_API_KEY": key}
    completed = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        raise SystemExit(f"wrk failed ({completed.returncode}): {completed.stdout}{completed.stderr}")
    line = next(line for line in completed.stdout.splitlines() if line.startswith("BENCH_JSON "))
    return json.loads(line.removeprefix("BENCH_JSON "))
