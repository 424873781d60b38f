"""What the serving benchmark (`serving_bench.py`) runs on: the prediction-log database, server processes in their
own process groups, and `wrk` with a Lua script that prints one JSON line of results."""

from __future__ import annotations

import contextlib
import json
import os
import resource
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import psycopg2
import psycopg2.sql

from churnops import db

API_KEY = "serving-bench-key"
ADMIN_URL = os.environ.get("CHURNOPS_BENCH_POSTGRES_URL", "postgresql://root@127.0.0.1:5432/test")
# Recreated at each run: two benchmarks run at once (two worktrees) need a name each, or each drops the other's log.
BENCH_DATABASE = os.environ.get("CHURNOPS_BENCH_DATABASE", "churnops_serving_bench")

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
def server(command: list[str], env: dict[str, str], ready_url: str, log_path: Path) -> Iterator[int]:
    """Start a server in its own process group, wait for `ready_url`, stop the whole group afterwards; yields the
    started process's pid (its workers are its descendants: `CpuMeter`)."""
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
        yield process.pid
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)


def _children(pid: int) -> list[int]:
    try:
        return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _thread_seconds(pid: int, tid: str) -> float:
    try:
        fields = Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:  # the thread ended between the listing and the read
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS  # utime + stime


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


class CpuMeter:
    """CPU seconds (user + system, from /proc) of one server by role, to say where a request's CPU goes outside
    what an in-process profile sees: `event loop` (the main thread of every worker: HTTP parsing, the app, the
    socket writes), `other threads` (the prediction-log writer, to_thread pools), `server processes` (the
    uvicorn supervisor, resource tracker) and `postgres` (the database backends the server's log writes through,
    found by `postgres_pids`: on this machine only)."""

    def __init__(self, root_pid: int, postgres_pids: Callable[[], list[int]] | None = None) -> None:
        self.root_pid = root_pid
        self.postgres_pids = postgres_pids

    def sample(self) -> dict[str, float]:
        roles = {"event loop": 0.0, "other threads": 0.0, "server processes": 0.0, "postgres": 0.0}
        tree, pending = [], [self.root_pid]
        while pending:  # the root, its workers, and whatever sits between (mlflow starts uvicorn through bash)
            pid = pending.pop()
            children = _children(pid)
            tree.append((pid, bool(children)))
            pending.extend(children)
        for pid, has_children in tree:
            try:
                tids = os.listdir(f"/proc/{pid}/task")
            except OSError:
                continue
            for tid in tids:
                seconds = _thread_seconds(pid, tid)
                if has_children:  # a supervisor or launcher, not a worker
                    roles["server processes"] += seconds
                else:
                    roles["event loop" if tid == str(pid) else "other threads"] += seconds
        for pid in self.postgres_pids() if self.postgres_pids else []:
            roles["postgres"] += _thread_seconds(pid, str(pid))
        return roles


def connections_per_worker(root_pid: int, port: int) -> list[int]:
    """How many established connections to `port` each process of the server rooted at `root_pid` holds, largest
    first: the sockets in each process's fd table matched by inode to /proc/net/tcp (and tcp6)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "01":  # 01: ESTABLISHED
                    inodes.add(fields[9])
    counts, pending = [], [root_pid]
    while pending:
        pid = pending.pop()
        pending.extend(_children(pid))
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:  # the process ended
            continue
        held = 0
        for fd in fds:
            with contextlib.suppress(OSError):  # closed between the listing and the read
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
                held += link.startswith("socket:[") and link[8:-1] in inodes
        if held:
            counts.append(held)
    return sorted(counts, reverse=True)


@contextlib.contextmanager
def counted_connections(root_pid: int | None, url: str, after_seconds: float) -> Iterator[list[int]]:
    """The list `connections_per_worker` fills `after_seconds` into the block (halfway through a wrk round), for the
    server rooted at `root_pid` and the port of `url`; left empty without a pid or when the block ends first."""
    counts: list[int] = []
    if root_pid is None:
        yield counts
        return
    port = urlsplit(url).port
    counter = threading.Timer(after_seconds, lambda: counts.extend(connections_per_worker(root_pid, port)))
    counter.start()
    try:
        yield counts
    finally:
        counter.cancel()
        counter.join()


def metric(exposition: str, name: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    return sum(
        sample.value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
        if sample.name == name
    )


def cpu_line(cpu_us: dict[str, float]) -> str:
    """CPU microseconds per request by role. On a loaded machine they grow with the load, but every server's grow
    alike, so the roles still say where one spends more than another."""
    roles = ", ".join(f"{role} {value:.0f}" for role, value in cpu_us.items() if value >= 0.5)
    return f"CPU us/request: {roles} (total {sum(cpu_us.values()):.0f})"


def cpu_per_request(before: dict[str, float], after: dict[str, float], wrk_result: dict) -> dict[str, float]:
    """CPU microseconds per request by role between two `CpuMeter.sample`s around one `wrk` run, with wrk's own."""
    seconds = {role: after[role] - before[role] for role in after} | {"wrk": wrk_result["wrk_cpu_s"]}
    return {role: value / max(wrk_result["requests"], 1) * 1e6 for role, value in seconds.items()}


def log_backend_pids(database_url: str) -> Callable[[], list[int]]:
    """The pids of the PostgreSQL backends the API's prediction log writes through (application_name
    churnops-api-log), asked for at each sample (a writer reconnects after a failure)."""

    def pids() -> list[int]:
        with contextlib.closing(psycopg2.connect(database_url)) as conn, conn.cursor() as cur:
            cur.execute("SELECT pid FROM pg_stat_activity WHERE application_name = 'churnops-api-log'")
            return [row[0] for row in cur.fetchall()]

    return pids


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
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    completed = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if completed.returncode != 0:
        raise SystemExit(f"wrk failed ({completed.returncode}): {completed.stdout}{completed.stderr}")
    line = next(line for line in completed.stdout.splitlines() if line.startswith("BENCH_JSON "))
    result = json.loads(line.removeprefix("BENCH_JSON "))
    # The load generator's own CPU: it shares the cores with the servers.
    result["wrk_cpu_s"] = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return result
