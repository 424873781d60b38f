"""Where the stages' outputs live under the working folder, for every room that reads them."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from churnops.config import Settings


def scores_path(settings: Settings, dataset: str, list_date: dt.date, list_kind: str = "regular") -> Path:
    """The Parquet file of one scoring list (a backfill list sits beside the regular list of its date)."""
    suffix = "" if list_kind == "regular" else f"_{list_kind}"
    return settings.scores_dir / dataset / f"scores_{list_date.isoformat()}{suffix}.parquet"


def scores_folder(settings: Settings, dataset: str) -> Path:
    return settings.scores_dir / dataset
