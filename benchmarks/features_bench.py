"""Feature-job benchmark: the Spark job against the DuckDB reference at 1M and 10M generated events.

For each size, in a fresh process: generate the seeded synthetic log, ingest it into bronze (pandas, timed apart),
start a SparkSession (JVM start, timed apart), run the Spark feature job once cold (the first run in a new JVM pays
for JIT compilation, as every `spark-submit` does), then three rounds of one Spark run and one DuckDB run side by
side, so that both engines see the same load on this shared machine; compare the two engines on sampled customers.
The Spark job = read bronze, bucket by customer-day, join the cutoffs, aggregate, write Parquet. The driver-side
rest of `build_feature_snapshot` (pandas read-back of that Parquet and the snapshot content hash) is timed apart.
Peak memory is the resident set of this process and its children (the Spark driver JVM) sampled every 100 ms
during the Spark runs; JVM CPU seconds are the driver JVM's user + system time during a run, a figure less
sensitive than wall time to other work on the machine.

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

from churnops.config import PACKAGE_DIR, Settings, SparkSettings
from churnops.dataset import bronze_dir, load_contract
from churnops.features import CUTOFF, ENTITY_ID, model_feature_columns
from churnops.snapshots import content_hash
from jobs.generate import generate, write_generated
from jobs.ingest import EVENTS_FILE, ingest_events
from jobs.reference_duckdb import compute_reference_features

# The generator averages about 166 events per customer over its three years (seed 2024).
EVENTS_PER_CUSTOMER = 166
# Side-by-side rounds of one Spark run and one DuckDB run, after the cold Spark run.
ROUNDS = 3


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


def jvm_cpu_seconds() -> float:
    """User + system CPU seconds used so far by this process's child JVMs (the Spark driver)."""
    total = 0.0
    for child in psutil.Process().children(recursive=True):
        try:
            if "java" in child.name():
                times = child.cpu_times()
                total += times.user + times.system
        except psutil.Error:
            pass
    return total


def run_size(size: int, root: Path, sample: int) -> dict:
    from jobs.features import compute_feature_table
    from jobs.spark import spark_session

    settings, contract, events = prepare(size, root)
    cutoffs = sorted(set(contract.plan().all))

    started = time.perf_counter()
    report = ingest_events(contract, settings)
    ingest_seconds = time.perf_counter() - started
    bronze = bronze_dir(settings, contract.name) / EVENTS_FILE

    started = time.perf_counter()
    spark = spark_session(settings, f"bench-{size}")
    spark.range(1).count()  # the JVM and the executor threads are up
    session_seconds = time.perf_counter() - started

    output = root / "spark-out"
    peak_memory = 0

    def spark_job() -> tuple[float, float]:
        nonlocal peak_memory
        shutil.rmtree(output, ignore_errors=True)
        with PeakMemory() as memory:
            cpu, started = jvm_cpu_seconds(), time.perf_counter()
            compute_feature_table(spark, contract, settings, cutoffs).write.mode("overwrite").parquet(str(output))
            wall, cpu = time.perf_counter() - started, jvm_cpu_seconds() - cpu
        peak_memory = max(peak_memory, memory.peak)
        return wall, cpu

    def duckdb_job() -> tuple[float, pd.DataFrame]:
        started = time.perf_counter()
        frame = compute_reference_features(contract, bronze, cutoffs, threads=2)
        return time.perf_counter() - started, frame

    load_before = os.getloadavg()
    cold_seconds, cold_cpu = spark_job()
    spark_seconds, spark_cpu, duckdb_seconds = [], [], []
    reference = None
    for _ in range(ROUNDS):
        wall, cpu = spark_job()
        spark_seconds.append(wall)
        spark_cpu.append(cpu)
        wall, reference = duckdb_job()
        duckdb_seconds.append(wall)
    load_after = os.getloadavg()
    spark.stop()

    # The rest of build_feature_snapshot on the driver: read the job's Parquet back and hash the snapshot content.
    started = time.perf_counter()
    spark_frame = pd.read_parquet(output)
    spark_frame[CUTOFF] = pd.to_datetime(spark_frame[CUTOFF])
    content_hash(spark_frame)
    readback_hash_seconds = time.perf_counter() - started

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
        "spark_cold_seconds": round(cold_seconds, 2),
        "spark_cold_jvm_cpu_seconds": round(cold_cpu, 1),
        "spark_job_seconds": [round(s, 2) for s in spark_seconds],
        "spark_job_seconds_median": round(statistics.median(spark_seconds), 2),
        "spark_jvm_cpu_seconds": [round(s, 1) for s in spark_cpu],
        "spark_jvm_cpu_seconds_median": round(statistics.median(spark_cpu), 1),
        "spark_peak_rss_mb": round(peak_memory / 2**20),
        "readback_hash_seconds": round(readback_hash_seconds, 2),
        "duckdb_seconds_median": round(statistics.median(duckdb_seconds), 2),
        "duckdb_seconds": [round(s, 2) for s in duckdb_seconds],
        "load_average_1min": [round(load_before[0], 1), round(load_after[0], 1)],
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
        "years), the built-in `synthetic` contract's cutoffs (6 training, 1 out-of-time, 1 scoring), every feature "
        "of `docs/feature-catalog.md` plus the label. Spark runs `local[2]`; DuckDB runs with 2 threads on the same "
        "bronze Parquet file. The Spark job = read bronze, shuffle once by customer, bucket by customer-day, join "
        "each customer's day buckets to the cutoffs whose population holds them, aggregate, write Parquet. Reported "
        "apart: the pandas ingestion into bronze, the SparkSession (JVM) start, and the driver-side rest of "
        "`build_feature_snapshot` (pandas read-back of the written Parquet + snapshot content hash). Each size runs "
        "in a fresh process. The cold run is the first job in a new JVM (JIT compilation included), which is what a "
        "`spark-submit` pays; then three rounds run one Spark job and one DuckDB query side by side, and the ratio "
        "compares their medians. The two cores are shared with other work: the 1-minute load average before and "
        "after the rounds is in the table, and JVM CPU seconds are the steadier figure when the load is high.",
        "",
        "| events | customers | output rows | features | ingest (s) | Spark session start (s) "
        "| Spark job cold (s) | Spark job, median of 3 (s) | Spark JVM CPU, median (s) | Spark peak RSS (MiB) "
        "| read-back + hash (s) | DuckDB, median of 3 (s) | Spark / DuckDB (median; cold) | load avg before → after "
        "| engines agree on sampled customers |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---|",
    ]
    for result in results.values():
        agreement = result["agreement"]
        agree = (
            f"yes: {agreement['customers']} customers, {agreement['rows']} rows, max abs diff "
            f"{agreement['max_abs_diff']:.1e}"
            if agreement.get("rows_match") and not agreement.get("mismatched_columns")
            else f"NO: {agreement}"
        )
        duckdb = result["duckdb_seconds_median"]
        before, after = result["load_average_1min"]
        lines.append(
            f"| {result['events']:,} | {result['customers']:,} | {result['rows_out']:,} | {result['features']} "
            f"| {result['ingest_seconds']} | {result['spark_session_seconds']} | {result['spark_cold_seconds']} "
            f"| {result['spark_job_seconds_median']} ({' / '.join(map(str, result['spark_job_seconds']))}) "
            f"| {result['spark_jvm_cpu_seconds_median']} | {result['spark_peak_rss_mb']:,} "
            f"| {result['readback_hash_seconds']} | {duckdb} ({' / '.join(map(str, result['duckdb_seconds']))}) "
            f"| {result['spark_job_seconds_median'] / duckdb:.1f}×; {result['spark_cold_seconds'] / duckdb:.1f}× "
            f"| {before} → {after} | {agree} |"
        )
    sizes = list(results.values())
    if len(sizes) >= 2:
        small, large = sizes[0], sizes[-1]
        growth = large["spark_job_seconds_median"] / small["spark_job_seconds_median"]
        cpu_growth = large["spark_jvm_cpu_seconds_median"] / small["spark_jvm_cpu_seconds_median"]
        lines += [
            "",
            f"Scaling: {large['events'] / small['events']:.1f}× the events took {growth:.1f}× the Spark job time "
            f"(median), {cpu_growth:.1f}× its JVM CPU time, and "
            f"{large['duckdb_seconds_median'] / small['duckdb_seconds_median']:.1f}× the DuckDB time.",
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
