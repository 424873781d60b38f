"""The entity table's checks: read whole (one row per customer), every column the contract names judged."""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd

from churnops.dataset import DatasetContract, EntitySource, LabelDefinition
from churnops.jobs.source_check.findings import (
    EXAMPLES,
    Finding,
    SourceSummary,
    dates,
    examples,
    missing_column,
    numbers,
    read_or_finding,
    text_cells,
)


def _entity_columns(source: EntitySource, label: LabelDefinition, with_label: bool) -> dict[str, str]:
    """Every column the contract names in the entity table (the label column only `with_label`), with the contract
    line that names it."""
    named = {source.key: "entities.key"}
    if source.signup:
        named[source.signup] = "entities.signup"
    named |= dict.fromkeys(source.categorical, "entities.categorical")
    named |= dict.fromkeys(source.numeric, "entities.numeric")
    if with_label and label.kind == "column" and label.column:
        named[label.column] = "label.column"
    return named


def check_entity_table(
    contract: DatasetContract, with_label: bool = True
) -> tuple[SourceSummary | None, list[Finding]]:
    """Read the whole entity table and judge every column the contract names; without `with_label` the label column
    is neither required nor judged (a file of new customers to score has no label yet)."""
    assert contract.entities is not None
    source, where = contract.entities, "entities"
    path = contract.resolve(source.path)
    table = read_or_finding(path, source.format, where, "entities.path")
    if isinstance(table, Finding):
        return None, [table]
    present = [str(c) for c in table.columns]
    named = _entity_columns(source, contract.label, with_label)
    findings = [missing_column(where, c, line, present) for c, line in named.items() if c not in table.columns]
    extra = [c for c in present if c not in named]
    if extra:
        findings.append(
            Finding(
                "note",
                where,
                None,
                f"{len(extra)} column(s) not in the contract, so not used: {', '.join(extra)}",
                "list a column under `entities.categorical` or `entities.numeric` to use it as a model input",
            )
        )
    if source.key in table.columns:
        findings += _key_findings(table[source.key], source.key)
    for column in source.numeric:
        if column in table.columns:
            findings += _numeric_findings(table[column], column)
    for column in source.categorical:
        if column in table.columns:
            findings += _blank_findings(table[column], column)
    if source.signup and source.signup in table.columns:
        findings += _signup_findings(table[source.signup], source.signup)
    label = contract.label
    if with_label and label.kind == "column" and label.column in table.columns:
        findings += label_findings(table[label.column], label)
    return SourceSummary(where, path, len(table), len(present)), findings


def _key_findings(values: pd.Series, column: str) -> list[Finding]:
    text, blank = text_cells(values)
    findings = []
    if blank.any():
        findings.append(
            Finding(
                "error",
                "entities",
                column,
                f"{int(blank.sum()):,} row(s) have no key (blank `entities.key`)",
                "fill in or remove those rows: a row without a customer id cannot be joined, trained on or scored",
            )
        )
    repeated = text[~blank & text.duplicated(keep=False).to_numpy(dtype=bool)]
    if len(repeated):
        findings.append(
            Finding(
                "error",
                "entities",
                column,
                f"{repeated.nunique():,} key(s) appear on more than one row ({len(repeated):,} rows), e.g. "
                f"{examples(repeated)}",
                "the entity table holds one row per customer: remove the duplicate rows, or set `entities.key` to "
                "the column that is unique per customer",
            )
        )
    return findings


def _parse_findings(
    values: pd.Series, column: str, parse: Callable[[pd.Series], tuple[pd.Series, pd.Series]], kind: str, fix: str
) -> tuple[list[Finding], int]:
    """Cells of `column` that `parse` (-> blank mask, unparseable mask) cannot read as a `kind`; and the blank count."""
    blank, bad = parse(values)
    findings = []
    if bad.any():
        findings.append(
            Finding(
                "error",
                "entities",
                column,
                f"{int(bad.sum()):,} of {len(values):,} values do not parse as a {kind}, e.g. {examples(values[bad])}",
                fix,
            )
        )
    return findings, int(blank.sum())


def _numeric_findings(values: pd.Series, column: str) -> list[Finding]:
    fix = (
        f"clean those cells (a blank cell is read as a missing value), or move {column!r} from "
        "`entities.numeric` to `entities.categorical` if it is a category"
    )
    findings, blank = _parse_findings(values, column, numbers, "number", fix)
    if blank:
        findings.append(Finding("note", "entities", column, f"{blank:,} blank cell(s) read as missing values"))
    return findings


def _blank_findings(values: pd.Series, column: str) -> list[Finding]:
    """A categorical column's blank cells: missing values, not a category (`feature_frames.read_entity_table`)."""
    _, blank = text_cells(values)
    n = int(blank.sum())
    return [Finding("note", "entities", column, f"{n:,} blank cell(s) read as missing values")] if n else []


def _signup_findings(values: pd.Series, column: str) -> list[Finding]:
    fix = "write the dates as YYYY-MM-DD (a blank cell is a missing value), or remove `entities.signup`"
    findings, blank = _parse_findings(values, column, dates, "date", fix)
    if blank:
        findings.append(Finding("note", "entities", column, f"{blank:,} blank signup date(s)"))
    return findings


def _rows(n: int) -> str:
    return "1 row" if n == 1 else f"{n:,} rows"


def label_findings(values: pd.Series, label: LabelDefinition) -> list[Finding]:
    """A label column against the declared classes: values outside them, a single class, blank (unlabelled) rows."""
    column = label.column
    if pd.api.types.is_bool_dtype(values):
        values = values.astype("Int64")  # a typed (Parquet) boolean label is 0/1, as Spark casts it
    text, blank = text_cells(values)
    counts = text[~blank].value_counts()
    classes: dict[str, int | None] = {}
    outside: dict[str, int] = {}
    for value, n in counts.items():
        try:
            classes[str(value)] = label.class_of(str(value))
        except ValueError:
            outside[str(value)] = int(n)
    seen = ", ".join(f"{v!r} ({_rows(n)})" for v, n in list(counts.items())[:6])
    findings = []
    if outside:
        listed = ", ".join(f"{v!r} ({_rows(n)})" for v, n in list(outside.items())[:EXAMPLES])
        if label.positive is None:
            rarest = str(counts.index[-1])
            problem = f"{sum(outside.values()):,} label value(s) are not 0 or 1: {listed}"
            fix = (
                f'declare the value that means 1 under `label`, e.g. positive: "{rarest}" (every other value then '
                "counts as 0; add `negative:` to refuse anything else)"
            )
        else:
            problem = (
                f"{sum(outside.values()):,} label value(s) are neither the positive {label.positive!r} nor the "
                f"negative {label.negative!r}: {listed}"
            )
            fix = (
                "correct those cells or leave them blank (no label), or remove `label.negative` so that every value "
                f"other than {label.positive!r} counts as 0"
            )
        findings.append(Finding("error", "entities", column, problem, fix))
    elif len(set(classes.values())) < 2 and len(counts):
        only = next(iter(set(classes.values())))
        findings.append(
            Finding(
                "error",
                "entities",
                column,
                f"every labelled row is class {only} (values: {seen}): a model needs both classes",
                'write `label.positive` exactly as the file spells the positive value (e.g. positive: "Yes"; the '
                "comparison is case-sensitive), and check that `label.column` names the label",
            )
        )
    else:
        positives = sum(int(n) for v, n in counts.items() if classes.get(str(v)) == 1)
        findings.append(
            Finding("note", "entities", column, f"{positives:,} positive of {int((~blank).sum()):,} labels; {seen}")
        )
    if blank.any():
        findings.append(
            Finding("note", "entities", column, f"{int(blank.sum()):,} blank label(s): those rows are only scored")
        )
    return findings
