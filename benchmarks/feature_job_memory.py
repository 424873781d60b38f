"""Peak resident memory of the feature job's driver: the Python process alone and with its children (the driver
JVM and, in local mode, the executors and their Python workers, counted by proportional set size), sampled every
100 ms.

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
import threading
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scale import contract_for, write_partitioned_sources  # noqa: E402 - a sibling script, not a package


class DriverMemory:
    """Peak RSS of this process, and of it plus its children's PSS, sampled in a background thread."""

    def __init__(self) -> None:
        self.python_peak, self.total_peak, self._stop = 0, 0, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            own = me.memory_info().rss
            total = own
            for child in me.children(recursive=True):
                try:
                    # PSS, not RSS: PySpark forks its Python workers from a daemon, and summing their RSS would
                    # count the pages they share with it once per fork.
                    total += child.memory_full_info().pss
                except psutil.Error:
                    pass
            self.python_peak, self.total_peak = max(self.python_peak, own), max(self.total_peak, total)
            time.sleep(0.1)

    def __enter__(self) -> DriverMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


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
