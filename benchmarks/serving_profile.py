"""Where a request's time goes inside the churnops API: the real app, everything on, called in-process.

Builds the app as `churnops serve` does (API key, multiprocess Prometheus metrics in a temporary folder, the
prediction log into a fresh PostgreSQL database when `--database-url` is given), then drives `/predict` or
`/batch_predict` through the ASGI interface directly (no sockets, no HTTP parsing: what is left is the API's own
cost) in alternating rounds with the bare booster of `serving_bench.py` (the ceiling), and prints the CPU
microseconds per request of each and their ratio, then, with `--profile`, the cProfile of one more churnops round.

    .venv/bin/python benchmarks/serving_profile.py --rows 100 --requests 2000 --profile
    .venv/bin/python benchmarks/serving_profile.py --rows 1 --database-url postgresql://postgres@127.0.0.1:5432/test

The bodies are real rows of the latest snapshot (the same as `serving_bench.py`); needs a trained champion.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

API_KEY = "serving-profile-key"


async def call(app: Any, path: str, body: bytes) -> tuple[int, bytes]:
    """One POST through the ASGI interface; returns (status, body)."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"127.0.0.1"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"x-api-key", API_KEY.encode()),
        ],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8000),
    }
    sent = False
    answer: dict[str, Any] = {"status": 0, "body": b""}

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            answer["status"] = message["status"]
        elif message["type"] == "http.response.body":
            answer["body"] += message.get("body", b"")

    await app(scope, receive, send)
    return answer["status"], answer["body"]


async def drive(app: Any, path: str, body: bytes, requests: int, profile: cProfile.Profile | None) -> float:
    """Mean CPU seconds of this process per request over `requests` calls (after a warm-up), profiled when `profile`
    is given. CPU time, not wall time: on a shared machine it is the steadier figure (the prediction log's thread
    and its COPY client work are included; PostgreSQL's own work is not)."""
    for _ in range(50):
        status, answer = await call(app, path, body)
        if status != 200:
            raise SystemExit(f"{path} answered {status}: {answer[:500]!r}")
    started = time.process_time()
    if profile is not None:
        profile.enable()
    for _ in range(requests):
        await call(app, path, body)
    if profile is not None:
        profile.disable()
    return (time.process_time() - started) / requests


async def main_async(args: argparse.Namespace) -> None:
    from benchmarks.serving_bench import request_bodies
    from churnops.config import Settings
    from churnops.dataset import load_contract
    from churnops.registry import CHAMPION_ALIAS, configure_mlflow, load_model_version, resolve_alias
    from churnops.serving.app import create_app

    overrides: dict[str, Any] = {"serving": {"api_key": API_KEY}}
    if args.database_url:
        overrides["database_url"] = args.database_url
    settings = Settings(**overrides)
    contract = load_contract(settings.dataset, settings)
    configure_mlflow(settings)
    model = load_model_version(contract.model_name, resolve_alias(contract.model_name, CHAMPION_ALIAS))
    body = request_bodies(settings, model, args.rows)[0]
    path = "/predict" if args.rows == 1 else "/batch_predict"
    # The benchmark's ceiling (benchmarks/bare_booster_app.py), driven the same way, in alternating rounds.
    os.environ |= {"BENCH_MODEL_NAME": contract.model_name, "BENCH_MODEL_VERSION": model.version}
    from benchmarks.bare_booster_app import app as bare_app

    app = create_app(settings)
    churnops_us: list[float] = []
    bare_us: list[float] = []
    async with app.api.router.lifespan_context(app.api):
        for _ in range(args.rounds):
            churnops_us.append(await drive(app, path, body, args.requests, None) * 1e6)
            bare_us.append(await drive(bare_app, path, body, args.requests, None) * 1e6)
        profile = cProfile.Profile() if args.profile else None
        if profile is not None:  # one more round, profiled (cProfile slows it down: not in the figures above)
            await drive(app, path, body, args.requests, profile)
        log = app.state.prediction_log.describe()
    ours, ceiling = statistics.median(churnops_us), statistics.median(bare_us)
    print(
        f"{path}, {args.rows} row(s) per request, CPU us per request (median of {args.rounds} rounds of "
        f"{args.requests}): churnops {ours:,.0f} ({ours / args.rows:,.1f} per row), bare booster {ceiling:,.0f}; "
        f"bare / churnops = {ceiling / ours:.2f}\nrounds: churnops {[round(v) for v in churnops_us]}, bare "
        f"{[round(v) for v in bare_us]}; prediction log {log}"
    )
    if profile is not None:
        pstats.Stats(profile).sort_stats(args.sort).print_stats(args.top)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100, help="rows per request (1: /predict)")
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--database-url", help="write the prediction log into this (migrated) database")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of churnops and the bare booster")
    parser.add_argument("--profile", action="store_true", help="print the cProfile of the measured loop")
    parser.add_argument("--sort", default="tottime", help="pstats sort key")
    parser.add_argument("--top", type=int, default=30, help="functions shown")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="serving-profile-") as metrics_dir:
        # Multiprocess metrics as under `churnops serve --workers N`: set before prometheus_client is imported.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
        asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
