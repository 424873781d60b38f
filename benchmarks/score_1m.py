"""Benchmark: the scoring job's real entry point, `churnops.jobs.score.score`, on a snapshot of 1M customers, into
Parquet and PostgreSQL.

    .venv/bin/python benchmarks/score_1m.py                       # 1M customers, 3 runs
    .venv/bin/python benchmarks/score_1m.py --customers 100000 --runs 1
    .venv/bin/python benchmarks/score_1m.py --write-doc           # also writes docs/benchmarks/scoring.md

Set-up (reported apart, cached under --home): the seeded synthetic dataset (1,500 customers) goes through the real
feature job (Spark) and the real training job (Optuna + MLflow, a registered champion with its blend, calibration
and threshold). Its snapshot is then grown to N customers per scoring cutoff by resampling its rows per cutoff
under fresh customer ids, and published with the snapshot module's own hashes as the snapshot of a later run date:
a population as wide as a real one, with the real model's features and dtypes.

Timed: `score(settings, contract, run_date=...)` as the scoring DAG task calls it — read the run date's snapshot
metadata, load the champion from the MLflow registry, read and verify the scoring cutoff's rows, encode, predict,
calibrate, band, write the Parquet list atomically and replace the list in PostgreSQL (a throwaway database created
and dropped here). Run 1 writes into an empty table; later runs replace the same list (the idempotent re-run a
retried task does). Beside it, each stage is timed on its own once per run ("kernels"), and the read of the whole
snapshot (what scoring did before it read only its cutoff) for comparison.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import statistics
import sys
import time
import uuid
from contextlib import closing
from pathlib import Path

import numpy as np
import pandas as pd
import psycopg2
from psycopg2 import sql
from pydantic import SecretStr

from churnops.config import Settings
from churnops.dataset import DatasetContract, load_contract
from churnops.features import CUTOFF, ENTITY_ID
from churnops.registry import configure_mlflow, load_alias
from churnops.snapshots import (
    DATA_DIR,
    dataset_dir,
    describe,
    latest_snapshot_dir,
    load_snapshot,
    read_metadata,
    snapshot_dir_for,
)
from churnops.storage import write_parquet_atomically

sys.path.insert(0, str(Path(__file__).resolve().parent))
from grown_snapshot import publish_grown  # noqa: E402 - a sibling script, not a package

REPO = Path(__file__).resolve().parents[1]
ADMIN_URL = os.environ.get("CHURNOPS_TEST_POSTGRES_URL", "postgresql://root@127.0.0.1:5432/test")
SMALL_CUSTOMERS = 1500
PART_ROWS = 1_000_000


def trained_home(home: Path) -> tuple[Settings, DatasetContract, float]:
    """A home with the synthetic snapshot and a registered champion (built once, then reused)."""
    settings = Settings(home=home, training={"n_trials": 5, "seed": 3}, spark={"master": "local[2]"})
    contract = load_contract("synthetic", settings)
    started = time.perf_counter()
    try:
        configure_mlflow(settings)
        load_alias(contract.model_name)
        latest_snapshot_dir(settings, contract.name)
    except Exception:  # noqa: BLE001 — anything missing means the set-up has to run
        from churnops.jobs.features import run_feature_job
        from churnops.jobs.generate import generate, write_generated
        from churnops.jobs.training import train

        data = generate(SMALL_CUSTOMERS, seed=11)
        write_generated(data, contract.resolve(contract.events.path), contract.resolve(contract.entities.path))
        run_feature_job(contract, settings)
        train(settings, contract)
    return settings, contract, time.perf_counter() - started


def grown_snapshot(
    settings: Settings, contract: DatasetContract, customers: int, grow_history: bool = True
) -> tuple[dt.date, float]:
    """Publish the trained snapshot grown to `customers` rows at its scoring cutoff, as a later run date's; the
    other cutoffs grow in proportion, or (`grow_history=False`, scale.py at millions of customers, where they would
    be several times the scored rows) keep their rows."""
    started = time.perf_counter()
    # The trained snapshot is the one of the newest run date the feature job wrote (the grown ones are later).
    source_dir = sorted(
        (path.parent for path in dataset_dir(settings, contract.name).glob("*/snapshot.json")),
        key=lambda folder: (read_metadata(folder).inputs_key != "", folder.stat().st_mtime),
    )[-1]
    frame, source = load_snapshot(source_dir)
    run_date = dt.date.fromisoformat(source.run_date) + dt.timedelta(days=customers % 997 + 1)
    try:  # grown before, for this size: the same seed gives the same rows, so reuse it
        snapshot_dir_for(settings, contract.name, run_date)
        return run_date, time.perf_counter() - started
    except FileNotFoundError:
        pass
    scoring = source.cutoffs["scoring"][0]
    scale = customers / source.rows_per_cutoff[scoring]
    rng = np.random.default_rng(customers)
    parts = []
    for cutoff, rows in frame.groupby(CUTOFF, sort=True):
        size = customers if cutoff == pd.Timestamp(scoring) else round(len(rows) * (scale if grow_history else 1))
        picked = rows.iloc[rng.integers(0, len(rows), size)].reset_index(drop=True)
        picked[ENTITY_ID] = np.char.add("B", np.arange(size).astype("U8"))
        parts.append(picked)
    del frame
    grown = pd.concat(parts, ignore_index=True)
    del parts
    target = dataset_dir(settings, contract.name) / f"bench-{customers}"
    (target / DATA_DIR).mkdir(parents=True, exist_ok=True)
    for number, start in enumerate(range(0, len(grown), PART_ROWS)):
        part = grown.iloc[start : start + PART_ROWS]
        # Microsecond timestamps, as Spark writes them: Spark cannot read pandas' nanosecond ones (scale.py scores
        # the grown snapshot on Spark).
        part.to_parquet(target / DATA_DIR / f"part-{number:05d}.parquet", index=False, coerce_timestamps="us")
    del grown
    written = pd.read_parquet(target / DATA_DIR)  # described from what was written, as the feature job does
    metadata = describe(
        written,
        contract.name,
        {role: [dt.date.fromisoformat(day) for day in days] for role, days in source.cutoffs.items()},
        source.feature_columns,
        source.source_fingerprints,
        validation=source.validation,
        run_date=run_date,
        observed_until=dt.date.fromisoformat(source.observed_until) if source.observed_until else None,
    )
    publish_grown(settings, contract, target, metadata, run_date)
    return run_date, time.perf_counter() - started


def kernels(settings: Settings, contract: DatasetContract, run_date: dt.date, whole: bool) -> dict[str, float]:
    """Each stage of `score` timed on its own (same calls, same order): wall seconds, then the process's CPU
    seconds, which depend less on what else the machine runs (PostgreSQL's own work is not in them)."""
    from churnops.jobs.score import score_frame, store_list, with_model_columns

    times: dict[str, float] = {}
    cpu: dict[str, float] = {}

    def timed(name: str, call):  # wall seconds, and this process's CPU seconds (all its threads) beside them
        wall, used = time.perf_counter(), time.process_time()
        result = call()
        times[name], cpu[name] = time.perf_counter() - wall, time.process_time() - used
        return result

    snapshot_dir = snapshot_dir_for(settings, contract.name, run_date)
    cutoff = dt.date.fromisoformat(read_metadata(snapshot_dir).cutoffs["scoring"][0])
    model = timed("load champion", lambda: load_alias(contract.model_name))
    features, _ = timed(
        "read + verify scoring cutoff",
        lambda: load_snapshot(snapshot_dir, cutoffs=[cutoff], columns=model.schema.columns),
    )
    scored = timed(
        "encode, predict, calibrate, band, rank",
        lambda: score_frame(model, features, cutoff, settings.scoring.risk_bands),
    )
    scored = timed(
        "value and survival columns",
        lambda: with_model_columns(settings, contract, scored, cutoff, snapshot_dir, features),
    )
    timed(
        "write Parquet list",
        lambda: write_parquet_atomically(scored, REPO / ".churnops" / "bench" / "kernel-list.parquet"),
    )
    timed(
        "replace list in PostgreSQL",
        lambda: store_list(settings, scored, contract.name, "bench-kernel", cutoff, "backfill"),
    )
    if whole:
        timed("(read + verify whole snapshot, run 1 only)", lambda: load_snapshot(snapshot_dir))
    times.update({f"{name} [CPU s]": seconds for name, seconds in cpu.items()})
    return times


def render(
    args: argparse.Namespace,
    setup: dict[str, float],
    totals: list[float],
    stages: list[dict],
    rows: int,
    loads: list[float],
) -> str:
    load = os.getloadavg()
    lines = [
        "# Benchmark: the scoring job (`churnops.jobs.score.score`) on 1M customers into PostgreSQL",
        "",
        "Produced by `benchmarks/score_1m.py` (do not edit the figures by hand). Command:",
        "",
        f"    .venv/bin/python benchmarks/score_1m.py --customers {args.customers} --runs {args.runs} --write-doc",
        "",
        f"Machine: 2 cores, {platform.platform()}; run on {dt.date.today()}; 1-minute load average at the end "
        f"{load[0]:.1f}; before each run " + " / ".join(f"{value:.1f}" for value in loads) + " (2 = both cores busy "
        "with this benchmark alone; above that, other work was running beside it).",
        "",
        "What is timed: the scoring DAG task's call, `churnops.jobs.score.score(settings, contract, run_date=...)`, on "
        "a "
        f"snapshot whose scoring cutoff holds {rows:,} customers (the real synthetic snapshot's rows resampled per "
        "cutoff under fresh ids, published with the snapshot module's hashes), with the real champion from the "
        "MLflow registry (Optuna-trained LightGBM with its stored blend, calibration and threshold): metadata, "
        "champion load, read the model's columns of the scoring cutoff's rows and verify them against the cutoff's "
        "column digests, encode, predict, calibrate, band, rank, add the value and survival models' columns (the "
        "`synthetic` contract has both sections: expected value and saved value, and P(buy) by 30/90/180 days and the "
        "median days to the next purchase from the survival champion, every customer in every time bin), write "
        "the Parquet list atomically, replace the list in PostgreSQL (one transaction, COPY). Run 1 writes into an "
        "empty table; later runs replace the same list.",
        "",
        "| | median s | runs |",
        "|---|---:|---|",
        f"| **`score()` end to end** | **{statistics.median(totals):.2f}** | "
        + " / ".join(f"{t:.2f}" for t in totals)
        + " |",
    ]
    for name in stages[0]:
        values = [run[name] for run in stages if name in run]
        lines.append(f"| {name} | {statistics.median(values):.2f} | " + " / ".join(f"{v:.2f}" for v in values) + " |")
    lines += [
        "",
        "The stage rows are the same calls timed one by one after each end-to-end run (kernels, for where the time "
        "goes; they do not add up exactly to the end-to-end figure); the [CPU s] rows are the CPU seconds the "
        "benchmark process itself used in each stage (all its threads; not PostgreSQL's server work), a figure that "
        "depends less on the load than wall time. The whole-snapshot row is what reading and verifying the "
        "whole snapshot (every cutoff) costs; scoring reads only the model's columns of its cutoff, each checked "
        "against that cutoff's recorded column digest.",
        "",
        "Set-up, not timed: " + ", ".join(f"{k} {v:.1f} s" for k, v in setup.items()) + ".",
        "",
        f"Target (issue 16): 1M customers scored into PostgreSQL in ≤ 20 s. Median measured: "
        f"{statistics.median(totals):.1f} s.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    from churnops.jobs.score import score

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--home", type=Path, default=REPO / ".churnops" / "bench" / "score_home")
    parser.add_argument("--write-doc", action="store_true")
    args = parser.parse_args()

    settings, contract, trained_seconds = trained_home(args.home)
    run_date, grow_seconds = grown_snapshot(settings, contract, args.customers)
    setup = {"features and training (or reuse)": trained_seconds, "growing and publishing the snapshot": grow_seconds}
    print("set-up: " + ", ".join(f"{k} {v:.1f} s" for k, v in setup.items()))

    database = f"churnops_bench_{uuid.uuid4().hex[:8]}"
    with closing(psycopg2.connect(ADMIN_URL)) as admin:
        admin.autocommit = True
        admin.cursor().execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    url = SecretStr(psycopg2.extensions.make_dsn(ADMIN_URL, dbname=database))
    settings = settings.model_copy(update={"database_url": url})
    totals, stages, rows, loads = [], [], 0, []
    try:
        for number in range(1, args.runs + 1):
            loads.append(os.getloadavg()[0])
            started = time.perf_counter()
            result = score(settings, contract, run_id=f"bench-{number}", run_date=run_date)
            totals.append(time.perf_counter() - started)
            assert result.rows == result.rows_in_database == args.customers, result
            rows = result.rows
            stages.append(kernels(settings, contract, run_date, whole=number == 1))
            print(
                f"run {number}: score() {totals[-1]:.2f} s; " + "; ".join(f"{k} {v:.2f}" for k, v in stages[-1].items())
            )
    finally:
        with closing(psycopg2.connect(ADMIN_URL)) as admin:
            admin.autocommit = True
            admin.cursor().execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database)))
    document = render(args, setup, totals, stages, rows, loads)
    print(document)
    if args.write_doc:
        (REPO / "docs" / "benchmarks" / "scoring.md").write_text(document)


if __name__ == "__main__":
    main()
