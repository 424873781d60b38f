"""Ingestion on Spark's executors: every new source file of a run read, judged and written in one Spark pass, for
sources too large to read into pandas on the driver.

The same contract as the pandas path (`churnops.jobs.ingest`, which keeps the lock, the change detection and the
manifest commit and calls `ingest_files_in_spark` for the files to read): the same rules with the same reasons
(`jobs/event_rules_spark.py`), the same bronze layout (one Parquet part per source file and event day, one
quarantine file per source file, named as the pandas path names them) and the same reconciled counts. What reaches
the driver is small: each file's footer or header (checked before Spark starts: unreadable, empty and
column-less files are refused one by one, as in pandas), one row per source file and read block (to number rows),
the distinct event days of the valid rows, and one row of counts per file.

Source order. A quarantined row names its 1-based row in its file, and of identical rows the first is kept. Spark
reads a file in blocks; within a block a partition's rows keep their order and `monotonically_increasing_id` counts
up by one, so a row's number is its block's offset in the file plus its place in the block.

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
import shutil
from pathlib import Path
from urllib.parse import unquote, urlparse

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession, Window
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
from churnops.jobs.event_rules_spark import broken_columns, reasons_column, rule_flag, typed_columns
from churnops.jobs.feature_frames import BRONZE_EVENTS_DDL
from churnops.jobs.ingest import FileFailure, file_record
from churnops.jobs.ingest_spark_io import check_file, join_identity, move_part, written_files
from churnops.jobs.landing import SourceFile
from churnops.jobs.landing_postgres import jdbc_options, table_source_file
from churnops.jobs.spark import spark_session

# Internal columns (a source column would need these exact names to collide).
_FILE, _PATH, _BLOCK, _ROW_ID, _ROW = "__file", "__path", "__block", "__row_id", "__row"
_INVALID, _CANDIDATE, _REJECTED, _DAY = "__invalid", "__candidate", "__rejected", "__day"


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
        self.index = {self._key(file): i for i, file in enumerate(batch)}
        self.staging = root / f"_spark-{ingestion_id}"  # "_": unlisted, so a crashed run's leftovers are removed

    def run(self, working: dict[str, SourceFileRecord], now: dt.datetime) -> dict[str, SourceFileRecord]:
        future_after = self.future_after
        raw = self._read_raw().persist(StorageLevel.MEMORY_AND_DISK)
        try:
            rows_read, numbered = self._number_rows(raw)
            judged = self._judge(numbered, working).persist(StorageLevel.MEMORY_AND_DISK)
            try:
                days = self._write_accepted(judged)
                quarantines = self._write_quarantine(judged)
                counts = self._count_reasons(judged)
            finally:
                judged.unpersist()
        finally:
            raw.unpersist()
            shutil.rmtree(self.staging, ignore_errors=True)
        records = {}
        for i, file in enumerate(self.batch):
            if self._changed(file):
                raise IngestionError(
                    f"cannot ingest {file.path}: it changed while it was read; nothing was committed and the next run "
                    "reads it again"
                )
            rejected, reasons = counts.get(i, (0, {}))
            record = file_record(
                file,
                self.ingestion_id,
                now,
                future_after,
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

    def _key(self, file: SourceFile) -> str:
        """How Spark names where a row came from (`_metadata.file_path`, decoded; a table: its manifest name)."""
        return file.relative if self.source.format == "postgres" else str(file.path.resolve())

    def _changed(self, file: SourceFile) -> bool:
        if self.source.format == "postgres":
            return table_source_file(self.settings, self.source).sha256 != file.sha256
        stat = file.path.stat()
        return (stat.st_size, stat.st_mtime_ns) != (file.size, file.mtime_ns)

    # -- reading and numbering --------------------------------------------------------------------------------

    def _read_raw(self) -> DataFrame:
        """Every file's rows, read in groups of files with one schema (a CSV's columns are positional; Parquet files
        may type a column differently), typed and judged by every rule but `exact_duplicate` within the group, raw
        values as text; tagged with the file's path and read block and a per-partition row counter."""
        if self.source.format == "postgres":
            return self._read_table()
        groups: dict[tuple[tuple[str, ...], str], list[str]] = {}
        for file in self.batch:
            columns, types = self.columns_of[file.relative]
            groups.setdefault((tuple(columns), types), []).append(str(file.path))
        frames = [self._read_group(list(columns), paths) for (columns, _), paths in groups.items()]
        raw = frames[0]
        for frame in frames[1:]:
            raw = raw.unionByName(frame, allowMissingColumns=True)
        return raw

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
        where = [F.col("_metadata.file_path").alias(_PATH), F.col("_metadata.file_block_start").alias(_BLOCK)]
        return self._typed_and_broken(frame, columns, where)

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
        where = [F.lit(file.relative).alias(_PATH), F.spark_partition_id().cast("long").alias(_BLOCK)]
        return self._typed_and_broken(frame, columns, where)

    def _typed_and_broken(self, frame: DataFrame, columns: list[str], where: list) -> DataFrame:
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
        )

    def _number_rows(self, raw: DataFrame) -> tuple[dict[int, int], DataFrame]:
        """Rows read per file, and the frame with each row's file index and 1-based row number in its file."""
        blocks = raw.groupBy(_PATH, _BLOCK).agg(F.min(_ROW_ID).alias("first"), F.count("*").alias("rows")).collect()
        offsets, rows_read = [], {}
        by_file: dict[int, list] = {}
        for block in blocks:
            where = block[_PATH]
            i = self.index.get(
                where if self.source.format == "postgres" else str(Path(unquote(urlparse(where).path)).resolve())
            )
            if i is None:
                raise AssertionError(f"Spark read a file it was not given: {block[_PATH]}")
            by_file.setdefault(i, []).append(block)
        for i, file_blocks in by_file.items():
            offset = 0
            for block in sorted(file_blocks, key=lambda b: b[_BLOCK]):
                offsets.append((block[_PATH], block[_BLOCK], i, offset - block["first"] + 1))
                offset += block["rows"]
            rows_read[i] = offset
        shift = self.spark.createDataFrame(offsets, f"{_PATH} string, {_BLOCK} long, {_FILE} int, __shift long")
        numbered = raw.join(F.broadcast(shift), [_PATH, _BLOCK]).withColumn(_ROW, F.col(_ROW_ID) + F.col("__shift"))
        return rows_read, numbered.drop(_PATH, _BLOCK, _ROW_ID, "__shift")

    # -- the rules -------------------------------------------------------------------------------------------

    def _judge(self, numbered: DataFrame, working: dict[str, SourceFileRecord]) -> DataFrame:
        source = self.source
        raw_columns = [c for c in numbered.columns if not c.startswith("__")]
        flags = [rule_flag(rule) for rule in RULES if rule != "exact_duplicate"]
        judged = numbered.withColumn(_INVALID, F.greatest(*[F.col(flag) for flag in flags]))
        duplicate = F.lit(False)
        if source.exact_duplicates == "quarantine":
            # Among otherwise valid rows only: a broken row is already set aside, and must not hide a good twin.
            same_row = Window.partitionBy(_FILE, _INVALID, *[F.col(f"`{c}`") for c in raw_columns]).orderBy(_ROW)
            judged = judged.withColumn(_CANDIDATE, ~F.col(_INVALID) & (F.row_number().over(same_row) == 1))
            judged = self._mark_seen_elsewhere(judged, working)
            duplicate = ~F.col(_INVALID) & ~F.col(_CANDIDATE)
        judged = judged.withColumn(rule_flag("exact_duplicate"), duplicate)
        judged = judged.withColumn(REASON, reasons_column(source))
        return judged.withColumn(_REJECTED, F.col(REASON) != "")

    def _mark_seen_elsewhere(self, judged: DataFrame, working: dict[str, SourceFileRecord]) -> DataFrame:
        """Clear `_CANDIDATE` on rows whose event another file keeps (the cross-file rule of the module docstring)."""
        candidates = judged.filter(F.col(_CANDIDATE)).select(*_IDENTITY, _FILE, _T(EVENT_DAY))
        days = sorted(row[0].isoformat() for row in candidates.select(_T(EVENT_DAY)).distinct().collect())
        in_run = {file.relative: i for i, file in enumerate(self.batch)}
        outside: list[str] = []
        previous: dict[int, list[str]] = {}
        for relative, record in sorted(working.items()):
            parts = [str(self.root / record.days[day]["part"]) for day in days if day in record.days]
            if relative in in_run and parts:
                previous[in_run[relative]] = parts
            else:
                outside += parts
        holders = candidates.select(*_IDENTITY, _FILE).distinct()
        if previous:
            # A later file's previous delivery holds the event: no file before it may keep it. (One read per
            # re-delivered file of the run: there are few.)
            owned = [self._read_bronze(parts).withColumn("__owner", F.lit(i)) for i, parts in previous.items()]
            old = owned[0]
            for frame in owned[1:]:
                old = old.unionByName(frame)
            old = old.groupBy(*_IDENTITY).agg(F.max("__owner").alias("__last"))
            holders = join_identity(holders, old, _IDENTITY).filter(
                F.col("__last").isNull() | (F.col(_FILE) >= F.col("__last"))
            )
        keeper = holders.groupBy(*_IDENTITY).agg(F.min(_FILE).alias("__keeper"))
        if outside:
            known = self._read_bronze(outside).select(*_IDENTITY).distinct().withColumn("__known", F.lit(True))
            keeper = join_identity(keeper, known, _IDENTITY)
        else:
            keeper = keeper.withColumn("__known", F.lit(None).cast("boolean"))
        judged = join_identity(judged, keeper, _IDENTITY)
        kept = F.col(_CANDIDATE) & F.col("__known").isNull() & (F.col(_FILE) == F.col("__keeper"))
        return judged.withColumn(_CANDIDATE, F.coalesce(kept, F.lit(False))).drop("__keeper", "__known")

    def _read_bronze(self, parts: list[str]) -> DataFrame:
        frame = self.spark.read.schema(BRONZE_EVENTS_DDL).parquet(*parts)
        return frame.select(*[F.col(c).alias(_T(c)) for c in EVENT_IDENTITY])

    # -- writing and counting --------------------------------------------------------------------------------

    def _write_accepted(self, judged: DataFrame) -> dict[int, dict[str, dict[str, object]]]:
        """One part per file and event day, moved to the pandas path's name; returns each file's `days`."""
        accepted = judged.filter(~F.col(_REJECTED)).withColumn(_DAY, F.date_format(_T(EVENT_DAY), "yyyy-MM-dd"))
        columns = [F.col(_T(c)).alias(c) for c in BRONZE_EVENTS_DDL_COLUMNS]
        out = self.staging / EVENTS_DIR
        (
            accepted.repartition(_FILE, _DAY)
            .sortWithinPartitions(_FILE, _DAY, _ROW)  # each day's rows in source order, as the pandas path writes
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

    def _write_quarantine(self, judged: DataFrame) -> dict[int, str]:
        """One quarantine file per source file with rejected rows: the reasons, the row, the raw values as text."""
        raw_columns = [c for c in judged.columns if not c.startswith("__") and c != REASON]
        rejected = judged.filter(F.col(_REJECTED)).select(
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

    def _count_reasons(self, judged: DataFrame) -> dict[int, tuple[int, dict[str, int]]]:
        sums = [F.sum(F.col(rule_flag(rule)).cast("long")).alias(rule) for rule in RULES]
        rows = judged.groupBy(_FILE).agg(F.sum(F.col(_REJECTED).cast("long")).alias("__rejected"), *sums).collect()
        return {row[_FILE]: (int(row["__rejected"]), {r: int(row[r]) for r in RULES if row[r]}) for row in rows}


BRONZE_EVENTS_DDL_COLUMNS = [field.split()[0] for field in BRONZE_EVENTS_DDL.split(", ")]
