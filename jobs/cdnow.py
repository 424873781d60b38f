"""Loader for CDNOW, the real purchase log the `cdnow` dataset contract describes.

The file `lifetimes/datasets/CDNOW_master.txt` ships inside the `lifetimes` wheel (a dev dependency, used only as
a file carrier and never imported): 69,659 order lines of 23,570 customers, whitespace separated —
customer id, date (YYYYMMDD), number of CDs, dollars. `prepare_cdnow` writes it as
`<home>/data/cdnow/events.parquet` in the contract's column names.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import pandas as pd

from churnops.config import Settings
from churnops.storage import write_parquet_atomically

CDNOW_RESOURCE = "lifetimes/datasets/CDNOW_master.txt"


def cdnow_source_file() -> Path:
    """Where the installed `lifetimes` wheel keeps CDNOW_master.txt."""
    try:
        path = Path(str(importlib.metadata.distribution("lifetimes").locate_file(CDNOW_RESOURCE)))
    except importlib.metadata.PackageNotFoundError as error:
        raise FileNotFoundError(
            "CDNOW ships inside the `lifetimes` wheel, which is not installed; run `uv sync` (it is a dev dependency)"
        ) from error
    if not path.exists():
        raise FileNotFoundError(f"the installed lifetimes wheel has no {CDNOW_RESOURCE} (looked at {path})")
    return path


def read_cdnow(path: Path) -> pd.DataFrame:
    """Parse the whitespace-separated master file into customer_id, purchase_date, cds, dollars."""
    raw = pd.read_csv(
        path,
        sep=r"\s+",
        header=0,
        names=["customer_id", "date", "cds", "dollars"],
        dtype={"customer_id": "int64", "date": "string", "cds": "int64", "dollars": "float64"},
    )
    return pd.DataFrame(
        {
            "customer_id": raw["customer_id"],
            "purchase_date": pd.to_datetime(raw["date"], format="%Y%m%d").astype("datetime64[us]"),
            "cds": raw["cds"],
            "dollars": raw["dollars"],
        }
    )


def prepare_cdnow(settings: Settings) -> Path:
    """Write CDNOW as `<home>/data/cdnow/events.parquet` (atomically) and return that path."""
    target = settings.data_dir / "cdnow" / "events.parquet"
    write_parquet_atomically(read_cdnow(cdnow_source_file()), target)
    return target
