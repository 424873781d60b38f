"""Feature-job benchmark: the feature job's real entry point against the DuckDB reference at 1M and 10M events.

For each size: generate the seeded synthetic log, ingest it into bronze (pandas, timed apart), start a SparkSession
(JVM start, timed apart), run the feature job as its DAG task does (`prepare_run` + `build_feature_snapshot`: probe,
features, write, read back, hashes, publication) three times in that session, the kernel alone (compute and write)
three times, the same features in DuckDB three times, and compare the two engines on sampled customers.
Peak memory is the resident set of this process and its children (the Spark driver JVM) sampled every 100 ms
during the feature job's runs and during the kernel's.

    .venv/bin/python benchmarks/features_bench.py --sizes 1000000 10000000 --write-doc

Figures go to stdout, to `<home>/bench/features/results.json` and, with `--write-doc`, to
`docs/benchmarks/features.md`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psutil

from churnops.bronze import event_part_paths
from churnops.config import PACKAGE_DIR, Settings, SparkSettings
from churnops.dataset import load_contract
from churnops.features import CUTOFF, ENTITY_ID, model_feature_columns
from churnops.jobs.generate import generate, write_generated
from churnops.jobs.ingest import ingest_events
from churnops.jobs.reference_duckdb import compute_reference_features

# The generator averages about 166 events per customer over its three years (seed 2024).
EVENTS_PER_CUSTOMER = 166


class PeakMemory:
    """Peak resident memory of this process and all its children, sampled in a background thread."""

    def __init__(self) -> None:
        self.peak, self._stop = 0, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            total = 0
            for process in [me, *me.children(recursive=True)]:
                try:
                    total += process.memory_info().rss
                except psutil.Error:
                    pass
            self.peak = max(self.peak, total)
            time.sleep(0.1)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def prepare(size: int, root: Path) -> tuple[Settings, object, int]:
    """Generate about `size` events under `root` with a synthetic contract pointing at them."""
    import yaml

    data_dir = root / "data"
    customers = max(size // EVENTS_PER_CUSTOMER, 100)
    if not (data_dir / "events.parquet").exists():
        data = generate(customers, seed=2024)
        write_generated(data, data_dir / "events.parquet", data_dir / "customers.parquet")
    raw = yaml.safe_load((PACKAGE_DIR / "datasets" / "synthetic.yaml").read_text())
    raw["name"] = f"bench-{size}"
    raw["events"]["path"] = str(data_dir / "events.parquet")
    raw["entities"]["path"] = str(data_dir / "customers.parquet")
    raw["cutoffs"]["as_of"] = "2025-01-01"  # the generated data ends the day before: one fixed run date
    (root / "contract.yaml").write_text(yaml.safe_dump(raw))
    settings = Settings(home=root / "home", spark=SparkSettings(master="local[2]", driver_memory="4g"))
    contract = load_contract(str(root / "contract.yaml"), settings)
    events = len(pd.read_parquet(data_dir / "events.parquet", columns=["customer_id"]))
    return settings, contract, events


def compare(spark_frame: pd.DataFrame, reference: pd.DataFrame, columns: list[str], sample: int) -> dict:
    """Max absolute difference per engine on every column of `sample` random customers (all their cutoffs)."""
    rng = np.random.default_rng(0)
    chosen = rng.choice(reference[ENTITY_ID].unique(), size=min(sample, reference[ENTITY_ID].nunique()), replace=False)
    left = spark_frame[spark_frame[ENTITY_ID].isin(chosen)].sort_values([CUTOFF, ENTITY_ID], ignore_index=True)
    right = reference[reference[ENTITY_ID].isin(chosen)].sort_values([CUTOFF, ENTITY_ID], ignore_index=True)
    if list(left[ENTITY_ID]) != list(right[ENTITY_ID]) or list(left[CUTOFF]) != list(right[CUTOFF]):
        return {"rows_match": False, "rows": [len(left), len(right)]}
    worst, mismatched = 0.0, []
    for column in columns:
        a, b = left[column], right[column]
        if pd.api.types.is_numeric_dtype(a):
            a, b = a.to_numpy(float), b.to_numpy(float)
            if not np.array_equal(np.isnan(a), np.isnan(b)):
                mismatched.append(column)
                continue
            diff = float(np.nanmax(np.abs(a - b), initial=0.0))
            worst = max(worst, diff)
            if diff > 2e-6 + 1e-9 * float(np.nanmax(np.abs(b), initial=0.0)):
                mismatched.append(column)
        elif a.astype("string").fillna("").tolist() != b.astype("string").fillna("").tolist():
            mismatched.append(column)
    return {
        "rows_match": True,
        "customers": len(chosen),
        "rows": len(left),
        "max_abs_diff": worst,
        "mismatched_columns": mismatched,
    }


def run_size(size: int, root: Path, sample: int) -> dict:
    from churnops.jobs.feature_frames import compute_feature_table
    from churnops.jobs.spark import spark_session

    settings, contract, events = prepare(size, root)
    cutoffs = sorted(set(contract.plan().all))
    load_before = os.getloadavg()[0]

    started = time.perf_counter()
    report = ingest_events(contract, settings)
    ingest_seconds = time.perf_counter() - started
    bronze = event_part_paths(settings, contract.name, report.manifest)

    started = time.perf_counter()
    spark = spark_session(settings, f"bench-{size}")
    spark.range(1).count()  # the JVM and the executor threads are up
    session_seconds = time.perf_counter() - started

    # The real entry point, as the feature DAG task calls it: prepare (source check, bronze up to date, plan,
    # inputs digest), then the leakage probe, the feature computation, the write, the read back into the driver,
    # the hashes and the publication. Run 1 probes (a new definitions digest); later runs reuse the stored probe
    # verdict, as every daily run does; every run computes and hashes the whole snapshot again.
    from churnops.jobs.cutoff_frames import FRAMES_DIR
    from churnops.jobs.features import build_feature_snapshot, prepare_run
    from churnops.snapshots import dataset_dir

    shutil.rmtree(settings.features_dir, ignore_errors=True)
    entry_seconds, prepare_seconds = [], []
    with PeakMemory() as entry_memory:
        for _ in range(3):
            # Each run computes every cutoff: the per-cutoff frames a run stores (jobs/cutoff_frames.py) would
            # otherwise let runs 2 and 3 skip Spark altogether and time only the reassembly.
            shutil.rmtree(dataset_dir(settings, contract.name) / FRAMES_DIR, ignore_errors=True)
            started = time.perf_counter()
            prepared = prepare_run(contract, settings)
            prepare_seconds.append(time.perf_counter() - started)
            build_feature_snapshot(spark, contract, settings, prepared)
            entry_seconds.append(time.perf_counter() - started)

    # The kernel alone (compute and write, no probe, no read back, no hashing), kept for where the time goes.
    job_seconds = []
    output = root / "spark-out"
    with PeakMemory() as memory:
        for _ in range(3):
            shutil.rmtree(output, ignore_errors=True)
            started = time.perf_counter()
            table = compute_feature_table(spark, contract, settings, cutoffs, contract.cutoffs.as_of, report.manifest)
            table.write.mode("overwrite").parquet(str(output))
            job_seconds.append(time.perf_counter() - started)
    spark.stop()
    spark_frame = pd.read_parquet(output)
    spark_frame[CUTOFF] = pd.to_datetime(spark_frame[CUTOFF])

    duckdb_seconds, reference = [], None
    for _ in range(3):
        started = time.perf_counter()
        reference = compute_reference_features(contract, bronze, cutoffs, contract.cutoffs.as_of, threads=2)
        duckdb_seconds.append(time.perf_counter() - started)

    numeric, categorical = model_feature_columns(contract)
    return {
        "events": events,
        "customers": int(spark_frame[ENTITY_ID].nunique()),
        "cutoffs": len(cutoffs),
        "rows_out": len(spark_frame),
        "features": len(numeric) + len(categorical),
        "ingest_seconds": round(ingest_seconds, 2),
        "rows_quarantined": report.rows_quarantined,
        "spark_session_seconds": round(session_seconds, 2),
        "entry_seconds": [round(s, 2) for s in entry_seconds],
        "prepare_seconds": [round(s, 2) for s in prepare_seconds],
        "entry_peak_rss_mb": round(entry_memory.peak / 2**20),
        "spark_job_seconds": [round(s, 2) for s in job_seconds],
        "spark_peak_rss_mb": round(memory.peak / 2**20),
        "duckdb_seconds_median": round(statistics.median(duckdb_seconds), 2),
        "duckdb_seconds": [round(s, 2) for s in duckdb_seconds],
        "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "agreement": compare(spark_frame, reference, [*numeric, *categorical, "label", "label_available"], sample),
    }


def render(results: dict[str, dict], command: str) -> str:
    lines = [
        "# Feature job benchmark",
        "",
        "Produced by `benchmarks/features_bench.py` (do not edit the figures by hand). Command:",
        "",
        f"    {command}",
        "",
        f"Machine: {psutil.cpu_count()} cores, {round(psutil.virtual_memory().total / 2**30)} GiB RAM, "
        f"{platform.platform()}; run on {dt.date.today().isoformat()}.",
        "",
        "Workload: the seeded synthetic generator (customers with visits, purchases and support calls over three "
        "years), the built-in `synthetic` contract's cutoffs (6 training, 1 out-of-time, 1 scoring), every "
        "feature of `docs/feature-catalog.md` plus the label. Spark runs `local[2]`; DuckDB runs with 2 threads "
        "on the same bronze Parquet parts (one file per event day). Each size runs in a fresh process; the "
        "SparkSession (JVM) start and the pandas ingestion into bronze are reported apart.",
        "",
        "**The feature job** is its real entry point as the feature DAG task calls it: `prepare_run` (source "
        "check, bronze up to date, plan, inputs digest) then `build_feature_snapshot` (leakage probe, features, "
        "write, read back, content and per-cutoff hashes, publication). Run 1 runs the leakage probe; runs 2 and 3 "
        "reuse its stored verdict, as every daily run with unchanged definitions does (`probe_once`); each run "
        "computes, writes and hashes the whole snapshot. Its steady state (median of runs 2 and 3) is the job's "
        "figure, compared with DuckDB computing the same table. **The kernel** (compute and write only, no probe, "
        "no read back, no hashing; run 1 includes JIT warm-up) is kept beside it for where the time goes. The "
        "last column is the machine's 1-minute load average when the size started and ended (2 = both cores busy "
        "with this benchmark alone).",
        "",
        "| events | customers | output rows | ingest (s) | Spark session start (s) "
        "| feature job, runs 1 / 2 / 3 (s) | of which prepare (s) | job peak RSS (MiB) "
        "| kernel, runs 1 / 2 / 3 (s) | DuckDB median of 3 (s) | job steady / DuckDB | kernel steady / DuckDB "
        "| engines agree on sampled customers | load average |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for result in results.values():
        agreement = result["agreement"]
        agree = (
            f"yes: {agreement['customers']} customers, {agreement['rows']} rows, max abs diff "
            f"{agreement['max_abs_diff']:.1e}"
            if agreement.get("rows_match") and not agreement.get("mismatched_columns")
            else f"NO: {agreement}"
        )
        job, entry = result["spark_job_seconds"], result["entry_seconds"]
        duckdb = result["duckdb_seconds_median"]
        load = result.get("load_average_1min")
        lines.append(
            f"| {result['events']:,} | {result['customers']:,} | {result['rows_out']:,} "
            f"| {result['ingest_seconds']} | {result['spark_session_seconds']} | {' / '.join(map(str, entry))} "
            f"| {' / '.join(map(str, result['prepare_seconds']))} | {result['entry_peak_rss_mb']:,} "
            f"| {' / '.join(map(str, job))} | {duckdb} "
            f"| {statistics.median(entry[1:]) / duckdb:.2f}× | {statistics.median(job[1:]) / duckdb:.2f}× | {agree} "
            f"| {'n/a' if load is None else f'{load[0]} → {load[1]}'} |"
        )
    sizes = list(results.values())
    if len(sizes) >= 2:
        small, large = sizes[0], sizes[-1]
        growth = statistics.median(large["entry_seconds"][1:]) / statistics.median(small["entry_seconds"][1:])
        lines += [
            "",
            f"Scaling: {large['events'] / small['events']:.1f}× the events took {growth:.1f}× the feature job's "
            f"time (steady state) and {large['duckdb_seconds_median'] / small['duckdb_seconds_median']:.1f}× the "
            "DuckDB time.",
        ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--sample", type=int, default=500, help="customers compared between the engines")
    parser.add_argument("--write-doc", action="store_true", help="write docs/benchmarks/features.md")
    parser.add_argument("--one-size-to", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    settings = Settings()
    if args.one_size_to is not None:  # child mode: one size, in a process whose JVM has not started yet
        (size,) = args.sizes
        result = run_size(size, settings.home / "bench" / "features" / str(size), args.sample)
        args.one_size_to.write_text(json.dumps(result))
        return
    results: dict[str, dict] = {}
    for size in args.sizes:
        # A fresh process per size: a stopped SparkSession keeps its JVM, so the next start would look free.
        out = settings.home / "bench" / "features" / f"{size}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, __file__, "--sizes", str(size), "--sample", str(args.sample), "--one-size-to"]
        subprocess.run([*command, str(out)], check=True)
        results[str(size)] = json.loads(out.read_text())
        print(json.dumps({str(size): results[str(size)]}, indent=2), flush=True)
    target = settings.home / "bench" / "features" / "results.json"
    target.write_text(json.dumps(results, indent=2))
    if args.write_doc:
        command_line = ".venv/bin/python benchmarks/features_bench.py --sizes " + " ".join(map(str, args.sizes))
        command_line += " --write-doc"
        doc = PACKAGE_DIR.parent / "docs" / "benchmarks" / "features.md"
        doc.parent.mkdir(parents=True, exist_ok=True)
        doc.write_text(render(results, command_line))
        print(f"wrote {doc}")


if __name__ == "__main__":
    main()
