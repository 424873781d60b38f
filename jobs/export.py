"""Top-K campaign export: the highest-risk customers of the latest scoring list, as CSV and Parquet.

The list a marketer loads into a CRM or a spreadsheet: rank, customer, score, risk band and decile, decision,
model version, cutoff and when it was scored; for a dataset with a `value:` section also the expected value, the
expected saved value, the campaign rank and whether the campaign selects the customer. CSV cells that a
spreadsheet would run as a formula (starting with = + - @, or a tab or carriage return) get a leading apostrophe,
so a hostile customer id such as `=cmd|'/c calc'!A0` is shown as text instead of executed (the rule is
churnops/spreadsheet_safety.py, shared with the pages' download).
The Parquet file keeps the values untouched: it is typed data for programs, and spreadsheets do not open it.
Files appear atomically: a killed export leaves no partial file.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from churnops.db import latest_scores
from churnops.spreadsheet_safety import SPREADSHEET_CSV_ENCODING, neutralise_formulas
from churnops.storage import write_csv_atomically, write_parquet_atomically
from churnops.survival_columns import survival_list_columns
from churnops.value_contract import VALUE_LIST_COLUMNS

if TYPE_CHECKING:
    from psycopg2.extensions import connection as Connection

CAMPAIGN_COLUMNS = (
    "rank",
    "customer_id",
    "score",
    "risk_band",
    "risk_decile",
    "decision",
    "model_version",
    "cutoff",
    "scored_at",
)
EXPORT_FORMATS = ("csv", "parquet")


@dataclass(frozen=True)
class CampaignExport:
    dataset: str
    logical_date: dt.date
    rows: int
    paths: dict[str, Path] = field(default_factory=dict)


def campaign_list(scores: pd.DataFrame, top_k: int) -> pd.DataFrame:
    """The top `top_k` customers of a scoring list (highest score first, ties by customer_id), ranked from 1, with
    the value columns (expected value, expected saved value, campaign rank, in campaign) when the list has them."""
    if top_k < 1:
        raise ValueError(f"top_k must be at least 1, got {top_k}")
    top = scores.sort_values(["score", "customer_id"], ascending=[False, True], kind="stable").head(top_k)
    top = top.reset_index(drop=True)
    top.insert(0, "rank", range(1, len(top) + 1))
    valued = [c for c in VALUE_LIST_COLUMNS if c in top.columns and top[c].notna().any()]
    # A dataset with a survival model: P(buy by each horizon) and the median days to the next purchase too.
    survival = [c for c in survival_list_columns() if c in top.columns]
    return top.loc[:, [*CAMPAIGN_COLUMNS, *valued, *survival]]


def write_formula_safe_csv(frame: pd.DataFrame, path: Path) -> None:
    """Write `frame` as a formula-safe CSV (UTF-8 with BOM, so Excel reads accents) via staging and rename."""
    write_csv_atomically(neutralise_formulas(frame), path, encoding=SPREADSHEET_CSV_ENCODING)


def export_top_k(
    conn: Connection,
    *,
    dataset: str,
    top_k: int,
    out_dir: Path,
    formats: Sequence[str] = EXPORT_FORMATS,
) -> CampaignExport:
    """Export the top `top_k` customers of the latest scoring list of `dataset` to `out_dir`.

    Files are named `<dataset>_top<K>_<logical date>.<format>`; exporting the same list again overwrites them.
    """
    unknown = sorted(set(formats) - set(EXPORT_FORMATS))
    if unknown:
        raise ValueError(f"unknown export formats {unknown}; choose from {list(EXPORT_FORMATS)}")
    scores = latest_scores(conn, dataset, limit=top_k)
    if scores.empty:
        raise LookupError(f"dataset {dataset!r} has no scoring list yet: run the scoring job first")
    logical_date = scores["logical_date"].iloc[0]
    campaign = campaign_list(scores, top_k)
    stem = f"{dataset}_top{top_k}_{logical_date.isoformat()}"
    paths: dict[str, Path] = {}
    out_dir.mkdir(parents=True, exist_ok=True)
    if "csv" in formats:
        paths["csv"] = out_dir / f"{stem}.csv"
        write_formula_safe_csv(campaign, paths["csv"])
    if "parquet" in formats:
        paths["parquet"] = out_dir / f"{stem}.parquet"
        write_parquet_atomically(campaign, paths["parquet"])
    return CampaignExport(dataset=dataset, logical_date=logical_date, rows=len(campaign), paths=paths)
