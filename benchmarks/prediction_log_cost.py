"""What logging one prediction costs PostgreSQL and the API: per flush of the writer (migration 0016), per request
by column (migration 0014) sent as binary COPY or as COPY text, vs one row each.

Builds requests of `--rows` predictions of `--features` features (numbers, a few categories, some nulls), writes them
as the API's writer does into churnops.prediction_log_batches (one row for all of them), with the binary COPY of one
row per request into churnops.prediction_log_requests, the same rows as COPY text lines (the
format before binary COPY; the lines are PostgreSQL's own `COPY ... TO STDOUT` of the stored rows, so both carry
identical values), and the same predictions one row each into churnops.prediction_log_per_prediction (the shape
before 0014), in alternating rounds, in a scratch database (created, migrated, dropped). Prints, per logged
prediction, the PostgreSQL backend's CPU (user + system, read from /proc/<backend pid>/stat: the server must run on
this machine) and the client's CPU to format the COPY data.

    .venv/bin/python benchmarks/prediction_log_cost.py --rows 100 --requests 400 --rounds 3
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import os
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import psycopg2
import psycopg2.sql

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from churnops import db  # noqa: E402
from churnops.db.prediction_batches import (  # noqa: E402
    LoggedRequest,
    copy_prediction_batches,
    prediction_batch_tuple,
    request_features_json,
)
from churnops.db.prediction_log import (  # noqa: E402
    REQUEST_COLUMNS,
    LoggedColumns,
    RequestContext,
    copy_prediction_request_lines,
    copy_prediction_requests,
    prediction_request_tuple,
)

ADMIN_URL = os.environ.get("CHURNOPS_TEST_POSTGRES_URL", "postgresql://root@127.0.0.1:5432/test")
_PER_PREDICTION_COPY = (
    "COPY churnops.prediction_log_per_prediction (logged_at, request_id, endpoint, customer_id, model_name, "
    "model_version, score, decision, risk_band, latency_seconds, features) FROM STDIN"
)


def backend_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def requests_of(count: int, rows: int, features: int, seed: int) -> list[tuple[RequestContext, LoggedColumns]]:
    rng = np.random.default_rng(seed)
    names = [f"feature_{i}" for i in range(features)]
    made = []
    for request in range(count):
        values = rng.gamma(2.0, 30.0, (rows, features)).round(3)
        records = [
            {name: (None if value > 150 else float(value)) for name, value in zip(names, row, strict=True)}
            | {"plan": ["basic", "pro", None][i % 3]}
            for i, row in enumerate(values.tolist())
        ]
        scores = rng.random(rows).tolist()
        context = RequestContext(dt.datetime.now(dt.UTC), f"req-{request}", "/batch_predict", "cost", "1", 0.004)
        decisions = [score >= 0.5 for score in scores]
        bands = ["high" if decision else "low" for decision in decisions]
        made.append(
            (context, LoggedColumns([f"C{request}-{i}" for i in range(rows)], records, scores, decisions, bands))
        )
    return made


def per_prediction_text(context: RequestContext, columns: LoggedColumns) -> bytes:
    """The request as one COPY line per prediction (the format written before migration 0014)."""
    head = "\t".join([context.logged_at.isoformat(), db.copy_text(context.request_id), db.copy_text(context.endpoint)])
    lines = [
        "\t".join(
            [
                head,
                db.copy_text(customer),
                db.copy_text(context.model_name),
                db.copy_text(context.model_version),
                repr(score),
                "t" if decision else "f",
                db.copy_text(band),
                repr(context.latency_seconds),
                orjson.dumps(features).decode().replace("\\", "\\\\"),
            ]
        )
        for customer, features, score, decision, band in zip(*columns[:5], strict=True)
    ]
    return ("\n".join(lines) + "\n").encode()


def flush_tuple(requests: list[tuple[RequestContext, LoggedColumns]]) -> bytes:
    """The requests as the API's writer stores them since migration 0016: one batch row (the features serialised
    per request, as the handler does, then joined)."""
    names = list(requests[0][1].features[0])
    logged = [
        LoggedRequest(
            context.logged_at.timestamp(),
            context.request_id,
            context.endpoint,
            context.latency_seconds,
            columns.customer_ids,
            columns.scores,
            columns.decisions,
            columns.bands,
            request_features_json(names, columns.features),
        )
        for context, columns in requests
    ]
    return prediction_batch_tuple("cost", "1", names, logged)


def measure(conn: Any, pid: int, texts: list[bytes], copy: Callable[[Any, list[bytes]], object]) -> float:
    before = backend_cpu_seconds(pid)
    copy(conn, texts)
    return backend_cpu_seconds(pid) - before


def copy_per_prediction(conn: Any, texts: list[bytes]) -> None:
    with conn, conn.cursor() as cur:
        cur.copy_expert(_PER_PREDICTION_COPY, io.BytesIO(b"".join(texts)))


def copy_text_lines(conn: Any, lines: list[bytes]) -> None:
    copy_prediction_request_lines(conn, b"".join(lines))


def text_lines_of(conn: Any, tuples: list[bytes]) -> list[bytes]:
    """The requests as COPY text lines, written by PostgreSQL itself from the stored rows (then removed)."""
    with conn, conn.cursor() as cur:
        cur.execute("SELECT coalesce(max(id), 0) FROM churnops.prediction_log_requests")
        before = cur.fetchone()[0]
    copy_prediction_requests(conn, tuples)
    out = io.BytesIO()
    # COPY takes no parameters: the query is composed by psycopg2 (identifiers quoted, the id a literal).
    query = psycopg2.sql.SQL(
        "COPY (SELECT {} FROM churnops.prediction_log_requests WHERE id > {} ORDER BY id) TO STDOUT"
    ).format(psycopg2.sql.SQL(", ").join(map(psycopg2.sql.Identifier, REQUEST_COLUMNS)), psycopg2.sql.Literal(before))
    with conn, conn.cursor() as cur:
        cur.copy_expert(query, out)
        cur.execute("DELETE FROM churnops.prediction_log_requests WHERE id > %s", (before,))
    return out.getvalue().splitlines(keepends=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100, help="predictions per request")
    parser.add_argument("--requests", type=int, default=400, help="requests per COPY round")
    parser.add_argument("--features", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    requests = requests_of(args.requests, args.rows, args.features, seed=5)
    predictions = args.requests * args.rows

    started = time.process_time()
    per_request = [prediction_request_tuple(context, columns) for context, columns in requests]
    client_per_request = (time.process_time() - started) / predictions
    started = time.process_time()
    per_flush = [flush_tuple(requests)]
    client_per_flush = (time.process_time() - started) / predictions
    started = time.process_time()
    per_prediction = [per_prediction_text(context, columns) for context, columns in requests]
    client_per_prediction = (time.process_time() - started) / predictions

    name = f"churnops_t{uuid.uuid4().hex[:8]}_logcost"
    admin = psycopg2.connect(ADMIN_URL)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(psycopg2.sql.SQL("CREATE DATABASE {}").format(psycopg2.sql.Identifier(name)))
    try:
        with closing(psycopg2.connect(psycopg2.extensions.make_dsn(ADMIN_URL, dbname=name))) as conn:
            db.migrate(conn)
            with conn, conn.cursor() as cur:
                cur.execute("SELECT pg_backend_pid()")
                pid = cur.fetchone()[0]
            as_text = text_lines_of(conn, per_request)
            batch, new, text, old = [], [], [], []
            for _ in range(args.rounds):
                batch.append(measure(conn, pid, per_flush, copy_prediction_batches) / predictions)
                new.append(measure(conn, pid, per_request, copy_prediction_requests) / predictions)
                text.append(measure(conn, pid, as_text, copy_text_lines) / predictions)
                old.append(measure(conn, pid, per_prediction, copy_per_prediction) / predictions)
    finally:
        with admin.cursor() as cur:
            cur.execute(psycopg2.sql.SQL("DROP DATABASE IF EXISTS {}").format(psycopg2.sql.Identifier(name)))
        admin.close()
    print(f"{args.requests} requests x {args.rows} predictions x {args.features + 1} features, {args.rounds} rounds")
    print("| written as | PostgreSQL CPU / prediction | client formatting CPU / prediction |")
    print("|---|---:|---:|")
    print(
        f"| one row per flush (all {args.requests} requests), binary COPY | {statistics.median(batch) * 1e6:.2f} us "
        f"| {client_per_flush * 1e6:.2f} us |"
    )
    print(
        f"| one row per request, binary COPY | {statistics.median(new) * 1e6:.2f} us "
        f"| {client_per_request * 1e6:.2f} us |"
    )
    print(f"| one row per request, COPY text | {statistics.median(text) * 1e6:.2f} us | (not measured) |")
    print(f"| one row per prediction | {statistics.median(old) * 1e6:.2f} us | {client_per_prediction * 1e6:.2f} us |")
    print(
        f"PostgreSQL CPU ratio (per prediction / per request): {statistics.median(old) / statistics.median(new):.1f}x"
    )


if __name__ == "__main__":
    main()
