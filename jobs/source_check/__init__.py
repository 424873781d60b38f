"""The source check: a contract's files read with pandas and pyarrow and judged against the contract in seconds,
before any Spark work, so that a user's own file fails with the column's name and the contract line to change.

The entity table is read whole (it is one row per customer): missing and extra columns, numbers and dates that do
not parse, label values outside the declared classes, blank and duplicate keys, an empty file. Event logs are judged
on their structure only - missing columns, an empty file, a timestamp or amount column of which not one of the first
`SAMPLE_ROWS` values parses (the contract names the wrong column) - because their rows go through ingestion's
quarantine rules (`churnops.jobs.event_rules`) anyway, one bad row at a time.

pandera (which the issue suggests) is not in the lock, and these checks are a handful of vectorised pandas
expressions whose whole value is in the wording: each message names the column and the contract line to change,
which a general schema library's errors would not.
"""

from __future__ import annotations

from churnops.config import Settings
from churnops.dataset import DatasetContract
from churnops.jobs.landing import SourceFile, list_source_files
from churnops.jobs.source_check.entities import check_entity_table
from churnops.jobs.source_check.events import check_event_file, no_event_files
from churnops.jobs.source_check.findings import Finding, SourceCheckError, SourceReport, SourceSummary

__all__ = [
    "Finding",
    "SourceCheckError",
    "SourceReport",
    "check_sources",
    "event_files_not_yet_ingested",
    "require_clean_sources",
]


def check_sources(
    contract: DatasetContract, event_files: list[SourceFile] | None = None, with_label: bool = True
) -> SourceReport:
    """Check the contract's entity table and event files (all of them unless `event_files` is given); without
    `with_label`, an entity table need not have the label column (new customers to score)."""
    sources: list[SourceSummary] = []
    findings: list[Finding] = []
    if contract.entities is not None:
        summary, found = check_entity_table(contract, with_label)
        sources += [summary] if summary else []
        findings += found
    # A table source's columns are checked by its ingestion, from the table's own schema (jobs/ingest_spark.py).
    if contract.events is not None and contract.events.format != "postgres":
        files = list_source_files(contract) if event_files is None else event_files
        if event_files is None and not files:
            findings.append(no_event_files(contract))
        for file in files:
            summary, found = check_event_file(contract, file)
            sources += [summary] if summary else []
            findings += found
    return SourceReport(contract.name, tuple(sources), tuple(findings))


def require_clean_sources(
    contract: DatasetContract, event_files: list[SourceFile] | None = None, with_label: bool = True
) -> SourceReport:
    """`check_sources`, raising SourceCheckError (every problem in one message) when it finds an error."""
    report = check_sources(contract, event_files, with_label)
    if report.errors:
        raise SourceCheckError(report)
    return report


def event_files_not_yet_ingested(contract: DatasetContract, settings: Settings) -> list[SourceFile]:
    """The event files whose size or modification time no committed ingestion recorded: the only ones ingestion
    will read (the others passed the check, or ingestion, when they came)."""
    from churnops.bronze import read_manifest

    if contract.events is not None and contract.events.format == "postgres":
        return []  # a table, not files: its ingestion checks it
    manifest = read_manifest(settings, contract.name)
    recorded = {} if manifest is None else manifest.files
    return [
        file
        for file in list_source_files(contract)
        if (record := recorded.get(file.relative)) is None
        or (record.size, record.mtime_ns) != (file.size, file.mtime_ns)
    ]
