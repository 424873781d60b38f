"""Benchmark: batch scoring of 1M customers end to end (read features, predict, band, write to PostgreSQL).

    .venv/bin/python benchmarks/score_1m.py                 # 1M customers, 3 runs, local PostgreSQL
    .venv/bin/python benchmarks/score_1m.py --customers 100000 --runs 1

Set-up (not part of the timed path, reported apart): a features Parquet with plausible numeric churn features is
generated with numpy (cached under .churnops/bench/), and a small LightGBM booster is trained on a 50k sample of it,
since the point is the scoring path, not the model. Each timed run then does what the scoring job does: read the
Parquet, `Booster.predict`, `build_score_frame` (decision, deciles, bands), `write_scores` into a throwaway
PostgreSQL database (created and dropped here). Run 1 writes into an empty table; later runs re-run the same logical
date, so they also delete the previous 1M rows in the same transaction. Figures: median of the runs per stage.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import time
import uuid
from contextlib import closing
from pathlib import Path

import numpy as np
import pandas as pd
import psycopg2
from psycopg2 import sql

from churnops.banding import build_score_frame
from churnops.db import migrate, write_scores

REPO = Path(__file__).resolve().parents[1]
ADMIN_URL = os.environ.get("CHURNOPS_TEST_POSTGRES_URL", "postgresql://root@127.0.0.1:5432/test")
STAGES = ("read", "predict", "band", "write", "total")


def generate_features(n: int, seed: int = 7) -> tuple[pd.DataFrame, np.ndarray]:
    """Plausible per-customer churn features (counts, amounts, recency, tenure, trends) and a churn label."""
    rng = np.random.default_rng(seed)
    activity = rng.gamma(2.0, 2.0, n)  # a customer's latent activity level
    columns: dict[str, np.ndarray] = {"customer_id": np.char.add("C", np.arange(n).astype(str).astype("U9"))}
    for window in (7, 30, 90, 180, 365):
        count = rng.poisson(activity * window / 30)
        columns[f"event_count_{window}d"] = count.astype(np.float32)
        amount = rng.lognormal(3.0, 0.8, n).astype(np.float32)
        columns[f"amount_sum_{window}d"] = count * amount
        mean = np.where(count > 0, amount, np.nan).astype(np.float32)
        columns[f"amount_mean_{window}d"] = mean
        columns[f"amount_max_{window}d"] = (mean * rng.uniform(1.0, 3.0, n)).astype(np.float32)
        columns[f"active_days_{window}d"] = np.minimum(count, window).astype(np.float32)
    recency = rng.exponential(30 / (activity + 0.1)).astype(np.float32)
    columns["days_since_last_event"] = recency
    columns["days_since_first_event"] = (recency + rng.uniform(30, 2000, n)).astype(np.float32)
    columns["event_trend_30d"] = ((columns["event_count_30d"] + 1) / (rng.poisson(activity) + 1)).astype(np.float32)
    for name in ("purchase", "session", "support_call", "payment"):
        for window in (30, 90):
            columns[f"{name}_count_{window}d"] = rng.poisson(activity * window / 120).astype(np.float32)
    for extra in range(6):
        columns[f"attribute_{extra}"] = rng.normal(0, 1, n).astype(np.float32)
    features = pd.DataFrame(columns)
    logit = -1.5 + 0.04 * recency - 0.35 * activity + 0.5 * columns["attribute_0"]
    label = rng.random(n) < 1 / (1 + np.exp(-logit))
    return features, label


def prepare(work_dir: Path, n: int) -> tuple[Path, object, float, float]:
    """Features Parquet (cached) and a small booster; returns their set-up wall times."""
    import lightgbm as lgb

    path = work_dir / f"features_{n}.parquet"
    started = time.perf_counter()
    features, label = generate_features(n)
    if not path.exists():
        work_dir.mkdir(parents=True, exist_ok=True)
        features.to_parquet(path, index=False)
    generate_seconds = time.perf_counter() - started
    started = time.perf_counter()
    sample = np.random.default_rng(0).choice(n, size=min(n, 50_000), replace=False)
    train = lgb.Dataset(features.drop(columns="customer_id").iloc[sample], label=label[sample])
    params = {"objective": "binary", "num_leaves": 31, "learning_rate": 0.1, "verbose": -1, "seed": 0}
    booster = lgb.train(params, train, num_boost_round=100)
    train_seconds = time.perf_counter() - started
    return path, booster, generate_seconds, train_seconds


def score_once(conn: psycopg2.extensions.connection, booster: object, path: Path) -> dict[str, float]:
    """One end-to-end scoring run; wall seconds per stage."""
    times: dict[str, float] = {}
    started = stage = time.perf_counter()
    features = pd.read_parquet(path)
    times["read"] = time.perf_counter() - stage
    stage = time.perf_counter()
    scores = booster.predict(features.drop(columns="customer_id").to_numpy(dtype=np.float32))
    times["predict"] = time.perf_counter() - stage
    stage = time.perf_counter()
    frame = build_score_frame(
        customer_ids=features["customer_id"],
        scores=scores,
        cutoff=dt.date(2024, 6, 30),
        threshold=0.5,
        model_name="bench_lgbm",
        model_version="1",
    )
    times["band"] = time.perf_counter() - stage
    stage = time.perf_counter()
    written = write_scores(conn, frame, dataset="bench", run_id=uuid.uuid4().hex, logical_date=dt.date(2024, 7, 1))
    times["write"] = time.perf_counter() - stage
    times["total"] = time.perf_counter() - started
    assert written == len(features), (written, len(features))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--work-dir", type=Path, default=REPO / ".churnops" / "bench")
    args = parser.parse_args()

    path, booster, generate_seconds, train_seconds = prepare(args.work_dir, args.customers)
    print(f"set-up: features generated in {generate_seconds:.1f} s ({path}), booster trained in {train_seconds:.1f} s")

    database = f"churnops_bench_{uuid.uuid4().hex[:8]}"
    with closing(psycopg2.connect(ADMIN_URL)) as admin:
        admin.autocommit = True
        admin.cursor().execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    try:
        with closing(psycopg2.connect(psycopg2.extensions.make_dsn(ADMIN_URL, dbname=database))) as conn:
            migrate(conn)
            runs = []
            for number in range(1, args.runs + 1):
                runs.append(score_once(conn, booster, path))
                print(f"run {number}: " + "  ".join(f"{s} {runs[-1][s]:6.2f} s" for s in STAGES))
    finally:
        with closing(psycopg2.connect(ADMIN_URL)) as admin:
            admin.autocommit = True
            admin.cursor().execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database)))

    print(f"\n{args.customers:,} customers, median of {args.runs} runs (wall seconds)")
    print("| stage | median s | runs |")
    print("|---|---:|---|")
    for stage in STAGES:
        values = [run[stage] for run in runs]
        print(f"| {stage} | {statistics.median(values):.2f} | {' / '.join(f'{v:.2f}' for v in values)} |")


if __name__ == "__main__":
    main()
