"""Scale benchmark: partitioned sources of a given size through ingestion, features and Spark batch scoring, with
each stage's time and the peak memory of the driver, its JVM and the Python workers (issue 20).

For each `--events` size, in `<root>/<size>/`:

1. **Sources** (not timed): the seeded generator's events as one Parquet file per month under a source folder (the
   contract's events path is the folder, as a delivery of monthly files would be) and the customer table. The
   generator (`churnops.jobs.generate.generate`) draws every customer's whole history at once in numpy and pandas,
   so it cannot write month by month; it is run here on blocks of `BLOCK_CUSTOMERS` customers (about 16M events,
   a few GiB), each block seeded `seed + block` with its customer ids offset, and each block's rows are appended as
   a row group to the month's file. Sizes of one block are exactly `generate(customers, seed)`.
2. **ingest**: `ingest_events(..., engine=--ingest-engine)` into bronze (default: what `ingestion.engine: auto`
   picks for the sources' size, recorded).
3. **features**: the feature job's entry point, `prepare_run` + `build_feature_snapshot` in one SparkSession.
4. A small training (a champion to score with; the row budget per cutoff keeps it small; timed, not a stage of
   interest).
5. **spark_scoring**: `score(..., engine="spark")` (churnops.jobs.score_spark) into Parquet and into PostgreSQL: a
   fresh database, created and migrated for the size and dropped after it, is the platform database.

Per stage: wall time, and the peaks of the driver's Python process (RSS), the driver JVM (RSS; in local mode the
executors are its threads, so its heap is bounded by `spark.driver.memory`) and the Python workers (PSS), sampled
every 100 ms (`memory_sampler.py`), beside the configured Spark memory. `--score-customers N` also scores N
customers on Spark (the trained snapshot's scoring cutoff grown file by file, `grown_snapshot.py`) and checks a
sample of their scores against the pandas path's. Figures go to stdout and `<root>/results.json` (merged with what
is there, so sizes can be run one at a time); `--write-doc` writes docs/benchmarks/scale.md from all of them
(`scale_doc.py`).

    nice -n 10 .venv/bin/python benchmarks/scale.py --events 10000000 --root /tmp/scale --write-doc
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import psutil
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
from features_bench import EVENTS_PER_CUSTOMER  # noqa: E402 - sibling scripts, not a package
from memory_sampler import DriverMemory  # noqa: E402

from churnops.config import PACKAGE_DIR, Settings, SparkSettings  # noqa: E402
from churnops.dataset import DatasetContract, load_contract  # noqa: E402
from churnops.jobs.generate import generate  # noqa: E402
from churnops.storage import write_parquet_atomically  # noqa: E402

BLOCK_CUSTOMERS = 100_000
ADMIN_URL = os.environ.get("CHURNOPS_TEST_POSTGRES_URL", "postgresql://root@127.0.0.1:5432/test")
# One database per run (its process id): two runs at once, or a run beside a test, never drop each other's.
SCALE_DATABASE = f"churnops_scale_bench_{os.getpid()}"
# Training is not what this benchmark measures: a few trials on at most this many rows per cutoff.
TRAINING = {"n_trials": 2, "seed": 3, "max_rows_per_cutoff": 50_000}


def write_partitioned_sources(events: int, root: Path, seed: int) -> tuple[Path, Path, int]:
    """The seeded generator's log as one Parquet file per month of events, and the customer table (kept between
    runs: the customer table is written last, so its presence means the sources are complete)."""
    sources = root / "sources"
    events_dir = sources / "events"
    customers_path = sources / "customers.parquet"
    if not customers_path.exists():
        shutil.rmtree(events_dir, ignore_errors=True)
        staging = sources / "events.partial"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        total_customers = max(events // EVENTS_PER_CUSTOMER, 100)
        writers: dict[str, pq.ParquetWriter] = {}
        customers = []
        try:
            for block, first in enumerate(range(0, total_customers, BLOCK_CUSTOMERS)):
                data = generate(min(BLOCK_CUSTOMERS, total_customers - first), seed=seed + block)
                data.events["customer_id"] += first  # ids stay unique across blocks
                data.customers["customer_id"] += first
                customers.append(data.customers)
                month = data.events["event_time"].dt.strftime("%Y-%m")
                for name, part in data.events.groupby(month):
                    table = pa.Table.from_pandas(part, preserve_index=False)
                    if name not in writers:
                        # Microsecond timestamps, as a delivery Spark can read (it refuses pandas' nanoseconds).
                        writers[name] = pq.ParquetWriter(
                            staging / f"events_{name}.parquet", table.schema, coerce_timestamps="us"
                        )
                    writers[name].write_table(table.cast(writers[name].schema))
                del data, month
        finally:
            for writer in writers.values():
                writer.close()
        staging.rename(events_dir)
        write_parquet_atomically(pd.concat(customers, ignore_index=True), customers_path)
    written = sum(pq.ParquetFile(path).metadata.num_rows for path in events_dir.glob("*.parquet"))
    return events_dir, customers_path, written


def contract_for(
    root: Path,
    events_dir: Path,
    customers_path: Path,
    events: int,
    driver_memory: str = "2g",
    database_url: str | None = None,
    master: str = "local[2]",
    executor_memory: str = "1g",
    memory_overhead: str | None = None,
    pyspark_memory: str | None = None,
) -> tuple[Settings, DatasetContract]:
    import yaml

    raw = yaml.safe_load((PACKAGE_DIR / "datasets" / "synthetic.yaml").read_text())
    raw["name"] = f"scale-{events}"
    raw["events"]["path"] = str(events_dir)
    raw["entities"]["path"] = str(customers_path)
    raw["cutoffs"]["as_of"] = "2025-01-01"  # the generated data ends the day before: one fixed run date
    (root / "contract.yaml").write_text(yaml.safe_dump(raw))
    settings = Settings(
        home=root / "home",
        spark=SparkSettings(
            master=master,
            driver_memory=driver_memory,
            executor_memory=executor_memory,
            executor_memory_overhead=memory_overhead,
            executor_pyspark_memory=pyspark_memory,
        ),
        training=TRAINING,
        scoring={"engine": "spark"},
        ingestion={"engine": "auto"},
        database_url=database_url,
    )
    return settings, load_contract(str(root / "contract.yaml"), settings)


@contextlib.contextmanager
def scale_database() -> Iterator[str]:
    """A fresh, migrated platform database for one size, dropped afterwards."""
    import psycopg2
    import psycopg2.extensions
    import psycopg2.sql

    from churnops import db

    def recreate(create: bool) -> None:
        with contextlib.closing(psycopg2.connect(ADMIN_URL, connect_timeout=5)) as admin:
            admin.autocommit = True
            name = psycopg2.sql.Identifier(SCALE_DATABASE)
            with admin.cursor() as cur:
                cur.execute(psycopg2.sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name))
                if create:
                    cur.execute(psycopg2.sql.SQL("CREATE DATABASE {}").format(name))

    recreate(create=True)
    dsn = psycopg2.extensions.make_dsn(ADMIN_URL, dbname=SCALE_DATABASE)
    with contextlib.closing(psycopg2.connect(dsn)) as conn:
        db.migrate(conn)
    parsed = psycopg2.extensions.parse_dsn(dsn)
    server = f"{parsed.get('user', 'root')}@{parsed.get('host', '127.0.0.1')}:{parsed.get('port', '5432')}"
    try:
        yield f"postgresql://{server}/{SCALE_DATABASE}"
    finally:
        recreate(create=False)


def rows_in_database(url: str) -> int:
    import psycopg2

    with contextlib.closing(psycopg2.connect(url)) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM churnops.scores")  # every list written so far
        return int(cur.fetchone()[0])


def timed(stage: str, figures: dict, action: Callable[[], Any]) -> Any:
    with DriverMemory() as memory:
        started = time.perf_counter()
        result = action()
        figures[f"{stage}_seconds"] = round(time.perf_counter() - started, 2)
    figures.update(memory.figures_mb(stage))
    figures[f"{stage}_cpu_seconds"] = round(memory.cpu_seconds, 1)
    return result


def check_sample_scores(settings: Settings, contract: DatasetContract, run: Any, run_date: dt.date, n: int) -> dict:
    """Score `n` customers of the Spark list again with the pandas path's function and compare the scores."""
    from churnops.features import CUTOFF, ENTITY_ID
    from churnops.registry import configure_mlflow, load_alias
    from churnops.snapshots import DATA_DIR, snapshot_dir_for

    scored = pd.read_parquet(run.path, columns=["customer_id", "score"])
    sample = scored.sample(min(n, len(scored)), random_state=0)
    configure_mlflow(settings)
    model = load_alias(contract.model_name)
    rows = pd.read_parquet(
        snapshot_dir_for(settings, contract.name, run_date) / DATA_DIR,
        filters=[(ENTITY_ID, "in", sample["customer_id"].tolist())],
    )
    rows = rows[pd.to_datetime(rows[CUTOFF]) == pd.Timestamp(run.cutoff)].drop_duplicates(ENTITY_ID)
    pandas_scores = pd.Series(model.predict_matrix(model.schema.encode_frame(rows)), index=rows[ENTITY_ID].astype(str))
    spark_scores = sample.set_index("customer_id")["score"]
    pandas_scores = pandas_scores.reindex(spark_scores.index)
    return {
        "sample": len(sample),
        "identical": int((pandas_scores.to_numpy() == spark_scores.to_numpy()).sum()),
        "max_abs_difference": float((pandas_scores - spark_scores).abs().max()),
    }


def _train(settings: Settings, contract: DatasetContract) -> None:
    from churnops.jobs.training import train

    train(settings, contract)


def in_child(action: Callable[..., Any], *args: Any) -> Any:
    """Run `action` in a fresh process: what the benchmark prepares (a champion, a grown snapshot) must not leave
    its pandas memory in the driver process whose peak the next stage reports."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(action, *args).result()


def run_size(events: int, root: Path, seed: int, args: argparse.Namespace) -> dict:
    if not args.cluster:
        return _run_stages(events, root, seed, args, "local[2]")
    from standalone_cluster import standalone_cluster

    with standalone_cluster(root / "cluster", cores=2, worker_memory=args.worker_memory) as master:
        return _run_stages(events, root, seed, args, master)


def _run_stages(events: int, root: Path, seed: int, args: argparse.Namespace, master: str) -> dict:
    """The stages in `args.stages`; a stage left out reuses what an earlier run of the size left in its home."""
    from churnops.jobs.features import build_feature_snapshot, prepare_run
    from churnops.jobs.ingest import ingest_events
    from churnops.jobs.score import score
    from churnops.jobs.spark import spark_session

    load_before = [round(value, 2) for value in os.getloadavg()]
    started = time.perf_counter()
    reused = (root / "sources" / "customers.parquet").exists()
    # In a child too: the generator's arrays would otherwise stay in this process's RSS through the stages.
    events_dir, customers_path, written = in_child(write_partitioned_sources, events, root, seed)
    figures: dict = {
        "events": written,
        "source_files": len(list(events_dir.glob("*.parquet"))),
        "source_mb": round(sum(p.stat().st_size for p in events_dir.glob("*.parquet")) / 2**20, 1),
        "sources_seconds": round(time.perf_counter() - started, 2),
        "sources_reused": reused,
        "load_average_before": load_before,
    }
    with scale_database() as url:
        settings, contract = contract_for(
            root,
            events_dir,
            customers_path,
            events,
            args.driver_memory,
            url,
            master,
            args.executor_memory,
            args.executor_memory_overhead,
            args.pyspark_memory,
        )
        stages = set(args.stages)
        figures["stages"] = sorted(stages)
        figures["spark_driver_memory"] = settings.spark.driver_memory
        figures["spark_master"] = "standalone cluster (1 worker, 2 cores)" if args.cluster else master
        figures["spark_executor_heap"] = settings.spark.executor_memory
        figures["spark_executor_memory_overhead"] = settings.spark.executor_memory_overhead
        figures["spark_executor_pyspark_memory"] = settings.spark.executor_pyspark_memory
        figures["spark_executor_memory"] = (
            f"{settings.spark.executor_memory} (worker memory {args.worker_memory})"
            if args.cluster
            else f"in the driver JVM (local mode: {settings.spark.driver_memory})"
        )
        if "ingest" in stages:
            shutil.rmtree(settings.home, ignore_errors=True)  # no bronze, frames, snapshot or model of an earlier run
            total_bytes = sum(p.stat().st_size for p in events_dir.glob("*.parquet"))
            figures["ingest_engine"] = args.ingest_engine or settings.ingestion.engine_for(total_bytes)
            timed("ingest", figures, lambda: ingest_events(contract, settings, engine=args.ingest_engine))

        def features() -> Any:
            spark = spark_session(settings, f"scale-features-{events}")
            try:
                return build_feature_snapshot(spark, contract, settings, prepare_run(contract, settings))
            finally:
                spark.stop()

        if "features" in stages:
            snapshot = timed("features", figures, features)
            figures["snapshot_rows"] = sum(snapshot.metadata.rows_per_cutoff.values())
        if "training" in stages:
            timed("training", figures, lambda: in_child(_train, settings, contract))  # memory: the child's
        if "scoring" in stages:
            run = timed("spark_scoring", figures, lambda: score(settings, contract, run_id="scale", engine="spark"))
            figures["customers_scored"] = run.rows
            figures["scores_in_database"] = rows_in_database(url)
            figures["scores_in_database_reported"] = run.rows_in_database
        if args.score_customers:
            from grown_snapshot import grown_file_snapshot

            run_date, grow_seconds = in_child(grown_file_snapshot, settings, contract, args.score_customers)
            figures["grown_snapshot_seconds"] = round(grow_seconds, 2)
            grown = timed(
                "spark_scoring_grown",
                figures,
                lambda: score(settings, contract, run_date=run_date, run_id="scale-grown", engine="spark"),
            )
            figures["grown_customers_scored"] = grown.rows
            figures["grown_scores_in_database"] = grown.rows_in_database
            # The grown list has the first list's cutoff and kind: it replaced that list in the database.
            figures["scores_in_database_after_grown"] = rows_in_database(url)
            figures["grown_sample_check"] = check_sample_scores(settings, contract, grown, run_date, 10_000)
    figures["load_average_after"] = [round(value, 2) for value in os.getloadavg()]
    return figures


def machine() -> dict:
    import platform
    import subprocess

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False)
    return {
        "cpus": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "commit": commit.stdout.strip(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, nargs="+", default=[1_000_000])
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--root", type=Path, required=True, help="working folder (sources are kept between runs)")
    parser.add_argument("--ingest-engine", choices=["pandas", "spark"], default=None, help="default: ingestion auto")
    parser.add_argument("--driver-memory", default="2g", help="spark.driver.memory (default: %(default)s)")
    parser.add_argument("--executor-memory", default="3g", help="spark.executor.memory with --cluster")
    parser.add_argument("--worker-memory", default="4g", help="the cluster worker's --memory with --cluster")
    parser.add_argument(
        "--executor-memory-overhead", default=None, help="spark.executor.memoryOverhead (default: Spark's)"
    )
    parser.add_argument("--pyspark-memory", default=None, help="spark.executor.pyspark.memory (default: unbounded)")
    parser.add_argument(
        "--cluster",
        action="store_true",
        help="run on a standalone cluster started for the run (driver and executors"
        " in separate JVMs, their memory read apart) instead of local[2]",
    )
    parser.add_argument(
        "--stages",
        nargs="+",
        choices=["ingest", "features", "training", "scoring"],
        default=["ingest", "features", "training", "scoring"],
        help="stages to run (default: all); the others reuse what an earlier run of the size left",
    )
    parser.add_argument("--score-customers", type=int, default=0, help="also score this many customers on Spark")
    parser.add_argument("--write-doc", action="store_true", help="write docs/benchmarks/scale.md from results.json")
    args = parser.parse_args()
    args.root.mkdir(parents=True, exist_ok=True)
    results_path = args.root / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {"sizes": {}}
    for events in args.events:
        figures = run_size(events, args.root / str(events), args.seed, args)
        figures["command"] = " ".join(["benchmarks/scale.py", *sys.argv[1:]])
        figures["machine"] = machine()
        figures["finished"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        # Merged into what earlier runs of the size recorded: a run of some stages keeps the others' figures.
        results["sizes"][str(events)] = {**results["sizes"].get(str(events), {}), **figures}
        results_path.write_text(json.dumps(results, indent=2))  # after each size: a later failure keeps it
        print(json.dumps({str(events): figures}, indent=2))  # noqa: T201 - a benchmark prints figures
    if args.write_doc:
        from scale_doc import write_doc

        print(write_doc(results))  # noqa: T201


if __name__ == "__main__":
    main()
