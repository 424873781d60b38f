"""Benchmark: the list page over a list of 1M customers, time per page request through the real app.

    .venv/bin/python benchmarks/pages_bench.py                     # 1M customers, 9 requests per case
    .venv/bin/python benchmarks/pages_bench.py --customers 100000 --requests 5 --no-write

Set-up (timed apart, not part of the figures): a throwaway PostgreSQL database (created and dropped here) gets a
1M-row scoring list through `churnops.db.write_scores` and 1M published customers (plan, region, channel and two
activity features) through `churnops.online_store.write_online_features`, as the scoring job and the feature DAG
write them; then ANALYZE, as autovacuum would. The app is `churnops.serving.app.create_app` (no champion is needed for
the list), called in-process with Starlette's TestClient: each figure is the whole request (routing, the key check, the
queries, Jinja2 rendering of 50 rows), median of the requests after one warm-up request per case.
Writes docs/benchmarks/pages.md unless --no-write.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import tempfile
import time
import uuid
from contextlib import closing
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pandas as pd
import psycopg2
from fastapi.testclient import TestClient
from psycopg2 import sql
from pydantic import SecretStr

from churnops import db
from churnops.banding import build_score_frame
from churnops.config import Settings
from churnops.online_store import write_online_features
from churnops.serving.app import create_app

REPO = Path(__file__).resolve().parents[1]
ADMIN_URL = os.environ.get("CHURNOPS_TEST_POSTGRES_URL", "postgresql://root@127.0.0.1:5432/test")
API_KEY = "bench-key"
LOGICAL_DATE = dt.date(2024, 1, 1)


def fill(conn: psycopg2.extensions.connection, settings: Settings, n: int) -> dict[str, float]:
    rng = np.random.default_rng(5)
    ids = np.char.add("c", np.arange(n).astype(str))
    scores = build_score_frame(
        customer_ids=ids,
        scores=rng.beta(2, 8, n),
        cutoff=LOGICAL_DATE,
        threshold=0.3,
        model_name="synthetic_churn",
        model_version="1",
        bands=settings.scoring.risk_bands,
    )
    started = time.perf_counter()
    db.write_scores(conn, scores, dataset="synthetic", run_id="bench", logical_date=LOGICAL_DATE)
    scores_seconds = time.perf_counter() - started
    features = pd.DataFrame(
        {
            "customer_id": ids,
            "plan": rng.choice(["basic", "standard", "premium"], n),
            "region": rng.choice(["north", "south", "east", "west"], n),
            "channel": rng.choice(["web", "store", "phone"], n),
            "event_count_30d": rng.poisson(4, n).astype(float),
            "days_since_last_event": rng.integers(0, 90, n).astype(float),
        }
    )
    started = time.perf_counter()
    write_online_features(conn, features, dataset="synthetic", cutoff=LOGICAL_DATE)
    features_seconds = time.perf_counter() - started
    with conn, conn.cursor() as cur:
        cur.execute("ANALYZE churnops.scores; ANALYZE churnops.online_features")
    return {"scores": scores_seconds, "features": features_seconds}


def deep_cursor(conn: psycopg2.extensions.connection, rank: int) -> str:
    """The page position after `rank` customers, as the list page's "Next page" link carries it."""
    with conn, conn.cursor() as cur:
        cur.execute(
            "SELECT score, customer_id FROM churnops.scores ORDER BY score DESC, customer_id OFFSET %s LIMIT 1",
            (rank - 1,),
        )
        score, customer_id = cur.fetchone()
    return quote(f"{score!r}:{customer_id}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=9)
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks/pages.md alone")
    args = parser.parse_args()

    database = f"churnops_bench_{uuid.uuid4().hex[:8]}"
    with closing(psycopg2.connect(ADMIN_URL)) as admin:
        admin.autocommit = True
        admin.cursor().execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    url = f"{ADMIN_URL.rsplit('/', 1)[0]}/{database}"  # a URL: the API adds its timeouts as URL parameters
    try:
        with tempfile.TemporaryDirectory() as home, closing(psycopg2.connect(url)) as conn:
            settings = Settings(home=Path(home), database_url=SecretStr(url))
            settings = settings.model_copy(
                update={"serving": settings.serving.model_copy(update={"api_key": SecretStr(API_KEY)})}
            )
            db.migrate(conn)
            setup = fill(conn, settings, args.customers)
            print(f"set-up: scores written in {setup['scores']:.1f} s, features in {setup['features']:.1f} s")
            near_end = max(1, args.customers - 1000)
            cases = {
                "first page, whole list": "/pages/list",
                f"page after customer {near_end:,} (keyset)": f"/pages/list?after={deep_cursor(conn, near_end)}"
                f"&start={near_end + 1}",
                "band high": "/pages/list?band=high",
                "band medium, score 0.25 to 0.35": "/pages/list?band=medium&score_min=0.25&score_max=0.35",
                "segment plan=premium, region=north": "/pages/list?segment_plan=premium&segment_region=north",
                "segment plan=premium, region=north, next page": "/pages/list?segment_plan=premium"
                f"&segment_region=north&after={deep_cursor(conn, 50)}&start=51&matches=501",
                "band high + segment + money budget": "/pages/list?band=high&segment_plan=basic"
                "&budget_money=5000&cost_per_contact=2.5",
            }
            results = {}
            with TestClient(create_app(settings), headers={"X-API-Key": API_KEY}) as client:
                for name, path in cases.items():
                    warm = client.get(path)  # warm-up: pool, segment values, plans
                    assert warm.status_code == 200, (path, warm.text[-600:])
                    seconds = []
                    for _ in range(args.requests):
                        started = time.perf_counter()
                        response = client.get(path)
                        seconds.append(time.perf_counter() - started)
                        assert response.status_code == 200 and "<tbody>" in response.text, path
                    results[name] = seconds
                    print(f"{name:<45} median {statistics.median(seconds) * 1000:7.1f} ms")
    finally:
        with closing(psycopg2.connect(ADMIN_URL)) as admin:
            admin.autocommit = True
            admin.cursor().execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database)))

    load = " ".join(f"{value:.2f}" for value in os.getloadavg())
    lines = [
        "# List page benchmark",
        "",
        f"Generated by `benchmarks/pages_bench.py --customers {args.customers} --requests {args.requests}` on "
        f"{dt.date.today()}; do not edit by hand. {os.cpu_count()} cores, load average before the report {load}.",
        "",
        f"A scoring list of {args.customers:,} customers and as many published customers in a throwaway PostgreSQL "
        "database; each figure is one whole request through the real app (key check, queries, 50 rows rendered), "
        f"median of {args.requests} after a warm-up request.",
        "",
        "| request | median ms | max ms |",
        "|---|---:|---:|",
    ]
    for name, seconds in results.items():
        lines.append(f"| {name} | {statistics.median(seconds) * 1000:.1f} | {max(seconds) * 1000:.1f} |")
    report = "\n".join(lines) + "\n"
    print("\n" + report)
    if not args.no_write:
        (REPO / "docs" / "benchmarks" / "pages.md").write_text(report)


if __name__ == "__main__":
    main()
