"""The event files' checks: structure only, on each file's first rows (the rows go through ingestion's rules)."""

from __future__ import annotations

from churnops.dataset import DatasetContract
from churnops.jobs.event_rules import parse_timestamps
from churnops.jobs.landing import SourceFile
from churnops.jobs.source_check.findings import (
    SAMPLE_ROWS,
    Finding,
    SourceSummary,
    examples,
    missing_column,
    numbers,
    read_or_finding,
    text_cells,
)


def no_event_files(contract: DatasetContract) -> Finding:
    assert contract.events is not None
    return Finding(
        "error",
        "events",
        None,
        f"no {contract.events.format} file found at {contract.resolve(contract.events.path)}",
        "set `events.path` to a file, a folder or a glob of the event files (names starting with `.` or `_` are "
        "skipped); for a built-in dataset run `churnops generate`",
    )


def check_event_file(contract: DatasetContract, file: SourceFile) -> tuple[SourceSummary | None, list[Finding]]:
    """Judge one event file's structure on its first SAMPLE_ROWS rows (its rows go through ingestion's rules)."""
    assert contract.events is not None
    source, where = contract.events, f"events {file.relative}"
    head = read_or_finding(file.path, source.format, where, "events.path", nrows=SAMPLE_ROWS)
    if isinstance(head, Finding):
        return None, [head]
    present = [str(c) for c in head.columns]
    named = {
        source.entity_key: "events.entity_key",
        source.timestamp: "events.timestamp",
        source.amount: "events.amount",
    }
    if source.event_type:
        named[source.event_type] = "events.event_type"
    findings = [missing_column(where, c, line, present) for c, line in named.items() if c not in head.columns]
    extra = [c for c in present if c not in named]
    if extra:
        findings.append(Finding("note", where, None, f"column(s) not used: {', '.join(extra)}"))
    if source.timestamp in head.columns:
        values = head[source.timestamp]
        _, blank = text_cells(values)
        parsed = parse_timestamps(values)
        if not parsed.notna().any():
            findings.append(
                Finding(
                    "error",
                    where,
                    source.timestamp,
                    f"not one of the first {len(head):,} values parses as a time, e.g. {examples(values[~blank])}",
                    "`events.timestamp` must name a column of ISO 8601 times (2024-05-01, 2024-05-01T10:00:00, "
                    "with or without a zone): point it at the right column or convert the column",
                )
            )
    if source.amount in head.columns:
        blank, bad = numbers(head[source.amount])
        if not (~blank & ~bad).any():
            findings.append(
                Finding(
                    "error",
                    where,
                    source.amount,
                    f"not one of the first {len(head):,} values is a number, e.g. {examples(head[source.amount])}",
                    "`events.amount` must name a numeric column (spend, duration, a count): point it at the right "
                    "column",
                )
            )
    return SourceSummary(where, file.path, len(head), len(present)), findings
