"""Scale benchmark (skeleton): partitioned sources of a given size through ingestion, features and Spark scoring,
with the peak resident memory of the driver.

For each size: the seeded generator's events are written as one Parquet file per month under a source folder (the
contract's events path is the folder, as a delivery of daily or monthly files would be), then timed:
ingestion into bronze, the feature job's entry point (`prepare_run` + `build_feature_snapshot` in one
SparkSession), a small training (a champion to score with: few trials, not timed as a stage of interest) and the
list scored on Spark (`churnops.jobs.score_spark`) into Parquet. Peak RSS is sampled every 100 ms over this process
and its children (the driver JVM and, in local mode, the executors' Python workers); the Python side alone is read
after each stage.

    .venv/bin/python benchmarks/scale.py --events 1000000

Figures go to stdout and `<root>/results.json`. Run so far at 1-2M events only; the 10M-100M sizes of issue 20
need the Spark ingestion and driver-free snapshots it also asks for before they are worth timing.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from features_bench import EVENTS_PER_CUSTOMER, PeakMemory  # noqa: E402 - a sibling script, not a package

from churnops.config import PACKAGE_DIR, Settings, SparkSettings  # noqa: E402
from churnops.dataset import DatasetContract, load_contract  # noqa: E402
from churnops.jobs.generate import generate  # noqa: E402
from churnops.storage import write_parquet_atomically  # noqa: E402


def write_partitioned_sources(events: int, root: Path, seed: int) -> tuple[Path, Path, int]:
    """The seeded generator's log as one Parquet file per month of events, and the customer table."""
    sources = root / "sources"
    events_dir = sources / "events"
    customers_path = sources / "customers.parquet"
    if not customers_path.exists():
        data = generate(max(events // EVENTS_PER_CUSTOMER, 100), seed=seed)
        events_dir.mkdir(parents=True, exist_ok=True)
        month = pd.to_datetime(data.events["event_time"]).dt.strftime("%Y-%m")
        for name, part in data.events.groupby(month):
            write_parquet_atomically(part, events_dir / f"events_{name}.parquet")
        write_parquet_atomically(data.customers, customers_path)
    written = sum(len(pd.read_parquet(p, columns=["customer_id"])) for p in events_dir.glob("*.parquet"))
    return events_dir, customers_path, written


def contract_for(root: Path, events_dir: Path, customers_path: Path, events: int) -> tuple[Settings, DatasetContract]:
    import yaml

    raw = yaml.safe_load((PACKAGE_DIR / "datasets" / "synthetic.yaml").read_text())
    raw["name"] = f"scale-{events}"
    raw["events"]["path"] = str(events_dir)
    raw["entities"]["path"] = str(customers_path)
    raw["cutoffs"]["as_of"] = "2025-01-01"  # the generated data ends the day before: one fixed run date
    (root / "contract.yaml").write_text(yaml.safe_dump(raw))
    settings = Settings(
        home=root / "home",
        spark=SparkSettings(master="local[2]", driver_memory="2g"),
        training={"n_trials": 2, "seed": 3},
        scoring={"engine": "spark"},
    )
    return settings, load_contract(str(root / "contract.yaml"), settings)


def timed(stage: str, figures: dict, action: object) -> object:
    with PeakMemory() as with_children:
        started = time.perf_counter()
        result = action()  # type: ignore[operator]
        figures[f"{stage}_seconds"] = round(time.perf_counter() - started, 2)
    # The Python side of the driver after the stage (not sampled: PeakMemory samples it with its children).
    figures[f"{stage}_driver_python_rss_after_mb"] = round(psutil.Process().memory_info().rss / 2**20)
    figures[f"{stage}_driver_with_children_peak_rss_mb"] = round(with_children.peak / 2**20)
    return result


def run_size(events: int, root: Path, seed: int) -> dict:
    from churnops.jobs.features import build_feature_snapshot, prepare_run
    from churnops.jobs.ingest import ingest_events
    from churnops.jobs.score import score
    from churnops.jobs.spark import spark_session
    from churnops.jobs.training import train

    events_dir, customers_path, written = write_partitioned_sources(events, root, seed)
    settings, contract = contract_for(root, events_dir, customers_path, events)
    figures: dict = {"events": written, "source_files": len(list(events_dir.glob("*.parquet")))}
    timed("ingest", figures, lambda: ingest_events(contract, settings))

    def features() -> None:
        spark = spark_session(settings, f"scale-features-{events}")
        try:
            build_feature_snapshot(spark, contract, settings, prepare_run(contract, settings))
        finally:
            spark.stop()

    timed("features", figures, features)
    train(settings, contract)  # a champion to score with; not a stage this benchmark measures
    run = timed("spark_scoring", figures, lambda: score(settings, contract, run_id="scale", engine="spark"))
    figures["customers_scored"] = run.rows  # type: ignore[attr-defined]
    figures["load_average_1min"] = round(os.getloadavg()[0], 2)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, nargs="+", default=[1_000_000])
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--root", type=Path, default=None, help="working folder (default: a temporary one)")
    args = parser.parse_args()
    root = args.root or Path(tempfile.mkdtemp(prefix="churnops-scale-"))
    results = {}
    for events in args.events:
        results[str(events)] = run_size(events, root / str(events), args.seed)
        print(json.dumps({str(events): results[str(events)]}, indent=2))  # noqa: T201 - a benchmark prints figures
    (root / "results.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
