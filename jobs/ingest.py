"""Incremental ingestion: the new files of a dataset's landing source become day-partitioned bronze, file by file.

One run, under the bronze folder's lock: delete what no manifest lists (a crashed run's parts, superseded
deliveries), list the source files (`jobs/landing.py`), read only the new and re-delivered ones, split each by the
row rules (`jobs/event_rules.py`) into one Parquet part per event day plus a quarantine file, check its counts
reconcile, and commit everything by writing the manifest (`churnops/bronze.py`) last, atomically. A re-delivered
file's record replaces its old one, so its new rows replace exactly its old rows; other files are untouched. With
nothing new, nothing is written. A file that cannot be ingested (unreadable, empty, missing a column) is left out
and named: the good files are committed first, then the run fails, so an operator sees it and the next run reads
just that file again.

A change of the contract's `events.path` or of its ingestion rules re-ingests every file.

Who reads the files is `Settings.ingestion.engine` (`pandas`, `spark`: churnops.jobs.ingest_spark, or `auto` by
the total size of the files to read); a `postgres` table source is always read by Spark.

Run: `python -m churnops.jobs.ingest --dataset synthetic [--engine spark]`.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import json
import logging
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import pandas as pd

from churnops.bronze import (
    LAYOUT_VERSION,
    MANIFEST_FILE,
    QUARANTINE_DIR,
    BronzeManifest,
    SourceFileRecord,
    event_schema,
    read_manifest,
    read_parquet_files,
)
from churnops.config import Settings
from churnops.dataset import DatasetContract, EventSource, bronze_dir, load_contract
from churnops.jobs.bronze_writer import (
    LOCK_TIMEOUT_SECONDS,
    bronze_lock,
    part_stem,
    remove_unlisted_files,
    write_day_parts,
)
from churnops.jobs.event_rules import EVENT_IDENTITY, IngestionError, validate_file
from churnops.jobs.landing import SourceFile, detect_changes, is_glob, list_source_files, source_root
from churnops.jobs.landing_postgres import table_source_file
from churnops.storage import write_json_atomically

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FileFailure:
    path: str
    message: str


@dataclass(frozen=True)
class IngestionRun:
    """What one ingestion run did; `manifest` is the bronze layer as it stands after the run."""

    dataset: str
    ingestion_id: str
    manifest: BronzeManifest
    # Files read and committed by this run (new or re-delivered), by path relative to the source root.
    ingested: tuple[str, ...]
    unchanged: tuple[str, ...]
    # Files that left the landing folder since the previous run (their rows stay in bronze).
    gone: tuple[str, ...]
    failed: tuple[FileFailure, ...]
    committed: bool

    @property
    def records(self) -> list[SourceFileRecord]:
        return [self.manifest.files[path] for path in self.ingested]

    @property
    def rows_read(self) -> int:
        return sum(r.rows_read for r in self.records)

    @property
    def rows_accepted(self) -> int:
        return sum(r.rows_accepted for r in self.records)

    @property
    def rows_quarantined(self) -> int:
        return sum(r.rows_quarantined for r in self.records)

    @property
    def quarantined_by_reason(self) -> dict[str, int]:
        reasons: dict[str, int] = {}
        for record in self.records:
            for reason, n in record.quarantined_by_reason.items():
                reasons[reason] = reasons.get(reason, 0) + n
        return reasons


class IngestionFailed(IngestionError):
    """Some source files could not be ingested; the others were committed. `run` says which went where."""

    def __init__(self, run: IngestionRun, message: str) -> None:
        super().__init__(message)
        self.run = run


def rules_fingerprint(source: EventSource) -> str:
    """What turned source rows into bronze rows: a change re-ingests every file."""
    # A file source's fingerprint is what it was before tables could be sources: no re-ingestion on upgrade.
    ignored = {"path", "counted_event_types"} | ({"postgres"} if source.format != "postgres" else set())
    rules = source.model_dump(exclude=ignored) | {"layout": LAYOUT_VERSION}
    return hashlib.sha256(json.dumps(rules, sort_keys=True).encode()).hexdigest()[:16]


def _events_of_other_files(
    root: Path, files: dict[str, SourceFileRecord], exclude: str, days: list[dt.date]
) -> pd.DataFrame:
    """The events other source files put in bronze on `days` (the cross-file duplicate check reads them)."""
    wanted = {day.isoformat() for day in days}
    parts = [
        root / entry["part"]
        for relative, record in sorted(files.items())
        if relative != exclude
        for day, entry in record.days.items()
        if day in wanted
    ]
    return read_parquet_files(parts, event_schema(), EVENT_IDENTITY)


def _ingest_file(
    file: SourceFile,
    source: EventSource,
    root: Path,
    files: dict[str, SourceFileRecord],
    ingestion_id: str,
    now: dt.datetime,
    future_after: dt.datetime,
) -> SourceFileRecord:
    """Validate one source file and write its parts and quarantine (not yet committed); return its record."""
    validated = validate_file(
        file.path, source, future_after, lambda days: _events_of_other_files(root, files, file.relative, days)
    )
    stat = file.path.stat()
    if (stat.st_size, stat.st_mtime_ns) != (file.size, file.mtime_ns):
        raise IngestionError(f"cannot ingest {file.path}: it changed while it was read; the next run reads it again")
    stem = part_stem(file.relative, ingestion_id)
    days = write_day_parts(root, stem, validated.accepted)
    quarantine = None
    if len(validated.quarantine):
        quarantine = f"{QUARANTINE_DIR}/{stem}.parquet"
        (root / QUARANTINE_DIR).mkdir(parents=True, exist_ok=True)
        validated.quarantine.to_parquet(root / quarantine, index=False)
    record = file_record(
        file,
        ingestion_id,
        now,
        future_after,
        rows_read=validated.rows_read,
        rows_quarantined=len(validated.quarantine),
        quarantined_by_reason=validated.quarantined_by_reason,
        days=days,
        quarantine=quarantine,
    )
    if not (validated.reconciles and record.reconciles):  # a bug, never a data problem: refuse to commit
        raise AssertionError(f"ingestion of {file.path} does not reconcile: {record}")
    return record


def file_record(
    file: SourceFile,
    ingestion_id: str,
    now: dt.datetime,
    future_after: dt.datetime,
    rows_read: int,
    rows_quarantined: int,
    quarantined_by_reason: dict[str, int],
    days: dict[str, dict[str, object]],
    quarantine: str | None,
) -> SourceFileRecord:
    """One ingested file's manifest record (both engines build it here); the accepted count is what its parts hold."""
    assert file.sha256 is not None
    return SourceFileRecord(
        size=file.size,
        mtime_ns=file.mtime_ns,
        sha256=file.sha256,
        ingestion_id=ingestion_id,
        ingested_at=now.isoformat(timespec="seconds"),
        future_after=future_after.isoformat(timespec="seconds"),
        rows_read=rows_read,
        rows_accepted=sum(int(entry["rows"]) for entry in days.values()),  # type: ignore[call-overload]
        rows_quarantined=rows_quarantined,
        quarantined_by_reason=quarantined_by_reason,
        min_event_day=min(days) if days else None,
        max_event_day=max(days) if days else None,
        days=days,
        quarantine=quarantine,
    )


def _summary_error(run: IngestionRun, kept_previous: bool) -> str:
    failures = "; ".join(f"{failure.message}" for failure in run.failed)
    outcome = (
        "nothing was committed and the previous bronze layer is kept"
        if kept_previous
        else f"the other {len(run.ingested)} new file(s) were committed"
    )
    return (
        f"ingestion of dataset {run.dataset!r}: {len(run.failed)} source file(s) refused ({outcome}): {failures}. "
        "Fix or remove them and run again: only the files not yet ingested are read"
    )


def _starting_manifest(committed: BronzeManifest | None, contract: DatasetContract) -> BronzeManifest:
    """The committed manifest, or an empty one when there is none or it was made from another source or rules."""
    assert contract.events is not None
    fresh = BronzeManifest(contract.name, source=contract.events.path, rules=rules_fingerprint(contract.events))
    if committed is None:
        return fresh
    if (committed.source, committed.rules, committed.layout_version) != (fresh.source, fresh.rules, LAYOUT_VERSION):
        log.warning("%s: the source or its ingestion rules changed: re-ingesting every file", contract.name)
        return fresh
    return committed


def _nothing_to_ingest(contract: DatasetContract) -> IngestionError:
    assert contract.events is not None
    source = contract.events
    target = contract.resolve(source.path)
    if not is_glob(source.path) and not target.is_dir():
        return IngestionError(
            f"cannot ingest {target}: the file does not exist (for built-in data run `churnops generate`)"
        )
    return IngestionError(
        f"cannot ingest {target}: no {source.format} source file found there (names starting with `.` or `_` are "
        f"skipped; root {source_root(contract)})"
    )


def ingest_events(
    contract: DatasetContract,
    settings: Settings,
    future_after: dt.datetime | None = None,
    lock_timeout_seconds: float = LOCK_TIMEOUT_SECONDS,
    engine: Literal["pandas", "spark"] | None = None,
) -> IngestionRun:
    """Ingest the source files not yet in bronze; commit them with one manifest write; fail after the commit if
    a file was refused (`IngestionFailed`, naming each one). The engine is `settings.ingestion`'s choice for the
    total size of the files to read, unless given."""
    if contract.events is None:
        raise IngestionError(f"dataset {contract.name!r} is entity-level: it has no event log to ingest")
    source = contract.events
    root = bronze_dir(settings, contract.name)
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0)
    future_after = future_after or now
    ingestion_id = f"{now:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"
    with bronze_lock(root, lock_timeout_seconds):
        committed = read_manifest(settings, contract.name)
        removed = remove_unlisted_files(root, committed)
        base = _starting_manifest(committed, contract)
        files = list_source_files(contract) if source.format != "postgres" else [table_source_file(settings, source)]
        if not files and not base.files:
            raise _nothing_to_ingest(contract)
        changes = detect_changes(files, base, now)
        working = dict(base.files) | changes.records
        ingested: list[str] = []
        failed: list[FileFailure] = []
        if source.format == "postgres" and engine == "pandas":
            raise IngestionError("a `postgres` event source is read through JDBC by Spark: ingest with engine spark")
        if source.format == "postgres":
            engine = "spark"  # whatever `ingestion.engine` says: only Spark reads tables
        engine = engine or settings.ingestion.engine_for(sum(file.size for file in changes.to_ingest))
        if engine == "spark" and changes.to_ingest:
            from churnops.jobs.ingest_spark import ingest_files_in_spark

            records, failed = ingest_files_in_spark(
                settings, changes.to_ingest, source, root, working, ingestion_id, now, future_after
            )
            working |= records
            ingested = list(records)
        for file in changes.to_ingest if engine == "pandas" else ():
            try:
                working[file.relative] = _ingest_file(file, source, root, working, ingestion_id, now, future_after)
                ingested.append(file.relative)
            except IngestionError as error:
                failed.append(FileFailure(file.relative, str(error)))
        manifest = replace(base, files=dict(sorted(working.items())))
        # Re-ingesting everything and losing a file would drop that file's rows: keep the previous layer whole.
        keep_previous = base is not committed and committed is not None and bool(failed)
        # Nothing ingested into an empty layer: no manifest at all is clearer to readers than an empty one.
        commit = manifest != committed and not keep_previous and (committed is not None or bool(manifest.files))
        if commit:
            write_json_atomically(manifest.to_json(), root / MANIFEST_FILE)
    run = IngestionRun(
        dataset=contract.name,
        ingestion_id=ingestion_id,
        manifest=manifest if commit else (committed or manifest),
        ingested=tuple(ingested) if commit else (),
        unchanged=tuple(changes.unchanged),
        gone=tuple(changes.gone),
        failed=tuple(failed),
        committed=commit,
    )
    _log_run(run, removed)
    if failed:
        raise IngestionFailed(run, _summary_error(run, kept_previous=not commit))
    return run


def _log_run(run: IngestionRun, removed: int) -> None:
    log.info(
        "ingestion of %s: %d file(s) ingested (read %d = accepted %d + quarantined %d %s), %d unchanged, %d gone, "
        "%d refused, %d unlisted file(s) removed; %s",
        run.dataset,
        len(run.ingested),
        run.rows_read,
        run.rows_accepted,
        run.rows_quarantined,
        run.quarantined_by_reason,
        len(run.unchanged),
        len(run.gone),
        len(run.failed),
        removed,
        "committed" if run.committed else "nothing committed",
    )


def ensure_bronze(contract: DatasetContract, settings: Settings) -> BronzeManifest:
    """The committed bronze manifest for this contract, after ingesting whatever landed since the last run."""
    return ingest_events(contract, settings).manifest


def record_ingestion_reports(settings: Settings, manifest: BronzeManifest) -> int:
    """Every source file's reconciled counts into the platform database (the Pipelines dashboard reads them).

    One row per file version: the key is the file's path and its SHA-256, so recording again changes nothing and a
    re-delivery adds a row beside the one of the version it replaced.
    """
    from churnops import db

    reports = [
        db.IngestionReport(
            source=relative,
            run_id=record.sha256[:16],
            rows_read=record.rows_read,
            rows_accepted=record.rows_accepted,
            rows_quarantined=record.rows_quarantined,
            quarantine_reasons=record.quarantined_by_reason,
            first_event_day=None if record.min_event_day is None else dt.date.fromisoformat(record.min_event_day),
            last_event_day=None if record.max_event_day is None else dt.date.fromisoformat(record.max_event_day),
            reported_at=dt.datetime.fromisoformat(record.ingested_at).replace(tzinfo=dt.UTC),
        )
        for relative, record in sorted(manifest.files.items())
    ]
    with contextlib.closing(db.connect(settings)) as conn:
        db.migrate(conn)
        return db.write_ingestion_reports(conn, dataset=manifest.dataset, reports=reports)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default=None, help="built-in dataset name or contract YAML path")
    parser.add_argument("--engine", choices=["pandas", "spark"], default=None, help="default: settings.ingestion")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = Settings()
    run = ingest_events(load_contract(args.dataset or settings.dataset, settings), settings, engine=args.engine)
    summary = {
        "dataset": run.dataset,
        "ingested": {path: run.manifest.files[path].rows_read for path in run.ingested},
        "unchanged": len(run.unchanged),
        "gone": list(run.gone),
        "bronze": run.manifest.totals(),
        "latest_event_day": str(run.manifest.latest_event_day),
    }
    print(json.dumps(summary, indent=2))  # noqa: T201


if __name__ == "__main__":
    main()
