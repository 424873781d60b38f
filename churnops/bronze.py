"""Reading the validated (bronze) event log that `jobs/ingest.py` writes: where it is and how far it reaches."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

from churnops.config import Settings
from churnops.dataset import bronze_dir

if TYPE_CHECKING:
    import pandas as pd

EVENTS_FILE = "events.parquet"


def latest_event_day(settings: Settings, dataset: str) -> dt.date | None:
    """The data watermark: the latest event day among the accepted events (None before any ingestion)."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    path = bronze_dir(settings, dataset) / EVENTS_FILE
    if not path.exists():
        return None
    days = pq.read_table(path, columns=["event_day"]).column("event_day")
    return pc.max(days).as_py()


def read_bronze_events(
    settings: Settings,
    dataset: str,
    columns: list[str],
    days: tuple[dt.date, dt.date] | None = None,
) -> pd.DataFrame:
    """The accepted events' `columns`, only those with `days[0] <= event_day < days[1]` when `days` is given."""
    import pandas as pd

    path = bronze_dir(settings, dataset) / EVENTS_FILE
    filters = None
    if days is not None:
        filters = [("event_day", ">=", days[0]), ("event_day", "<", days[1])]
    return pd.read_parquet(path, columns=columns, filters=filters)
