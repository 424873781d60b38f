"""Serving benchmark: the same registered model behind the churnops API, behind `mlflow models serve`, and as a bare
booster behind uvicorn (the ceiling: `bare_booster_app.py`).

All servers run at once on loopback with the champion of the dataset (or `--version`); for each cell (rows per
request x connections) `wrk` drives every server in turn, round after round (the order rotates each round), so
the ratios compare figures measured side by side under the same machine load. Medians of the rounds are printed
as a Markdown table (requests/s, rows/s, p50, p99, errors), then the ratios. The churnops API runs as in
production, everything on: API-key auth, request validation, multiprocess Prometheus metrics (`churnops serve
--workers N`) and the prediction log written to a real PostgreSQL database (created for the run, migrated,
dropped at the end unless --keep-database); the run checks that every prediction reached it. Each cell also prints
every server's CPU microseconds per request by role (CpuMeter: event loop, other threads, the log's PostgreSQL
backends, wrk): the cost outside what the in-process profile (serving_profile.py) sees.

    .venv/bin/python benchmarks/serving_bench.py                 # 10 s x 3 rounds per cell, c = 8 and 32
    .venv/bin/python benchmarks/serving_bench.py --duration 5 --runs 1 --servers churnops bare
Needs `wrk` (apt-get install wrk) and a trained champion in the working folder (`make run`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import psycopg2

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.serving_bench_support import (  # noqa: E402
    API_KEY,
    CpuMeter,
    bench_database,
    counted_connections,
    cpu_line,
    cpu_per_request,
    drop_bench_database,
    load_average,
    log_backend_pids,
    metric,
    server,
    unused_port,
    wrk,
)
from churnops.config import Settings  # noqa: E402
from churnops.dataset import load_contract  # noqa: E402
from churnops.features import CUTOFF, ENTITY_ID  # noqa: E402
from churnops.registry import CHAMPION_ALIAS, configure_mlflow, load_model_version, resolve_alias  # noqa: E402
from churnops.snapshots import latest_snapshot_dir, load_snapshot  # noqa: E402

SERVERS = ("churnops", "bare", "mlflow")


@dataclass(frozen=True)
class Run:
    server: str
    rows: int
    connections: int
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    errors: int
    cpu_us: dict[str, float] = field(default_factory=dict)
    # wrk's connections per worker process, counted halfway through the round: a worker with none idles.
    connections_per_worker: tuple[int, ...] = ()


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


@dataclass(frozen=True)
class Target:
    """One server under load: where each request size goes, with which body and key."""

    name: str
    endpoints: dict[int, tuple[str, bytes]]  # rows per request -> (url, body)
    key: str = ""
    meter: CpuMeter | None = None


def one_run(target: Target, rows: int, connections: int, args: argparse.Namespace, workdir: Path) -> Run:
    url, body = target.endpoints[rows]
    before = target.meter.sample() if target.meter else {}
    with counted_connections(target.meter.root_pid if target.meter else None, url, args.duration / 2) as split:
        raw = wrk(url, body, connections, args.duration, args.wrk_threads, workdir, target.key)
    after = target.meter.sample() if target.meter else {}
    errors = sum(raw[k] for k in ("status_errors", "connect_errors", "read_errors", "write_errors", "timeouts"))
    return Run(
        server=target.name,
        rows=rows,
        connections=connections,
        requests_per_second=raw["requests"] / (raw["duration_us"] / 1e6),
        p50_ms=raw["p50_us"] / 1000,
        p99_ms=raw["p99_us"] / 1000,
        errors=errors,
        cpu_us=cpu_per_request(before, after, raw),
        connections_per_worker=tuple(split),
    )


def round_text(run: Run) -> str:
    """A round's req/s, with wrk's connections per worker when counted: `1795 (4/4)`."""
    split = f" ({'/'.join(map(str, run.connections_per_worker))})" if run.connections_per_worker else ""
    return f"{run.requests_per_second:.0f}{split}"


def measure_alternating(targets: list[Target], args: argparse.Namespace, workdir: Path) -> list[Run]:
    """Per cell, every target in turn for `args.runs` rounds (order rotated each round); the median of each."""
    results = []
    for rows in args.rows:
        for connections in args.connections:
            for target in targets:  # warm-up, not recorded
                url, body = target.endpoints[rows]
                wrk(url, body, connections, args.warmup, args.wrk_threads, workdir, target.key)
            runs: dict[str, list[Run]] = {target.name: [] for target in targets}
            for round_index in range(args.runs):
                shift = round_index % len(targets)
                for target in targets[shift:] + targets[:shift]:
                    runs[target.name].append(one_run(target, rows, connections, args, workdir))
            for target in targets:
                done = runs[target.name]
                median = Run(
                    server=target.name,
                    rows=rows,
                    connections=connections,
                    requests_per_second=statistics.median(r.requests_per_second for r in done),
                    p50_ms=statistics.median(r.p50_ms for r in done),
                    p99_ms=statistics.median(r.p99_ms for r in done),
                    errors=sum(r.errors for r in done),
                    cpu_us={role: statistics.median(r.cpu_us[role] for r in done) for role in done[0].cpu_us},
                )
                print(
                    f"  {target.name:9s} rows={rows:<3d} c={connections:<3d} {median.requests_per_second:9.1f} req/s"
                    f"  p50 {median.p50_ms:7.2f} ms  p99 {median.p99_ms:8.2f} ms  errors {median.errors}  "
                    f"(rounds: {', '.join(round_text(r) for r in done)} req/s; "
                    f"load {load_average()})\n{'':13s}{cpu_line(median.cpu_us)}",
                    flush=True,
                )
                results.append(median)
    return results


def start_servers(
    stack: contextlib.ExitStack,
    args: argparse.Namespace,
    model_name: str,
    version: str,
    bodies: dict[int, tuple[bytes, bytes, dict[str, Any]]],
    base_env: dict[str, str],
    workdir: Path,
) -> tuple[list[Target], str | None, str | None]:
    """Start the requested servers; returns the targets, the churnops URL and its prediction-log database."""
    venv_bin = Path(sys.executable).parent
    targets: list[Target] = []
    churnops_url = database_url = None
    if "churnops" in args.servers:
        database_url = stack.enter_context(bench_database())
        port = unused_port()
        env = {
            **base_env,
            "CHURNOPS_SERVING__API_KEY": API_KEY,
            "CHURNOPS_DATABASE_URL": database_url,
            "PROMETHEUS_MULTIPROC_DIR": str(workdir / "prometheus"),
        }
        command = [str(venv_bin / "churnops"), "serve", "--host", "127.0.0.1", "--port", str(port)]
        churnops_url = f"http://127.0.0.1:{port}"
        churnops_pid = stack.enter_context(
            server([*command, "--workers", str(args.workers)], env, f"{churnops_url}/ready", workdir / "churnops.log")
        )
        # /ready answered from one worker; the others may still be loading (503): wait until a run of answers is 200.
        deadline, in_a_row = time.monotonic() + 120, 0
        while in_a_row < 10 and time.monotonic() < deadline:
            check = httpx.post(f"{churnops_url}/predict", json=bodies[args.rows[0]][2], headers={"X-API-Key": API_KEY})
            in_a_row = in_a_row + 1 if check.status_code == 200 else 0
            time.sleep(0.05 if in_a_row else 0.5)
        check.raise_for_status()
        print(f"churnops API: first score {check.json()['probability']:.12f}", flush=True)
        # One row goes to /predict (the CRM's call), several to /batch_predict.
        endpoints = {r: (f"{churnops_url}/{'predict' if r == 1 else 'batch_predict'}", b[0]) for r, b in bodies.items()}
        targets.append(Target("churnops", endpoints, API_KEY, CpuMeter(churnops_pid, log_backend_pids(database_url))))
    if "bare" in args.servers:
        port = unused_port()
        env = {**base_env, "BENCH_MODEL_NAME": model_name, "BENCH_MODEL_VERSION": version}
        # Started as `churnops serve` starts the API (a listening socket per worker), so the ceiling differs from
        # the API by the app alone.
        command = [sys.executable, "-m", "churnops.serving.workers", "bare_booster_app:app"]
        command += ["--app-dir", str(REPO / "benchmarks"), "--host", "127.0.0.1", "--port", str(port)]
        command += ["--workers", str(args.workers)]
        url = f"http://127.0.0.1:{port}"
        bare_pid = stack.enter_context(server(command, env, url, workdir / "bare.log"))
        targets.append(Target("bare", {r: (url, b[0]) for r, b in bodies.items()}, meter=CpuMeter(bare_pid)))
    if "mlflow" in args.servers:
        port = unused_port()
        command = [str(venv_bin / "mlflow"), "models", "serve", "-m", f"models:/{model_name}/{version}"]
        command += ["--env-manager", "local", "-h", "127.0.0.1", "-p", str(port), "-w", str(args.workers)]
        url = f"http://127.0.0.1:{port}"
        mlflow_pid = stack.enter_context(server(command, base_env, f"{url}/ping", workdir / "mlflow.log"))
        check = httpx.post(
            f"{url}/invocations", content=bodies[args.rows[0]][1], headers={"content-type": "application/json"}
        )
        check.raise_for_status()
        print(f"mlflow models serve: first score {check.json()['predictions'][0]:.12f}", flush=True)
        mlflow_endpoints = {r: (f"{url}/invocations", b[1]) for r, b in bodies.items()}
        targets.append(Target("mlflow", mlflow_endpoints, meter=CpuMeter(mlflow_pid)))
    return targets, churnops_url, database_url


def check_prediction_log(churnops_url: str, database_url: str, timeout: float = 300.0) -> str:
    """Every prediction of the run must reach PostgreSQL: the line saying so, or SystemExit naming the loss. Waits for
    the counts to agree (a spool may be replaying; a worker's count reaches /metrics at its next flush, 1 s)."""

    def counts() -> tuple[str, int]:
        with contextlib.closing(psycopg2.connect(database_url)) as conn, conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM churnops.prediction_log")
            return httpx.get(f"{churnops_url}/metrics").text, cur.fetchone()[0]

    deadline = time.monotonic() + timeout
    exposition, logged = counts()
    while logged != metric(exposition, "churnops_predictions_total") and time.monotonic() < deadline:
        time.sleep(1)
        exposition, logged = counts()
    predicted = metric(exposition, "churnops_predictions_total")
    dropped = metric(exposition, "churnops_prediction_log_dropped_total")
    spooled = metric(exposition, "churnops_prediction_log_spooled_total")
    replayed = metric(exposition, "churnops_prediction_log_replayed_total")
    line = (
        f"prediction log: {predicted:,.0f} predictions, {logged:,} rows in PostgreSQL, {dropped:,.0f} dropped "
        f"({spooled:,.0f} spooled under load, {replayed:,.0f} replayed from the spool)"
    )
    print(line, flush=True)
    if logged != predicted or dropped:
        raise SystemExit(f"the prediction log lost rows: {line}")
    return line


def ratio_lines(results: list[Run]) -> list[str]:
    lines = []
    by_cell = {(r.server, r.rows, r.connections): r for r in results}
    for (server_name, rows, connections), run in sorted(by_cell.items()):
        if server_name != "churnops":
            continue
        for other in ("bare", "mlflow"):
            if (other, rows, connections) in by_cell:
                base = by_cell[(other, rows, connections)]
                ratio = run.requests_per_second / base.requests_per_second
                lines.append(
                    f"rows={rows} c={connections}: churnops / {other} = {ratio:.2f}x "
                    f"({run.requests_per_second * rows:,.0f} vs {base.requests_per_second * rows:,.0f} rows/s; "
                    f"p99 {run.p99_ms:.2f} vs {base.p99_ms:.2f} ms)"
                )
    return lines


def table_lines(results: list[Run]) -> list[str]:
    lines = [
        "| server | rows/request | connections | requests/s | rows/s | p50 ms | p99 ms | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for run in results:
        lines.append(
            f"| {run.server} | {run.rows} | {run.connections} | {run.requests_per_second:,.0f} | "
            f"{run.requests_per_second * run.rows:,.0f} | {run.p50_ms:.2f} | {run.p99_ms:.2f} | {run.errors} |"
        )
    return lines


DOC = REPO / "docs" / "benchmarks" / "serving.md"
DOC_START, DOC_END = "<!-- serving_bench.py --write-doc: start -->", "<!-- serving_bench.py --write-doc: end -->"


def write_doc(section: list[str]) -> None:
    """Replace the generated section of docs/benchmarks/serving.md (between the markers) with this run's."""
    text = DOC.read_text()
    if DOC_START not in text or DOC_END not in text:
        raise SystemExit(f"{DOC} has no {DOC_START} ... {DOC_END} section to replace")
    head, rest = text.split(DOC_START, 1)
    tail = rest.split(DOC_END, 1)[1]
    DOC.write_text(f"{head}{DOC_START}\n" + "\n".join(section) + f"\n{DOC_END}{tail}")
    print(f"wrote the table into {DOC}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", help="model version (default: the champion)")
    parser.add_argument("--duration", type=int, default=10, help="seconds per recorded run")
    parser.add_argument("--warmup", type=int, default=2, help="seconds of unrecorded load per server before each cell")
    parser.add_argument("--runs", type=int, default=3, help="rounds per cell (each server once per round)")
    parser.add_argument("--connections", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 100])
    parser.add_argument("--workers", type=int, default=2, help="worker processes of each server")
    parser.add_argument("--wrk-threads", type=int, default=1, help="wrk threads (the load generator shares the cores)")
    parser.add_argument("--servers", nargs="+", default=list(SERVERS), choices=SERVERS)
    parser.add_argument("--keep-database", action="store_true", help="keep the prediction-log database afterwards")
    parser.add_argument("--output", type=Path, help="write every median as JSON here")
    parser.add_argument(
        "--write-doc", action="store_true", help="write the table into docs/benchmarks/serving.md (between markers)"
    )
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

    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    load_before = load_average()
    log_line = "prediction log: not measured (churnops not in --servers)"
    with tempfile.TemporaryDirectory(prefix="serving-bench-") as tmp, contextlib.ExitStack() as stack:
        workdir = Path(tmp)
        base_env = {
            **os.environ,
            "OMP_NUM_THREADS": "1",
            "MLFLOW_TRACKING_URI": settings.tracking_uri,
            # `mlflow models serve` starts `uvicorn` through bash: it must be on PATH.
            "PATH": f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}",
        }
        targets, churnops_url, database_url = start_servers(
            stack, args, contract.model_name, version, bodies, base_env, workdir
        )
        results = measure_alternating(targets, args, workdir)
        if churnops_url and database_url:
            log_line = check_prediction_log(churnops_url, database_url)
    if "churnops" in args.servers and not args.keep_database:
        drop_bench_database()

    load_after = load_average()
    print(f"\nload after: {load_after}\n")
    table, ratios = table_lines(results), ratio_lines(results)
    print("\n".join([*table, *ratios]))
    if args.output:
        args.output.write_text(json.dumps([asdict(r) for r in results], indent=2))
    if args.write_doc:
        command = " ".join(["benchmarks/serving_bench.py", *sys.argv[1:]])
        write_doc(
            [
                f"Run of {started}: `.venv/bin/python {command}` ({args.runs} rounds x {args.duration} s per cell, "
                f"medians; model {contract.model_name} v{version}; {os.cpu_count()} cores; load average "
                f"{load_before} before, {load_after} after).",
                "",
                *table,
                "",
                f"{log_line[0].upper()}{log_line[1:]}. Ratios in the same rounds:",
                "",
                *(f"- {line}" for line in ratios),
            ]
        )


if __name__ == "__main__":
    main()
