"""Serving benchmark: the same registered model behind `mlflow models serve` and behind the churnops API.

Both servers run on loopback with the champion of the dataset (or `--version`); `wrk` drives single-row and
100-row POSTs at each concurrency for a bounded duration, several runs each, and the medians are printed as a
Markdown table (requests/s, p50, p99, errors). The churnops API runs as in production, everything on: API-key
auth, request validation, multiprocess Prometheus metrics (`churnops serve --workers N`) and the prediction log
written to a real PostgreSQL database (created for the run, migrated, dropped at the end unless --keep-database).

    .venv/bin/python benchmarks/serving_bench.py                 # 10 s x 3 runs per cell, c = 8 and 32
    .venv/bin/python benchmarks/serving_bench.py --duration 5 --runs 1 --servers churnops

Needs `wrk` (apt-get install wrk) and a trained champion in the working folder (`make run`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import psycopg2
import psycopg2.sql

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from churnops import db  # noqa: E402
from churnops.config import Settings  # noqa: E402
from churnops.dataset import load_contract  # noqa: E402
from churnops.features import CUTOFF, ENTITY_ID  # noqa: E402
from churnops.registry import CHAMPION_ALIAS, configure_mlflow, load_model_version, resolve_alias  # noqa: E402
from churnops.snapshots import latest_snapshot_dir, load_snapshot  # noqa: E402

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


@dataclass(frozen=True)
class Run:
    server: str
    rows: int
    connections: int
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    errors: int


def unused_port() -> int:
    with contextlib.closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def json_value(value: Any) -> Any:
    if isinstance(value, float | np.floating):
        return None if np.isnan(value) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    return value


def request_bodies(settings: Settings, model: Any, rows: int) -> tuple[bytes, bytes, dict[str, Any]]:
    """(churnops body, mlflow body, one churnops record) for `rows` real customers of the latest snapshot.

    The MLflow model's signature takes the encoded matrix (categories as their vocabulary index), exactly what
    churnops encodes internally, so both servers score the same numbers.
    """
    frame, metadata = load_snapshot(latest_snapshot_dir(settings, settings.dataset))
    scoring = frame[frame[CUTOFF] == pd.Timestamp(metadata.cutoffs["scoring"][0])].head(rows)
    columns = model.schema.columns
    missing = [c for c in columns if c not in scoring.columns]
    if missing:
        raise SystemExit(f"the latest snapshot lacks features {missing} of model v{model.version}: retrain first")
    records = [{c: json_value(row[c]) for c in columns} for _, row in scoring.iterrows()]
    instances = [{"customer_id": str(cid), "features": r} for cid, r in zip(scoring[ENTITY_ID], records, strict=True)]
    ours = json.dumps(instances[0] if rows == 1 else {"instances": instances}).encode()
    matrix = model.schema.encode_records(records)
    theirs = json.dumps(
        {"dataframe_split": {"columns": columns, "data": [[json_value(v) for v in row] for row in matrix]}}
    ).encode()
    return ours, theirs, instances[0]


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


def measure(
    name: str, url: str, bodies: dict[int, bytes], args: argparse.Namespace, workdir: Path, key: str
) -> list[Run]:
    results = []
    for rows, body in bodies.items():
        for connections in args.connections:
            wrk(url, body, connections, args.warmup, args.wrk_threads, workdir, key)  # warm-up, not recorded
            runs = []
            for _ in range(args.runs):
                raw = wrk(url, body, connections, args.duration, args.wrk_threads, workdir, key)
                errors = sum(
                    raw[k] for k in ("status_errors", "connect_errors", "read_errors", "write_errors", "timeouts")
                )
                runs.append(
                    Run(
                        server=name,
                        rows=rows,
                        connections=connections,
                        requests_per_second=raw["requests"] / (raw["duration_us"] / 1e6),
                        p50_ms=raw["p50_us"] / 1000,
                        p99_ms=raw["p99_us"] / 1000,
                        errors=errors,
                    )
                )
            median = Run(
                server=name,
                rows=rows,
                connections=connections,
                requests_per_second=statistics.median(r.requests_per_second for r in runs),
                p50_ms=statistics.median(r.p50_ms for r in runs),
                p99_ms=statistics.median(r.p99_ms for r in runs),
                errors=sum(r.errors for r in runs),
            )
            print(
                f"  {name:9s} rows={rows:<3d} c={connections:<3d} {median.requests_per_second:9.1f} req/s  "
                f"p50 {median.p50_ms:7.2f} ms  p99 {median.p99_ms:8.2f} ms  errors {median.errors}  "
                f"(runs: {', '.join(f'{r.requests_per_second:.0f}' for r in runs)} req/s; load {load_average()})",
                flush=True,
            )
            results.append(median)
    return results


def metric(exposition: str, name: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    return sum(
        sample.value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
        if sample.name == name
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", help="model version (default: the champion)")
    parser.add_argument("--duration", type=int, default=10, help="seconds per recorded run")
    parser.add_argument("--warmup", type=int, default=2, help="seconds of unrecorded load before each cell")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--connections", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 100])
    parser.add_argument("--workers", type=int, default=2, help="worker processes of each server")
    parser.add_argument("--wrk-threads", type=int, default=1, help="wrk threads (the load generator shares the cores)")
    parser.add_argument("--servers", nargs="+", default=["mlflow", "churnops"], choices=["mlflow", "churnops"])
    parser.add_argument("--keep-database", action="store_true", help="keep the prediction-log database afterwards")
    parser.add_argument("--output", type=Path, help="write every median as JSON here")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install wrk")

    settings = Settings()
    contract = load_contract(settings.dataset, settings)
    configure_mlflow(settings)
    version = args.version or resolve_alias(contract.model_name, CHAMPION_ALIAS)
    model = load_model_version(contract.model_name, version)
    bodies = {rows: request_bodies(settings, model, rows) for rows in args.rows}
    venv_bin = Path(sys.executable).parent
    print(f"model {contract.model_name} v{version}; {os.cpu_count()} cores; load before: {load_average()}", flush=True)

    results: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="serving-bench-") as tmp:
        workdir = Path(tmp)
        base_env = {
            **os.environ,
            "OMP_NUM_THREADS": "1",
            "MLFLOW_TRACKING_URI": settings.tracking_uri,
            # `mlflow models serve` starts `uvicorn` through bash: it must be on PATH.
            "PATH": f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}",
        }
        if "mlflow" in args.servers:
            port = unused_port()
            command = [
                str(venv_bin / "mlflow"),
                "models",
                "serve",
                "-m",
                f"models:/{contract.model_name}/{version}",
                "--env-manager",
                "local",
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
                "-w",
                str(args.workers),
            ]
            url = f"http://127.0.0.1:{port}"
            with server(command, base_env, f"{url}/ping", workdir / "mlflow.log"):
                check = httpx.post(
                    f"{url}/invocations", content=bodies[args.rows[0]][1], headers={"content-type": "application/json"}
                )
                check.raise_for_status()
                mlflow_score = check.json()["predictions"][0]
                print(f"mlflow models serve: first score {mlflow_score:.12f}", flush=True)
                results += measure(
                    "mlflow", f"{url}/invocations", {r: b[1] for r, b in bodies.items()}, args, workdir, ""
                )
        if "churnops" in args.servers:
            with bench_database() as database_url:
                port = unused_port()
                env = {
                    **base_env,
                    "CHURNOPS_SERVING__API_KEY": API_KEY,
                    "CHURNOPS_DATABASE_URL": database_url,
                    "PROMETHEUS_MULTIPROC_DIR": str(workdir / "prometheus"),
                }
                command = [
                    str(venv_bin / "churnops"),
                    "serve",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--workers",
                    str(args.workers),
                ]
                url = f"http://127.0.0.1:{port}"
                with server(command, env, f"{url}/ready", workdir / "churnops.log"):
                    check = httpx.post(f"{url}/predict", json=bodies[args.rows[0]][2], headers={"X-API-Key": API_KEY})
                    check.raise_for_status()
                    print(f"churnops API: first score {check.json()['probability']:.12f}", flush=True)
                    # One row goes to /predict (the CRM's call), several to /batch_predict.
                    single = {r: b[0] for r, b in bodies.items() if r == 1}
                    batches = {r: b[0] for r, b in bodies.items() if r != 1}
                    results += measure("churnops", f"{url}/predict", single, args, workdir, API_KEY)
                    results += measure("churnops", f"{url}/batch_predict", batches, args, workdir, API_KEY)
                    time.sleep(3)  # let the prediction-log writers flush
                    exposition = httpx.get(f"{url}/metrics").text
                with contextlib.closing(psycopg2.connect(database_url)) as conn, conn.cursor() as cur:
                    cur.execute("SELECT count(*) FROM churnops.prediction_log")
                    logged = cur.fetchone()[0]
                predicted = metric(exposition, "churnops_predictions_total")
                dropped = metric(exposition, "churnops_prediction_log_dropped_total")
                print(
                    f"prediction log: {predicted:.0f} predictions, {logged} rows in PostgreSQL, {dropped:.0f} dropped",
                    flush=True,
                )
            if not args.keep_database:
                drop_bench_database()

    print(f"\nload after: {load_average()}\n")
    print("| server | rows/request | connections | requests/s | rows/s | p50 ms | p99 ms | errors |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for run in results:
        print(
            f"| {run.server} | {run.rows} | {run.connections} | {run.requests_per_second:,.0f} | "
            f"{run.requests_per_second * run.rows:,.0f} | {run.p50_ms:.2f} | {run.p99_ms:.2f} | {run.errors} |"
        )
    single = {(r.server, r.connections): r for r in results if r.rows == 1}
    for connections in args.connections:
        if ("mlflow", connections) in single and ("churnops", connections) in single:
            ratio = (
                single[("churnops", connections)].requests_per_second
                / single[("mlflow", connections)].requests_per_second
            )
            print(f"single-row, c={connections}: churnops / mlflow = {ratio:.1f}x")
    if args.output:
        args.output.write_text(json.dumps([asdict(r) for r in results], indent=2))


if __name__ == "__main__":
    main()
