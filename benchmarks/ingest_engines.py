"""Ingestion by both engines on the same partitioned source, side by side: the seeded generator's events as one
Parquet file per month (`benchmarks/scale.py`'s `write_partitioned_sources`), ingested into two fresh bronze
layers, once by pandas and once by Spark (`ingestion.engine`), with the time of each, the driver's peak RSS (this
process and its children, sampled every 100 ms) and a check that both committed the same counts.

    nice -n 10 .venv/bin/python benchmarks/ingest_engines.py --events 3000000 --root /tmp/ingest-engines

Spark's session start is timed apart from its ingestion. Figures go to stdout as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from features_bench import PeakMemory  # noqa: E402 - a sibling script, not a package
from scale import contract_for, write_partitioned_sources  # noqa: E402

from churnops.jobs.ingest import ingest_events  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=3_000_000)
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--root", type=Path, default=None, help="working folder (default: a temporary one)")
    args = parser.parse_args()
    root = args.root or Path(tempfile.mkdtemp(prefix="churnops-ingest-engines-"))
    events_dir, customers_path, written = write_partitioned_sources(args.events, root, args.seed)
    settings, contract = contract_for(root, events_dir, customers_path, args.events)
    files = sorted(events_dir.glob("*.parquet"))
    figures: dict = {
        "events": written,
        "source_files": len(files),
        "source_mb": sum(f.stat().st_size for f in files) // 2**20,
    }
    totals = {}
    for engine in ("pandas", "spark"):
        home = settings.model_copy(update={"home": root / f"home-{engine}"})
        with PeakMemory() as peak:
            started = time.perf_counter()
            if engine == "spark":
                from churnops.jobs.spark import spark_session

                spark = spark_session(home, "ingest-engines")
                figures["spark_session_start_seconds"] = round(time.perf_counter() - started, 2)
                started = time.perf_counter()
            run = ingest_events(contract, home, engine=engine)
            figures[f"{engine}_ingest_seconds"] = round(time.perf_counter() - started, 2)
            if engine == "spark":
                spark.stop()
        figures[f"{engine}_peak_rss_mb_with_children"] = round(peak.peak / 2**20)
        totals[engine] = run.manifest.totals()
    figures["same_counts"] = totals["pandas"] == totals["spark"]
    figures["totals"] = totals["spark"]
    figures["load_average_1min"] = round(os.getloadavg()[0], 2)
    print(json.dumps(figures, indent=2))  # noqa: T201 - a benchmark prints figures


if __name__ == "__main__":
    main()
