"""What the source check reports (findings, per-source summaries, the error) and the cell readers its checks share."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

# Event logs: the first rows of each file show whether a column is the right one.
SAMPLE_ROWS = 10_000
EXAMPLES = 3
# A date as Spark's cast to date reads it: the day first, anything after it (a time) ignored.
ISO_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}(?:[T ].*)?$")


@dataclass(frozen=True)
class Finding:
    """One thing the check found: an `error` stops the pipeline, a `note` is worth knowing."""

    level: Literal["error", "note"]
    source: str
    column: str | None
    problem: str
    fix: str = ""


@dataclass(frozen=True)
class SourceSummary:
    source: str
    path: Path
    # Rows read: the whole entity table, or an event file's first rows (at most SAMPLE_ROWS).
    rows: int
    columns: int


@dataclass(frozen=True)
class SourceReport:
    dataset: str
    sources: tuple[SourceSummary, ...]
    findings: tuple[Finding, ...]

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.level == "error"]

    @property
    def notes(self) -> list[Finding]:
        return [f for f in self.findings if f.level == "note"]

    def error_message(self) -> str:
        lines = [
            f"dataset {self.dataset!r}: {len(self.errors)} problem(s) in the source files (found before any Spark "
            "work; `churnops check` lists them):"
        ]
        for finding in self.errors:
            column = f" column {finding.column!r}" if finding.column else ""
            lines.append(f"- {finding.source}{column}: {finding.problem}. Fix: {finding.fix}")
        return "\n".join(lines)


class SourceCheckError(ValueError):
    """The source files do not fit the contract; the message lists every problem, each with its fix."""

    def __init__(self, report: SourceReport) -> None:
        super().__init__(report.error_message())
        self.report = report


def read_text_table(path: Path, fmt: str, nrows: int | None = None) -> pd.DataFrame:
    """The table as written: a CSV's cells as text (blank cells stay ""), a Parquet file's columns as typed."""
    if fmt == "csv":
        return pd.read_csv(path, dtype=str, keep_default_na=False, nrows=nrows)
    if nrows is None:
        return pd.read_parquet(path)
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(path)
    batch = next(parquet.iter_batches(batch_size=nrows), None)
    return parquet.schema_arrow.empty_table().to_pandas() if batch is None else batch.to_pandas()


def read_or_finding(path: Path, fmt: str, source: str, line: str, nrows: int | None = None) -> pd.DataFrame | Finding:
    if not path.exists():
        return Finding(
            "error",
            source,
            None,
            f"{path} does not exist",
            f"set `{line}` to the file (a relative path resolves against the contract's folder); for a built-in "
            "dataset run `churnops generate`",
        )
    try:
        table = read_text_table(path, fmt, nrows)
    except pd.errors.EmptyDataError:
        table = pd.DataFrame()
    except Exception as error:  # noqa: BLE001 - any reader failure means the same thing: not a readable file
        return Finding(
            "error",
            source,
            None,
            f"{path} is not a readable {fmt} file ({type(error).__name__}: {error})",
            f"check that `{line.rsplit('.', 1)[0]}.format` ({fmt}) is the file's format",
        )
    if table.empty:
        return Finding(
            "error",
            source,
            None,
            f"{path} has no rows (an empty or header-only file)",
            f"export the file again with its rows, or point `{line}` at the right file",
        )
    return table


def examples(values: Iterable[object]) -> str:
    return ", ".join(repr(v) for v in list(dict.fromkeys(values))[:EXAMPLES])


def missing_column(source: str, column: str, line: str, present: list[str]) -> Finding:
    close = difflib.get_close_matches(column, present, n=1, cutoff=0.6) or [
        c for c in present if c.lower() == column.lower()
    ]
    if close:
        problem = f"the file has no column {column!r} (named by `{line}`); did you mean {close[0]!r}?"
        fix = f"write {close[0]!r} instead of {column!r} in `{line}`"
    else:
        shown = ", ".join(present[:15]) + (", ..." if len(present) > 15 else "")
        problem = f"the file has no column {column!r} (named by `{line}`)"
        fix = f"correct or remove {column!r} in `{line}`; the file's columns are: {shown}"
    return Finding("error", source, column, problem, fix)


def text_cells(values: pd.Series) -> tuple[pd.Series, np.ndarray]:
    """The cells as stripped text, and which of them are blank (null, empty or whitespace only)."""
    text = values.astype("string").str.strip()
    return text, (text.isna() | (text == "")).to_numpy(dtype=bool)


def numbers(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Which cells are blank (missing values) and which hold something that is not a finite number."""
    if pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
        # Typed columns (Parquet): booleans are 0/1, as Spark casts them.
        parsed = values.astype("Float64").to_numpy(dtype="float64", na_value=np.nan)
        blank = np.isnan(parsed)
        return blank, ~blank & ~np.isfinite(parsed)
    text, blank = text_cells(values)
    parsed = pd.to_numeric(text.astype(object).where(~blank, None), errors="coerce").to_numpy(dtype="float64")
    return blank, ~blank & ~np.isfinite(parsed)


def dates(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Which cells are blank and which are not a day (YYYY-MM-DD, optionally followed by a time)."""
    if pd.api.types.is_datetime64_any_dtype(values) or isinstance(values.dtype, pd.ArrowDtype):
        blank = values.isna().to_numpy(dtype=bool)
        return blank, np.zeros(len(values), dtype=bool)
    text, blank = text_cells(values)
    shaped = text.str.match(ISO_DAY).fillna(False).to_numpy(dtype=bool)
    parsed = pd.to_datetime(text.str[:10].where(shaped), format="%Y-%m-%d", errors="coerce")
    return blank, ~blank & parsed.isna().to_numpy(dtype=bool)
