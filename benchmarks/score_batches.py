"""What one Arrow batch of Spark scoring costs, outside Spark: the survival columns (`survival_predictions`), the
value predictor and the campaign step, timed on batches of the sizes Spark hands a `mapInPandas` function, with
a cProfile of each (issue 20: a 1M-row scoring task took ~500 s where pandas takes ~12 CPU s).

Reads the models and snapshot a `scale.py` run of the size trained (`--root` is that run's `--root`):

    nice -n 10 .venv/bin/python benchmarks/score_batches.py --root /tmp/scale20d --events 1000000 --rows 1000000
"""

from __future__ import annotations

import argparse
import cProfile
import datetime as dt
import io
import pstats
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scale import contract_for  # noqa: E402 - a sibling script, not a package

from churnops.features import CUTOFF, ENTITY_ID  # noqa: E402
from churnops.jobs.survival.scoring import list_survival_champion, survival_predictions  # noqa: E402
from churnops.registry import configure_mlflow  # noqa: E402
from churnops.snapshots import DATA_DIR, dataset_dir, read_metadata  # noqa: E402


def timed(label: str, action: Callable[[], Any], profile: bool = False) -> Any:
    profiler = cProfile.Profile() if profile else None
    started, cpu = time.perf_counter(), time.process_time()
    if profiler is not None:
        profiler.enable()
    result = action()
    if profiler is not None:
        profiler.disable()
    print(f"{label}: {time.perf_counter() - started:.3f} s wall, {time.process_time() - cpu:.3f} s CPU")  # noqa: T201
    if profiler is not None:
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(18)
        print(out.getvalue())  # noqa: T201
    return result


def scoring_rows(settings: Any, contract: Any, rows: int) -> tuple[pd.DataFrame, dt.date]:
    """The trained snapshot's scoring-cutoff rows, resampled to `rows` rows under fresh ids (as grown_snapshot)."""
    source_dir = sorted(
        (path.parent for path in dataset_dir(settings, contract.name).glob("*/snapshot.json")),
        key=lambda folder: folder.stat().st_mtime,
    )[0]
    cutoff = dt.date.fromisoformat(read_metadata(source_dir).cutoffs["scoring"][0])
    frame = pd.read_parquet(source_dir / DATA_DIR)
    frame = frame[pd.to_datetime(frame[CUTOFF]).dt.date == cutoff].reset_index(drop=True)
    picked = frame.iloc[np.random.default_rng(rows).integers(0, len(frame), rows)].reset_index(drop=True)
    picked[ENTITY_ID] = np.char.add("B", np.arange(rows).astype("U9")).astype(object)
    return picked, cutoff


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--batches", type=int, nargs="+", default=[10_000, 100_000])
    args = parser.parse_args()
    root = args.root / str(args.events)
    sources = root / "sources"
    settings, contract = contract_for(root, sources / "events", sources / "customers.parquet", args.events)
    configure_mlflow(settings)
    rows, cutoff = scoring_rows(settings, contract, args.rows)
    champion = list_survival_champion(contract, cutoff)
    assert champion is not None, "the run trained no survival champion"
    model, _ = champion
    horizons = contract.survival.horizons
    print(f"{len(rows)} rows, survival booster of {model.booster.num_trees()} trees, {len(model.bins)} bins")  # noqa: T201
    timed("prepare (BinTrees.of, once per model object)", lambda: model._bin_trees)
    for size in args.batches:
        batch = rows.iloc[:size]
        timed(f"survival_predictions, one batch of {size}", lambda b=batch: survival_predictions(model, b, horizons))
        timed(f"  (profiled) batch of {size}", lambda b=batch: survival_predictions(model, b, horizons), True)
    whole = timed(
        f"survival_predictions, all {len(rows)} rows in one call", lambda: survival_predictions(model, rows, horizons)
    )
    step = args.batches[0]
    parts = timed(
        f"survival_predictions, {len(rows)} rows in batches of {step}",
        lambda: pd.concat(
            [survival_predictions(model, rows.iloc[i : i + step], horizons) for i in range(0, len(rows), step)],
            ignore_index=True,
        ),
    )
    numeric = [c for c in whole.columns if c not in (ENTITY_ID, "median_beyond_horizon")]
    difference = np.nanmax(np.abs(whole[numeric].to_numpy(float) - parts[numeric].to_numpy(float)))
    print(f"largest difference, one call vs batches: {difference:.3g}")  # noqa: T201


if __name__ == "__main__":
    main()
