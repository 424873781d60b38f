"""Peak resident memory of the feature job's driver: the Python process alone and with its children (the driver
JVM by RSS and, in local mode, the executors' Python workers by proportional set size), sampled every 100 ms by
`memory_sampler.DriverMemory`.

The sources (one Parquet file per month, `benchmarks/scale.py`) and the bronze layer are prepared first, outside
the measurement; then `prepare_run` + `build_feature_snapshot` run in a fresh SparkSession with a fresh frames
store, so every cutoff is computed. Run it from a checkout to measure that checkout's feature job:

    nice -n 10 .venv/bin/python benchmarks/feature_job_memory.py --events 3000000 --root /tmp/fjm

(for another checkout, the same command with `PYTHONPATH=<that checkout>` and this file's path).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from memory_sampler import DriverMemory  # noqa: E402 - a sibling module, not a package
from scale import contract_for, write_partitioned_sources  # noqa: E402


def measure(events: int, root: Path, seed: int) -> dict:
    import churnops
    from churnops.jobs.features import build_feature_snapshot, prepare_run
    from churnops.jobs.ingest import ingest_events
    from churnops.jobs.spark import spark_session

    events_dir, customers_path, written = write_partitioned_sources(events, root, seed)
    settings, contract = contract_for(root, events_dir, customers_path, events)
    shutil.rmtree(settings.features_dir, ignore_errors=True)  # no stored frames, no snapshot to reuse
    ingest_events(contract, settings)
    spark = spark_session(settings, f"feature-job-memory-{events}")
    try:
        with DriverMemory() as memory:
            started = time.perf_counter()
            run = build_feature_snapshot(spark, contract, settings, prepare_run(contract, settings))
            seconds = time.perf_counter() - started
    finally:
        spark.stop()
    return {
        "checkout": str(Path(churnops.__file__).resolve().parents[1]),
        "events": written,
        "snapshot_rows": sum(run.metadata.rows_per_cutoff.values()),
        "cutoffs": len(run.metadata.rows_per_cutoff),
        "feature_job_seconds": round(seconds, 1),
        "driver_python_peak_rss_mb": round(memory.python_peak / 2**20),
        "driver_rss_with_children_pss_peak_mb": round(memory.total_peak / 2**20),
        "driver_jvm_peak_rss_mb": round(memory.jvm_peak / 2**20),
        "python_workers_peak_pss_mb": round(memory.workers_peak / 2**20),
        "load_average_1min": round(os.getloadavg()[0], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=3_000_000)
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--root", type=Path, required=True, help="working folder (sources are kept between runs)")
    args = parser.parse_args()
    print(json.dumps(measure(args.events, args.root / str(args.events), args.seed), indent=2))  # noqa: T201


if __name__ == "__main__":
    main()
