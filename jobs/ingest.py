"""Validated ingestion: a dataset's raw event file becomes a clean bronze Parquet table plus a quarantine.

Every row read ends up in exactly one place: the bronze table (in the platform's column names, ready for the
feature job) or the quarantine (the raw values as read, the source row number and every rule the row broke), and
the report says how many went where (read = accepted + quarantined, checked before anything is written). A file
that cannot be read at all raises `IngestionError` naming the file and the cause, and writes nothing. The three
outputs are published together, atomically, under `<home>/bronze/<dataset>/`.

Rules, in the order they are reported: `missing_entity_key`, `missing_timestamp`, `unparseable_timestamp`,
`future_timestamp`, `missing_amount`, `non_numeric_amount`, `negative_amount` (unless the contract allows them),
`missing_event_type` (when the contract names a type column), and `exact_duplicate` (a row identical in every
column to an earlier valid row, unless the contract keeps duplicates).

Run: `python -m jobs.ingest --dataset synthetic`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from churnops.config import Settings
from churnops.dataset import DatasetContract, EventSource, bronze_dir, load_contract
from churnops.features import ENTITY_ID
from churnops.snapshots import file_fingerprint
from churnops.storage import publish_directory, staging_directory_for, write_json_atomically

log = logging.getLogger(__name__)

EVENTS_FILE = "events.parquet"
QUARANTINE_FILE = "quarantine.parquet"
REPORT_FILE = "report.json"
# Bronze columns: the platform's names, whatever the source calls them.
EVENT_TIME, EVENT_DAY, EVENT_TYPE, AMOUNT = "event_time", "event_day", "event_type", "amount"
REASON, SOURCE_ROW = "_reasons", "_source_row"

RULES = (
    "missing_entity_key",
    "missing_timestamp",
    "unparseable_timestamp",
    "future_timestamp",
    "missing_amount",
    "non_numeric_amount",
    "negative_amount",
    "missing_event_type",
    "exact_duplicate",
)


class IngestionError(RuntimeError):
    """The source cannot be ingested at all (unreadable, or missing a required column); nothing was written."""


@dataclass(frozen=True)
class IngestReport:
    dataset: str
    source: str
    source_fingerprint: str
    ingested_at: str
    # Rows stamped after this instant are in the future (the ingestion time, unless a test pins it).
    future_after: str
    rows_read: int
    rows_accepted: int
    rows_quarantined: int
    quarantined_by_reason: dict[str, int] = field(default_factory=dict)

    @property
    def reconciles(self) -> bool:
        return self.rows_read == self.rows_accepted + self.rows_quarantined


def read_source(path: Path, fmt: str) -> pd.DataFrame:
    """Read the raw file as it is (CSV: every value as text, so bad numbers and dates can be reported)."""
    if not path.exists():
        raise IngestionError(
            f"cannot ingest {path}: the file does not exist (for built-in data run `churnops generate`)"
        )
    try:
        if fmt == "csv":
            return pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""], skipinitialspace=True)
        return pd.read_parquet(path)
    except Exception as error:  # noqa: BLE001 - any reader failure means the same thing: unreadable, write nothing
        raise IngestionError(
            f"cannot ingest {path}: not a readable {fmt} file ({type(error).__name__}: {error}); nothing was written"
        ) from error


def _is_missing(values: pd.Series) -> np.ndarray:
    if pd.api.types.is_object_dtype(values) or pd.api.types.is_string_dtype(values):
        return (values.isna() | (values.astype("string").str.strip() == "")).to_numpy(dtype=bool)
    return values.isna().to_numpy(dtype=bool)


def _parse_timestamps(values: pd.Series) -> pd.Series:
    """Parse to naive UTC timestamps; unparseable values become NaT."""
    if pd.api.types.is_datetime64_any_dtype(values):
        parsed = values if values.dt.tz is None else values.dt.tz_convert("UTC").dt.tz_localize(None)
    else:
        text = values.astype("string").str.strip()
        parsed = pd.to_datetime(text, errors="coerce", format="ISO8601", utc=True).dt.tz_localize(None)
    return parsed.astype("datetime64[us]")


def validate_events(
    raw: pd.DataFrame, source: EventSource, future_after: dt.datetime
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split raw events into (accepted rows in bronze columns, quarantined raw rows with their reasons)."""
    required = [source.entity_key, source.timestamp, source.amount] + ([source.event_type] if source.event_type else [])
    missing_columns = [c for c in required if c not in raw.columns]
    if missing_columns:
        raise IngestionError(
            f"the source has no column(s) {missing_columns} named in the dataset contract; it has {list(raw.columns)}"
        )
    raw = raw.reset_index(drop=True)
    broken: dict[str, np.ndarray] = {}

    key_missing = _is_missing(raw[source.entity_key])
    broken["missing_entity_key"] = key_missing

    ts_missing = _is_missing(raw[source.timestamp])
    timestamps = _parse_timestamps(raw[source.timestamp])
    broken["missing_timestamp"] = ts_missing
    broken["unparseable_timestamp"] = ~ts_missing & timestamps.isna().to_numpy()
    broken["future_timestamp"] = (timestamps > pd.Timestamp(future_after)).fillna(False).to_numpy(dtype=bool)

    amount_missing = _is_missing(raw[source.amount])
    amounts = pd.to_numeric(raw[source.amount], errors="coerce").astype("float64")
    broken["missing_amount"] = amount_missing
    broken["non_numeric_amount"] = ~amount_missing & ~np.isfinite(amounts.to_numpy())
    broken["negative_amount"] = (
        np.zeros(len(raw), dtype=bool) if source.allow_negative_amounts else (amounts < 0).fillna(False).to_numpy()
    )
    broken["missing_event_type"] = (
        _is_missing(raw[source.event_type]) if source.event_type else np.zeros(len(raw), dtype=bool)
    )

    invalid = np.logical_or.reduce(list(broken.values()))
    if source.exact_duplicates == "quarantine":
        # Among otherwise valid rows only: a broken row is already set aside, and must not hide a good twin.
        duplicated = np.zeros(len(raw), dtype=bool)
        valid_index = np.flatnonzero(~invalid)
        duplicated[valid_index] = raw.iloc[valid_index].duplicated(keep="first").to_numpy()
        broken["exact_duplicate"] = duplicated
    else:
        broken["exact_duplicate"] = np.zeros(len(raw), dtype=bool)
    rejected = np.logical_or.reduce(list(broken.values()))

    reasons = np.full(len(raw), "", dtype=object)
    for rule in RULES:
        mask = broken[rule]
        reasons[mask] = np.where(reasons[mask] == "", rule, reasons[mask] + ";" + rule)

    quarantine = raw.loc[rejected].astype("string")
    quarantine.insert(0, REASON, reasons[rejected].astype(str))
    quarantine.insert(1, SOURCE_ROW, np.flatnonzero(rejected) + 1)  # 1-based data row (after the header)

    keep = ~rejected
    accepted_times = timestamps[keep].reset_index(drop=True)
    accepted = pd.DataFrame(
        {
            ENTITY_ID: raw.loc[keep, source.entity_key].astype("string").str.strip().reset_index(drop=True),
            EVENT_TIME: accepted_times,
            EVENT_DAY: accepted_times.dt.normalize().dt.date,
            EVENT_TYPE: (
                raw.loc[keep, source.event_type].astype("string").str.strip().reset_index(drop=True)
                if source.event_type
                else pd.Series([pd.NA] * int(keep.sum()), dtype="string")
            ),
            AMOUNT: amounts[keep].reset_index(drop=True),
        }
    )
    return accepted, quarantine.reset_index(drop=True)


def ingest_events(
    contract: DatasetContract, settings: Settings, future_after: dt.datetime | None = None
) -> IngestReport:
    """Validate the contract's event file into `<home>/bronze/<dataset>/` and return the reconciled report."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if contract.events is None:
        raise IngestionError(f"dataset {contract.name!r} is entity-level: it has no event log to ingest")
    source = contract.events
    path = contract.resolve(source.path)
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    future_after = future_after or now
    raw = read_source(path, source.format)
    if raw.empty:
        # A header and no rows is a broken export, not "no customers did anything": publishing it would replace
        # the last good bronze layer with nothing.
        raise IngestionError(f"{path} has no rows (an empty or header-only file); the previous bronze layer is kept")
    fingerprint = file_fingerprint(path)
    accepted, quarantine = validate_events(raw, source, future_after)

    counts = quarantine[REASON].str.split(";").explode().value_counts() if len(quarantine) else pd.Series()
    report = IngestReport(
        dataset=contract.name,
        source=str(path),
        source_fingerprint=fingerprint,
        ingested_at=now.isoformat(timespec="seconds"),
        future_after=future_after.isoformat(timespec="seconds"),
        rows_read=len(raw),
        rows_accepted=len(accepted),
        rows_quarantined=len(quarantine),
        quarantined_by_reason={rule: int(counts.get(rule, 0)) for rule in RULES if counts.get(rule, 0)},
    )
    if not report.reconciles:  # a bug, never a data problem: refuse to publish a layer that loses rows
        raise AssertionError(f"ingestion of {path} does not reconcile: {asdict(report)}")

    final = bronze_dir(settings, contract.name)
    staging = staging_directory_for(final)
    try:
        staging.mkdir(parents=True)
        schema = pa.schema(
            [
                (ENTITY_ID, pa.string()),
                (EVENT_TIME, pa.timestamp("us")),
                (EVENT_DAY, pa.date32()),
                (EVENT_TYPE, pa.string()),
                (AMOUNT, pa.float64()),
            ]
        )
        pq.write_table(pa.Table.from_pandas(accepted, schema=schema, preserve_index=False), staging / EVENTS_FILE)
        pq.write_table(pa.Table.from_pandas(quarantine, preserve_index=False), staging / QUARANTINE_FILE)
        write_json_atomically(asdict(report), staging / REPORT_FILE)
        publish_directory(staging, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info(
        "ingested %s: read %d = accepted %d + quarantined %d %s",
        path,
        report.rows_read,
        report.rows_accepted,
        report.rows_quarantined,
        report.quarantined_by_reason,
    )
    return report


def read_report(settings: Settings, dataset: str) -> IngestReport | None:
    path = bronze_dir(settings, dataset) / REPORT_FILE
    if not path.exists():
        return None
    return IngestReport(**json.loads(path.read_text()))


def ensure_bronze(contract: DatasetContract, settings: Settings) -> IngestReport:
    """The bronze layer for this contract, re-ingesting only when the source file changed since the last run."""
    if contract.events is None:
        raise IngestionError(f"dataset {contract.name!r} is entity-level: it has no event log to ingest")
    report = read_report(settings, contract.name)
    path = contract.resolve(contract.events.path)
    if report is not None and path.exists() and report.source == str(path):
        if report.source_fingerprint == file_fingerprint(path):
            return report
    return ingest_events(contract, settings)


def record_ingestion_report(settings: Settings, report: IngestReport) -> None:
    """The reconciled counts into the platform database (the Pipelines dashboard reads them), once per source
    version: the run id is the source's fingerprint, so recording the same ingestion again changes nothing."""
    import contextlib

    from churnops import db

    with contextlib.closing(db.connect(settings)) as conn:
        db.migrate(conn)
        db.write_ingestion_report(
            conn,
            dataset=report.dataset,
            source=report.source,
            run_id=report.source_fingerprint[:16],
            rows_read=report.rows_read,
            rows_accepted=report.rows_accepted,
            rows_quarantined=report.rows_quarantined,
            quarantine_reasons=report.quarantined_by_reason,
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default=None, help="built-in dataset name or contract YAML path")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = Settings()
    report = ingest_events(load_contract(args.dataset or settings.dataset, settings), settings)
    print(json.dumps(asdict(report), indent=2))  # noqa: T201


if __name__ == "__main__":
    main()
