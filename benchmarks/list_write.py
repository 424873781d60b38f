"""Benchmark: replacing a 1M-row scoring list in PostgreSQL with the real `churnops.db.write_scores`.

    .venv/bin/python benchmarks/list_write.py                     # 1M customers, 3 runs, median per step
    .venv/bin/python benchmarks/list_write.py --customers 100000 --runs 1

The list is realistic: every list column (churn score, decision, decile and band; the value columns; the survival
columns with some medians past the horizon, i.e. NULL), ranked highest score first as batch scoring hands it over.
It is written into a throwaway database (named with this process id, created, migrated and dropped here). Run 1
writes into an empty table; later runs replace the same list (a retried run). Per-step times come from the DEBUG
records `write_scores` logs (`churnops.db.scores.timed_step`); wall is the whole call. Figures on a shared machine
are indicative: the load average is printed beside them.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import statistics
import time
from contextlib import closing

import numpy as np
import pandas as pd
import psycopg2
from psycopg2 import sql

from churnops.banding import build_score_frame
from churnops.db import migrate, write_scores
from churnops.survival_columns import MEDIAN_BEYOND_HORIZON, MEDIAN_DAYS, SURVIVAL_HORIZONS_DAYS, p_buy_column

ADMIN_URL = os.environ.get("CHURNOPS_TEST_POSTGRES_URL", "postgresql://root@127.0.0.1:5432/test")
CUTOFF = dt.date(2024, 2, 29)


def realistic_list(customers: int, seed: int = 7) -> pd.DataFrame:
    """A ranked list with the value and survival columns, as `churnops.jobs.score` builds it."""
    rng = np.random.default_rng(seed)
    scores = np.sort(rng.beta(2, 5, size=customers))[::-1]
    frame = build_score_frame(
        customer_ids=np.array([f"CUST-{i:09d}" for i in rng.permutation(customers)]),
        scores=scores,
        cutoff=CUTOFF,
        threshold=0.5,
        model_name="churn_lgbm",
        model_version="12",
    )
    value = rng.gamma(2.0, 150.0, size=customers)
    saved = value * scores * 0.3 - 5.0
    frame["expected_value"] = value
    frame["expected_saved_value"] = saved
    frame["campaign_rank"] = (np.argsort(np.argsort(-saved)) + 1).astype(np.int64)
    frame["in_campaign"] = frame["campaign_rank"] <= customers // 10
    survive = rng.uniform(0.001, 0.02, size=customers)
    for days in SURVIVAL_HORIZONS_DAYS:
        frame[p_buy_column(days)] = 1.0 - np.exp(-survive * days)
    median = np.log(2) / survive
    beyond = median > max(SURVIVAL_HORIZONS_DAYS)
    frame[MEDIAN_DAYS] = np.where(beyond, np.nan, median)
    frame[MEDIAN_BEYOND_HORIZON] = beyond
    return frame


class StepTimes(logging.Handler):
    """Collects the `timed_step` records of one write (summed per step: a step may run on several connections)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.seconds: dict[str, float] = {}

    def emit(self, record: logging.LogRecord) -> None:
        step = getattr(record, "list_step", None)
        if step is not None:
            self.seconds[step] = self.seconds.get(step, 0.0) + float(record.seconds)  # type: ignore[attr-defined]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    scores = realistic_list(args.customers)
    database = f"churnops_listbench_{os.getpid()}"
    admin = psycopg2.connect(ADMIN_URL)
    admin.autocommit = True
    admin.cursor().execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    times = StepTimes()
    logger = logging.getLogger("churnops.db")
    logger.addHandler(times)
    logger.setLevel(logging.DEBUG)
    runs: list[dict[str, float]] = []
    try:
        with closing(psycopg2.connect(psycopg2.extensions.make_dsn(ADMIN_URL, dbname=database))) as conn:
            migrate(conn)
            for run in range(args.runs):
                times.seconds = {}
                started = time.perf_counter()
                written = write_scores(conn, scores, dataset="bench", run_id=f"run-{run}", logical_date=CUTOFF)
                wall = time.perf_counter() - started
                assert written == args.customers, written
                runs.append({**times.seconds, "wall": wall})
                print(
                    f"run {run + 1}: wall {wall:.2f} s  " + "  ".join(f"{k} {v:.2f}" for k, v in times.seconds.items())
                )
    finally:
        logger.removeHandler(times)
        admin.cursor().execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database)))
        admin.close()
    print(f"\n{args.customers:,} rows, median of {len(runs)} runs (s); loadavg {open('/proc/loadavg').read().strip()}")
    for step in runs[-1]:
        print(f"  {step:<16} {statistics.median(r.get(step, 0.0) for r in runs):6.2f}")


if __name__ == "__main__":
    main()
