"""Ingestion on Spark's executors: every new source file of a run read, judged and written in one Spark pass, for
sources too large to read into pandas on the driver.

The same contract as the pandas path (`churnops.jobs.ingest`, which keeps the lock, the change detection and the
manifest commit and calls `ingest_files_in_spark` for the files to read): the same rules with the same reasons
(`jobs/event_rules_spark.py`), the same bronze layout (one Parquet part per source file and event day, one
quarantine file per source file, named as the pandas path names them) and the same reconciled counts. What reaches
the driver is small: each file's footer or header (checked before Spark starts: unreadable, empty and column-less
files are refused one by one, as in pandas), one row of counts per file and read block, and, when bronze already
holds events, the distinct event days of the new valid rows.

One pass. The sources are read once: every rule but `exact_duplicate` is a column computed while reading, then the
rows are shuffled once, by event day (a valid row's day; a broken row goes anywhere). Every copy of an event shares
its day, so the duplicates within and across files are found inside each partition by window functions over the
event (no join), and every day's rows sit in one partition, so bronze is written from there with one part per file
and day. That judged frame is kept on local disk; one aggregation over it gives every count (rows read, quarantined
by rule) and the row numbering, then the accepted and the quarantined rows are written from it.

Source order. A quarantined row names its 1-based row in its file, and of identical rows the first is kept. Spark
reads a file in blocks; within a block a partition's rows keep their order and `monotonically_increasing_id` counts
up by one, so a row's number is its block's offset in the file plus its place in the block, and (block start, id)
orders a file's rows before the numbers are known.

Duplicates across files. The pandas path ingests new files one after the other in path order, each compared with
the events every other file has in bronze at that moment: files outside this run, this run's earlier files (as
just accepted) and the previous deliveries of its later files. Here all files are judged at once with the same
outcome: an event that files outside the run already hold is a duplicate in every file; otherwise, of the new
files holding it as a valid row, the first in path order that no later file's previous delivery holds keeps it.

A Spark failure part-way fails the whole run with nothing committed (its files are unlisted and the next run
removes them); a file that changed while it was read does too.
"""

from __future__ import annotations

import datetime as dt
import functools
import math
import shutil
from pathlib import Path

from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql.types import StringType, StructField, StructType

from churnops.bronze import (
    AMOUNT,
    EVENT_DAY,
    EVENT_TIME,
    EVENTS_DIR,
    QUARANTINE_DIR,
    REASON,
    SOURCE_ROW,
    SourceFileRecord,
)
from churnops.config import Settings
from churnops.dataset import EventSource
from churnops.jobs.bronze_writer import part_stem
from churnops.jobs.event_rules import EVENT_IDENTITY, RULES, IngestionError, missing_columns_error, required_columns
from churnops.jobs.event_rules_spark import broken_columns, day_number, reasons_column, rule_flag, typed_columns
from churnops.jobs.feature_frames import BRONZE_EVENTS_DDL
from churnops.jobs.ingest import FileFailure, file_record
from churnops.jobs.ingest_spark_io import (
    changed_since_listed,
    check_file,
    file_index_column,
    move_part,
    quarantine_counts,
    row_offsets,
    spark_file_keys,
    written_files,
)
from churnops.jobs.landing import SourceFile
from churnops.jobs.landing_postgres import jdbc_options
from churnops.jobs.spark import spark_session

# Internal columns (a source column would need these exact names to collide).
_FILE, _BLOCK, _ROW_ID, _ROW, _SLOT = "__file", "__block", "__row_id", "__row", "__slot"
_INVALID, _CANDIDATE, _REJECTED, _DAY, _BROKEN = "__invalid", "__candidate", "__rejected", "__day", "__broken"
_OUTSIDE, _PREVIOUS = "__outside", "__prev"  # marker rows: events bronze holds (`_bronze_markers`)
# Source bytes per shuffle partition (sorted in one task; Parquet inflates several times once decoded).
_SOURCE_BYTES_PER_PARTITION = 4 * 2**20


def _T(name: str) -> str:  # noqa: N802 - reads as a column name
    """The internal name of a typed (bronze) column."""
    return f"__t_{name}"


_IDENTITY = [_T(c) for c in EVENT_IDENTITY]


def ingest_files_in_spark(
    settings: Settings,
    files: list[SourceFile],
    source: EventSource,
    root: Path,
    working: dict[str, SourceFileRecord],
    ingestion_id: str,
    now: dt.datetime,
    future_after: dt.datetime,
) -> tuple[dict[str, SourceFileRecord], list[FileFailure]]:
    """Validate and write `files` (in path order) on Spark; return the records of the files written (not yet
    committed) and the files refused before reading. The session is the active one or one started for this call."""
    columns_of: dict[str, tuple[list[str], str]] = {}
    failed: list[FileFailure] = []
    for file in files:
        if source.format == "postgres":  # the table's columns come with its read
            columns_of[file.relative] = ([], "")
            continue
        try:
            columns_of[file.relative] = check_file(file.path, source)
        except IngestionError as error:
            failed.append(FileFailure(file.relative, str(error)))
    batch = [file for file in files if file.relative in columns_of]
    if not batch:
        return {}, failed
    active = SparkSession.getActiveSession()
    spark = active or spark_session(settings, "churnops-ingest")
    try:
        batch_run = _SparkBatch(spark, settings, batch, columns_of, source, root, ingestion_id, future_after)
        records = batch_run.run(working, now)
    finally:
        if active is None:
            spark.stop()
    return records, failed


class _SparkBatch:
    """One run's files judged together (see the module docstring)."""

    def __init__(
        self,
        spark: SparkSession,
        settings: Settings,
        batch: list[SourceFile],
        columns_of: dict[str, tuple[list[str], str]],
        source: EventSource,
        root: Path,
        ingestion_id: str,
        future_after: dt.datetime,
    ) -> None:
        self.spark, self.batch, self.columns_of, self.source, self.root = spark, batch, columns_of, source, root
        self.ingestion_id, self.future_after, self.settings = ingestion_id, future_after, settings
        self.index = {str(file.path.resolve()): i for i, file in enumerate(batch)}
        self.staging = root / f"_spark-{ingestion_id}"  # "_": unlisted, so a crashed run's leftovers are removed
        source_bytes = sum(file.size for file in batch)
        self.partitions = max(settings.spark.shuffle_partitions, math.ceil(source_bytes / _SOURCE_BYTES_PER_PARTITION))

    def run(self, working: dict[str, SourceFileRecord], now: dt.datetime) -> dict[str, SourceFileRecord]:
        # Kept as rows on local disk, filled by the first action: a cache would build (and compress) columns.
        judged = self._judge(self._read_raw(), working)
        judged = judged.localCheckpoint(eager=False, storageLevel=StorageLevel.DISK_ONLY)
        try:
            rows_read, counts, numbered = self._count_and_number(judged)
            days = self._write_accepted(numbered)
            quarantines = self._write_quarantine(numbered) if any(c[0] for c in counts.values()) else {}
        finally:
            shutil.rmtree(self.staging, ignore_errors=True)
        records = {}
        for i, file in enumerate(self.batch):
            if changed_since_listed(file, self.settings, self.source):
                raise IngestionError(
                    f"cannot ingest {file.path}: it changed while it was read; nothing was committed and the next run "
                    "reads it again"
                )
            rejected, reasons = counts.get(i, (0, {}))
            record = file_record(
                file,
                self.ingestion_id,
                now,
                self.future_after,
                rows_read=rows_read.get(i, 0),
                rows_quarantined=rejected,
                quarantined_by_reason=reasons,
                days=days.get(i, {}),
                quarantine=quarantines.get(i),
            )
            if not record.reconciles:  # a bug, never a data problem: refuse to commit
                raise AssertionError(f"ingestion of {file.path} on Spark does not reconcile: {record}")
            records[file.relative] = record
        return records

    # -- reading ---------------------------------------------------------------------------------------------

    def _read_raw(self) -> DataFrame:
        """Every file's rows, read in groups of files with one schema (a CSV's columns are positional; Parquet files
        may type a column differently), typed and judged by every rule but `exact_duplicate`, raw values as text;
        tagged with the file's index in the batch, its read block and a per-partition row counter."""
        if self.source.format == "postgres":
            return self._read_table()
        groups: dict[tuple[tuple[str, ...], str], list[str]] = {}
        for file in self.batch:
            columns, types = self.columns_of[file.relative]
            groups.setdefault((tuple(columns), types), []).append(str(file.path))
        frames = [self._read_group(list(columns), paths) for (columns, _), paths in groups.items()]
        return functools.reduce(lambda one, other: one.unionByName(other, allowMissingColumns=True), frames)

    def _read_group(self, columns: list[str], paths: list[str]) -> DataFrame:
        if self.source.format == "csv":
            schema = StructType([StructField(c, StringType()) for c in columns])
            # As pandas reads them: quotes doubled inside quoted values, values may span lines, leading blanks
            # dropped, an empty cell is missing.
            reader = self.spark.read.schema(schema).options(
                header=True, multiLine=True, escape='"', ignoreLeadingWhiteSpace=True, mode="PERMISSIVE"
            )
            frame = reader.csv(paths)
        else:
            frame = self.spark.read.parquet(*paths)
        index = spark_file_keys(frame.inputFiles(), self.index)
        where = [file_index_column(F.col("_metadata.file_path"), index).alias(_FILE)]
        return self._typed_and_broken(frame, columns, [*where, F.col("_metadata.file_block_start").alias(_BLOCK)])

    def _read_table(self) -> DataFrame:
        """The source table through JDBC, in slices; its rows numbered in the order of the partition column (or
        the table's first column), a block being one sorted partition."""
        (file,) = self.batch
        frame = self.spark.read.format("jdbc").options(**jdbc_options(self.settings, self.source)).load()
        columns = list(frame.columns)
        missing = [c for c in required_columns(self.source) if c not in columns]
        if missing:  # the schema came with the JDBC reader: no row has been read yet
            raise IngestionError(
                f"cannot ingest the table {self.source.path}: {missing_columns_error(missing, columns)}"
            )
        self.columns_of[file.relative] = (columns, "")
        order = self.source.postgres.partition_column or columns[0]
        frame = frame.orderBy(F.col(f"`{order}`").asc_nulls_first(), *[F.col(f"`{c}`") for c in columns])
        where = [F.lit(0).alias(_FILE), F.spark_partition_id().cast("long").alias(_BLOCK)]
        return self._typed_and_broken(frame, columns, where)

    def _typed_and_broken(self, frame: DataFrame, columns: list[str], where: list[Column]) -> DataFrame:
        dtypes = dict(frame.dtypes)
        # Under internal names: a source may call its columns what bronze calls them (`customer_id`, `amount`).
        typed = frame.select(
            *[F.col(f"`{c}`") for c in columns],
            *[col.alias(_T(name)) for name, col in typed_columns(dtypes, self.source).items()],
            *where,
            F.monotonically_increasing_id().alias(_ROW_ID),
        )
        broken = broken_columns(dtypes, self.source, self.future_after, F.col(_T(EVENT_TIME)), F.col(_T(AMOUNT)))
        return typed.select(
            *[F.col(f"`{c}`").cast("string").alias(c) for c in columns],
            *[c for c in typed.columns if c.startswith("__")],
            *[col.alias(rule_flag(rule)) for rule, col in broken.items()],
            F.greatest(*broken.values()).alias(_INVALID),
        )

    # -- the rules -------------------------------------------------------------------------------------------

    def _judge(self, raw: DataFrame, working: dict[str, SourceFileRecord]) -> DataFrame:
        """All rows, judged by every rule, in partitions that each hold whole event days (valid rows)."""
        valid = ~F.col(_INVALID)
        # A broken row has no event to compare and is never written to bronze: spread those evenly.
        spread = -1 - F.pmod(F.xxhash64(_FILE, _BLOCK, _ROW_ID), F.lit(self.partitions))
        slot = F.when(valid, day_number(F.col(_T(EVENT_DAY))))
        frame = raw.withColumn(_SLOT, slot.otherwise(spread))
        duplicate: Column = F.lit(False)
        if self.source.exact_duplicates == "quarantine":
            frame = frame.withColumns({_OUTSIDE: F.lit(None).cast("boolean"), _PREVIOUS: F.lit(None).cast("int")})
            markers = self._bronze_markers(raw, working)
            if markers is not None:
                frame = frame.unionByName(markers, allowMissingColumns=True)
            frame = self._mark_kept(frame.repartition(self.partitions, _SLOT))
            duplicate = valid & ~F.col(_CANDIDATE)
        else:
            frame = frame.repartition(self.partitions, _SLOT)
        judged = frame.withColumn(rule_flag("exact_duplicate"), duplicate)
        judged = judged.withColumn(REASON, reasons_column(self.source))
        judged = judged.withColumn(_REJECTED, F.col(REASON) != "")
        # What is kept on disk, narrowed: the rules broken as one bit mask, raw values only where quarantined.
        broken = sum(F.when(F.col(rule_flag(rule)), 1 << bit).otherwise(0) for bit, rule in enumerate(RULES))
        raw_columns = [c for c in judged.columns if not c.startswith("__") and c != REASON]
        narrowed = {c: F.when(F.col(_REJECTED), F.col(f"`{c}`")) for c in raw_columns} | {_BROKEN: broken}
        return judged.withColumns(narrowed).drop(_SLOT, _CANDIDATE, *[rule_flag(rule) for rule in RULES])

    def _mark_kept(self, frame: DataFrame) -> DataFrame:
        """`_CANDIDATE`: the valid rows that keep their event (other valid rows are duplicates); markers dropped.
        Every window is within a partition of `frame` (by `_SLOT`); the second sorts nothing: its keys lead."""
        raw_columns = [F.col(f"`{c}`") for c in frame.columns if not c.startswith("__") and c != REASON]
        # A broken row's windows hold that row alone (it has no event): no window of broken rows grows large.
        alone = [F.when(F.col(_INVALID), F.col(c)) for c in (_FILE, _BLOCK, _ROW_ID)]
        event = [F.col(_SLOT), *[F.col(c) for c in _IDENTITY], *alone]
        same_row = Window.partitionBy(*event, F.col(_FILE), *raw_columns).orderBy(_BLOCK, _ROW_ID)
        same_event = Window.partitionBy(*event)
        # Among otherwise valid rows only: a broken row is already set aside, and must not hide a good twin.
        first_in_file = F.col(_FILE).isNotNull() & ~F.col(_INVALID) & (F.row_number().over(same_row) == 1)
        frame = frame.withColumn(_CANDIDATE, first_in_file)
        # A later file's previous delivery holds the event: no file before it may keep it.
        last = F.max(_PREVIOUS).over(same_event)
        frame = frame.withColumn("__may_keep", F.col(_CANDIDATE) & (last.isNull() | (F.col(_FILE) >= last)))
        keeper = F.min(F.when(F.col("__may_keep"), F.col(_FILE))).over(same_event)
        known = F.max(F.col(_OUTSIDE)).over(same_event)
        kept = F.col("__may_keep") & known.isNull() & (F.col(_FILE) == keeper)
        frame = frame.withColumn(_CANDIDATE, kept).filter(F.col(_FILE).isNotNull())
        return frame.drop("__may_keep", _OUTSIDE, _PREVIOUS)

    def _bronze_markers(self, raw: DataFrame, working: dict[str, SourceFileRecord]) -> DataFrame | None:
        """The events bronze holds on the days of the new valid rows, as marker rows (no file, no raw values):
        `_OUTSIDE` from files outside this run, `_PREVIOUS` = i from file i's previous delivery."""
        if not any(record.days for record in working.values()):
            return None
        days = {row[0].isoformat() for row in raw.filter(~F.col(_INVALID)).select(_T(EVENT_DAY)).distinct().collect()}
        in_run = {file.relative: i for i, file in enumerate(self.batch)}
        outside: list[str] = []
        previous: dict[int, list[str]] = {}
        for relative, record in sorted(working.items()):
            parts = [str(self.root / record.days[day]["part"]) for day in sorted(days) if day in record.days]
            if relative in in_run and parts:
                previous[in_run[relative]] = parts
            else:
                outside += parts
        # One read for the files outside the run, one per re-delivered file of the run: there are few.
        held = [(parts, F.lit(True), F.lit(None)) for parts in [outside] if parts]
        held += [(parts, F.lit(None), F.lit(i)) for i, parts in previous.items()]
        frames = [
            self._read_bronze(parts).select(
                *_IDENTITY,
                day_number(F.col(_T(EVENT_DAY))).alias(_SLOT),
                F.lit(False).alias(_INVALID),
                by_outside.cast("boolean").alias(_OUTSIDE),
                by_previous.cast("int").alias(_PREVIOUS),
            )
            for parts, by_outside, by_previous in held
        ]
        if not frames:
            return None
        return functools.reduce(DataFrame.unionByName, frames)

    def _read_bronze(self, parts: list[str]) -> DataFrame:
        frame = self.spark.read.schema(BRONZE_EVENTS_DDL).parquet(*parts)
        return frame.select(*[F.col(c).alias(_T(c)) for c in [*EVENT_IDENTITY, EVENT_DAY]])

    # -- counting and writing --------------------------------------------------------------------------------

    def _count_and_number(
        self, judged: DataFrame
    ) -> tuple[dict[int, int], dict[int, tuple[int, dict[str, int]]], DataFrame]:
        """Rows read and quarantined (by rule) per file, from one aggregation by read block (the one pass over the
        sources: it fills `judged`'s disk copy); and `judged` with each row's 1-based number in its file."""
        sums = [F.sum(F.shiftright(_BROKEN, bit).bitwiseAND(1)).alias(rule) for bit, rule in enumerate(RULES)]
        blocks = (
            judged.groupBy(_FILE, _BLOCK)
            .agg(
                F.min(_ROW_ID).alias("first"),
                F.count("*").alias("rows"),
                F.sum(F.col(_REJECTED).cast("long")).alias("rejected"),
                *sums,
            )
            .collect()
        )
        if any(block[_FILE] is None for block in blocks):
            raise AssertionError("Spark read a file it was not given")
        offsets, rows_read = row_offsets([(b[_FILE], b[_BLOCK], b["first"], b["rows"]) for b in blocks])
        counts = quarantine_counts([(b[_FILE], b["rejected"], {r: b[r] for r in RULES}) for b in blocks])
        shift = self.spark.createDataFrame(offsets, f"{_FILE} int, {_BLOCK} long, __shift long")
        numbered = judged.join(F.broadcast(shift), [_FILE, _BLOCK]).withColumn(_ROW, F.col(_ROW_ID) + F.col("__shift"))
        return rows_read, counts, numbered.drop(_BLOCK, _ROW_ID, "__shift")

    def _write_accepted(self, numbered: DataFrame) -> dict[int, dict[str, dict[str, object]]]:
        """One part per file and event day, moved to the pandas path's name; returns each file's `days`. No
        shuffle: a day's rows are in one partition already (`_judge`)."""
        accepted = numbered.filter(~F.col(_REJECTED)).withColumn(_DAY, F.date_format(_T(EVENT_DAY), "yyyy-MM-dd"))
        columns = [F.col(_T(c)).alias(c) for c in BRONZE_EVENTS_DDL_COLUMNS]
        out = self.staging / EVENTS_DIR
        (
            accepted.sortWithinPartitions(_FILE, _DAY, _ROW)  # each day's rows in source order, as pandas writes
            .select(*columns, _FILE, _DAY)
            .write.partitionBy(_FILE, _DAY)
            .parquet(str(out))
        )
        days: dict[int, dict[str, dict[str, object]]] = {}
        for i, day, written in written_files(out, _FILE, _DAY):
            stem = part_stem(self.batch[i].relative, self.ingestion_id)
            part = f"{EVENTS_DIR}/day={day}/{stem}.parquet"
            days.setdefault(i, {})[day] = {"part": part, "rows": move_part(written, self.root / part)}
        return {i: dict(sorted(file_days.items())) for i, file_days in days.items()}

    def _write_quarantine(self, numbered: DataFrame) -> dict[int, str]:
        """One quarantine file per source file with rejected rows: the reasons, the row, the raw values as text."""
        raw_columns = [c for c in numbered.columns if not c.startswith("__") and c != REASON]
        rejected = numbered.filter(F.col(_REJECTED)).select(
            _FILE,
            REASON,
            F.col(_ROW).alias(SOURCE_ROW),
            *[F.col(f"`{c}`").cast("string").alias(c) for c in raw_columns],
        )
        out = self.staging / QUARANTINE_DIR
        rejected.repartition(_FILE).sortWithinPartitions(_FILE, SOURCE_ROW).write.partitionBy(_FILE).parquet(str(out))
        quarantines = {}
        for i, _, written in written_files(out, _FILE):
            relative = f"{QUARANTINE_DIR}/{part_stem(self.batch[i].relative, self.ingestion_id)}.parquet"
            move_part(
                written, self.root / relative, keep=[REASON, SOURCE_ROW, *self.columns_of[self.batch[i].relative][0]]
            )
            quarantines[i] = relative
        return quarantines


BRONZE_EVENTS_DDL_COLUMNS = [field.split()[0] for field in BRONZE_EVENTS_DDL.split(", ")]
