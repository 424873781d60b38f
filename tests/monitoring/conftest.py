"""Fixtures for monitoring tests: small frames with a known drift, and a throwaway PostgreSQL database."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import closing

import numpy as np
import pandas as pd
import psycopg2
import psycopg2.extensions
import psycopg2.sql
import pytest

ADMIN_URL = os.environ.get("CHURNOPS_TEST_POSTGRES_URL", "postgresql://root@127.0.0.1:5432/test")
NUMERIC = ["spend_30d", "visits_30d", "age", "days_since_last_event", "support_calls_90d"]
CATEGORICAL = ["plan", "region"]


def customer_frame(rows: int, seed: int) -> pd.DataFrame:
    """A feature frame shaped like a snapshot's: continuous, low-cardinality count and categorical columns."""
    rng = np.random.default_rng(seed)
    spend = rng.gamma(2.0, 40.0, rows)
    spend[rng.random(rows) < 0.05] = np.nan  # customers with no purchase in the window
    return pd.DataFrame(
        {
            "spend_30d": spend,
            "visits_30d": rng.poisson(6, rows).astype(float),
            "age": rng.normal(42, 12, rows).round(),
            "days_since_last_event": rng.exponential(20, rows).round(),
            "support_calls_90d": rng.poisson(0.4, rows).astype(float),
            "plan": rng.choice(["basic", "pro", "max"], rows, p=[0.5, 0.35, 0.15]),
            "region": rng.choice(["north", "south", "east", "west"], rows),
        }
    )


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh database with the churnops schema (churnops/migrations), dropped afterwards. FAILS without a server."""
    from churnops import db

    try:
        admin = psycopg2.connect(ADMIN_URL, connect_timeout=5)
    except psycopg2.OperationalError as error:
        pytest.fail(f"PostgreSQL at {ADMIN_URL} is unreachable (set CHURNOPS_TEST_POSTGRES_URL): {error}")
    admin.autocommit = True
    name = f"churnops_t{uuid.uuid4().hex[:8]}_monitoring"
    with admin.cursor() as cur:
        cur.execute(psycopg2.sql.SQL("CREATE DATABASE {}").format(psycopg2.sql.Identifier(name)))
    url = psycopg2.extensions.make_dsn(ADMIN_URL, dbname=name)
    try:
        with closing(psycopg2.connect(url)) as conn:
            db.migrate(conn)
        params = psycopg2.extensions.parse_dsn(url)
        yield (
            f"postgresql://{params.get('user', 'root')}@{params.get('host', '127.0.0.1')}:"
            f"{params.get('port', '5432')}/{name}"
        )
    finally:
        with admin.cursor() as cur:
            cur.execute(
                psycopg2.sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(psycopg2.sql.Identifier(name))
            )
        admin.close()
