"""Scoring a new file with a dataset's champion (`churnops score --dataset X --input FILE`).

The file has the shape of the dataset's own source, without a label: an entity table (one row per customer) for an
entity-level contract, an event log for an event contract. Its rows go through the feature job's own Spark
functions (`jobs/feature_frames.py`) and the champion's schema and encoding, so a customer gets exactly the score
the API gives for the same features.

- An event log is split by the ingestion row rules (`jobs/event_rules.py`: rows breaking one are left out and
  counted) and its features are computed at one cutoff, the day after the file's last event day; customers'
  attributes come from the contract's entity table (or `entities_path`), as in the feature job.
- An entity table is dated by the contract's `cutoffs.as_of`, else today (only `days_since_signup` reads the date).

Nothing of the dataset's own state is read or written besides its champion and entity table: no bronze, snapshot,
`latest` pointer, drift reference or scheduled list. The list goes to a CSV or Parquet file and, with a platform
database, to an `adhoc` list of (dataset, cutoff) named by the input's identity (`input_identity`: file name and
content hash): scoring the same file again replaces its own list; another file, even one scored the same day, gets
a list of its own.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from churnops.banding import RiskBands
from churnops.config import Settings
from churnops.dataset import DatasetContract
from churnops.db.list_columns import OPTIONAL_LIST_COLUMNS
from churnops.features import ENTITY_ID
from churnops.jobs.score import score_frame, store_list, with_model_columns
from churnops.jobs.value.pipeline import purchases_of
from churnops.registry import LoadedModel, champion_or_none, configure_mlflow, load_model_version
from churnops.storage import write_csv_atomically, write_parquet_atomically

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)

LIST_KIND = "adhoc"
FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
# The columns of the written list, in order (then the value and survival columns the list has).
OUTPUT_COLUMNS = ("customer_id", "probability", "decision", "risk_band", "model_version", "model_name", "cutoff")


class InputFileError(ValueError):
    """The file to score (or where to write its list) cannot be used; the message names the file and the fix."""


@dataclass(frozen=True)
class InputScoringRun:
    input_path: Path
    output_path: Path
    cutoff: dt.date
    model_version: str
    rows_scored: int
    # Event logs: rows the ingestion rules left out, by rule (an entity table has none).
    rows_left_out: dict[str, int]
    rows_in_database: int | None


def file_format(path: Path, role: str) -> str:
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise InputFileError(f"{role} {path}: unknown format {path.suffix!r}; use a .csv or .parquet file")
    return fmt


def default_output_path(input_path: Path) -> Path:
    """`<stem>.scores.csv` beside the input."""
    return input_path.with_name(f"{input_path.stem}.scores.csv")


def required_columns(contract: DatasetContract, shape: str) -> dict[str, str]:
    """Each column a file of `shape` ("events" or "entities") must have, with the contract field that names it (a
    file to score needs no label)."""
    if shape == "events":
        events = contract.events
        assert events is not None
        named = {events.entity_key: "events.entity_key", events.timestamp: "events.timestamp"}
        named[events.amount] = "events.amount"
        if events.event_type:
            named[events.event_type] = "events.event_type"
        return named
    entities = contract.entities
    assert entities is not None
    named = {entities.key: "entities.key"}
    if entities.signup:
        named[entities.signup] = "entities.signup"
    named |= dict.fromkeys(entities.categorical, "entities.categorical")
    named |= dict.fromkeys(entities.numeric, "entities.numeric")
    return named


def _header(path: Path, fmt: str, role: str) -> list[str]:
    if not path.is_file():
        raise InputFileError(f"{role} {path} does not exist")
    try:
        if fmt == "csv":
            return [str(c) for c in pd.read_csv(path, nrows=0).columns]
        import pyarrow.parquet as pq

        return list(pq.read_schema(path).names)
    except pd.errors.EmptyDataError:
        raise InputFileError(f"{role} {path} is empty: it needs a header row and one row per customer") from None
    except Exception as error:  # noqa: BLE001 - any reader failure means the same: not a readable file
        raise InputFileError(f"{role} {path} is not a readable {fmt} file ({type(error).__name__}: {error})") from None


def check_columns(contract: DatasetContract, path: Path, shape: str, role: str = "input") -> str:
    """The file's format, after checking from its header alone (before any Spark work) that it has every column
    the contract names for a file of `shape` ("events" or "entities")."""
    fmt = file_format(path, role)
    header = _header(path, fmt, role)
    missing = {column: field for column, field in required_columns(contract, shape).items() if column not in header}
    if missing:
        kind = "event log" if shape == "events" else "entity table"
        listed = ", ".join(f"{column!r} (contract field `{field}`)" for column, field in missing.items())
        raise InputFileError(
            f"{role} {path} lacks column(s) {listed} that dataset {contract.name!r} scores from; the file has "
            f"{header}. Give a file in the shape of the dataset's {kind} (no label column needed), or fix the "
            "contract if the column is named differently"
        )
    return fmt


def check_input(contract: DatasetContract, input_path: Path) -> str:
    """The input's format, after checking its columns: an event log for event data, else an entity table."""
    return check_columns(contract, input_path, "events" if contract.events is not None else "entities")


def load_champion(settings: Settings, contract: DatasetContract) -> LoadedModel:
    configure_mlflow(settings)
    champion = champion_or_none(contract.model_name)
    if champion is None:
        raise InputFileError(
            f"dataset {contract.name!r} has no champion model ({contract.model_name}@champion) to score with: run "
            f"`churnops train --dataset {contract.name}` first"
        )
    return load_model_version(contract.model_name, str(champion.version))


def input_features(
    settings: Settings,
    contract: DatasetContract,
    input_path: Path,
    fmt: str,
    entities_path: Path | None = None,
) -> tuple[pd.DataFrame, dt.date, dict[str, int], pd.DataFrame | None]:
    """The file's feature rows (one per customer), their cutoff, the rows the ingestion rules left out, and (an
    event log) the accepted events in the bronze layout."""
    from churnops.jobs.spark import spark_session

    spark = spark_session(settings, f"churnops-score-input-{contract.name}")
    try:
        if contract.events is None:
            from churnops.jobs.feature_frames import build_entity_features, read_entity_table

            cutoff = contract.plan().scoring
            table = read_entity_table(spark, contract, input_path, fmt, labelled=False)
            return build_entity_features(table, contract, cutoff).toPandas(), cutoff, {}, None
        return _event_log_features(spark, contract, input_path, fmt, entities_path)
    finally:
        spark.stop()


def _event_log_features(
    spark: SparkSession,
    contract: DatasetContract,
    input_path: Path,
    fmt: str,
    entities_path: Path | None,
) -> tuple[pd.DataFrame, dt.date, dict[str, int], pd.DataFrame]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from churnops.bronze import EVENT_DAY, event_schema
    from churnops.jobs.event_rules import IngestionError, validate_file
    from churnops.jobs.feature_frames import (
        BRONZE_EVENTS_DDL,
        bucket_by_day,
        build_features,
        read_entities,
        read_entity_table,
    )

    assert contract.events is not None
    source = contract.events.model_copy(update={"format": fmt})
    try:
        validated = validate_file(input_path, source, future_after=dt.datetime.now(dt.UTC).replace(tzinfo=None))
    except IngestionError as error:
        raise InputFileError(str(error).replace("cannot ingest", "cannot score")) from None
    if validated.accepted.empty:
        raise InputFileError(
            f"input {input_path}: none of its {validated.rows_read} rows passes the event rules "
            f"({validated.quarantined_by_reason}); fix the rows or the contract's `events` fields"
        )
    cutoff = max(validated.accepted[EVENT_DAY]) + dt.timedelta(days=1)
    if entities_path is not None:
        assert contract.entities is not None
        entities = read_entity_table(spark, contract, entities_path, file_format(entities_path, "entities"))
    else:
        entities = read_entities(spark, contract)
    with tempfile.TemporaryDirectory(prefix="churnops-score-input-") as staging:
        # The accepted rows in the bronze layout, read back with the bronze schema: the feature functions see
        # exactly what they see in the feature job.
        events_file = Path(staging) / "events.parquet"
        pq.write_table(
            pa.Table.from_pandas(validated.accepted, schema=event_schema(), preserve_index=False), events_file
        )
        events = spark.read.schema(BRONZE_EVENTS_DDL).parquet(str(events_file))
        daily = bucket_by_day(events, contract)
        features = build_features(daily, entities, contract, [cutoff], observed_until=cutoff).toPandas()
    return features, cutoff, validated.quarantined_by_reason, validated.accepted


def scored_list(model: LoadedModel, features: pd.DataFrame, cutoff: dt.date, settings: Settings) -> pd.DataFrame:
    """The file's rows scored like `churnops score` scores a snapshot, highest risk first, banded as the API bands
    a single score (the cut-offs stored with the model) rather than relative to this file; `risk_decile` still
    ranks within the file."""
    missing = [column for column in model.schema.columns if column not in features.columns]
    if missing:
        raise InputFileError(
            f"{model.name} v{model.version} was trained on feature(s) {missing} that the dataset contract no longer "
            "produces: retrain (`churnops train`) or restore the contract the champion was trained with"
        )
    scored = score_frame(model, features, cutoff, settings.scoring.risk_bands)
    bands = RiskBands.for_model(model.metadata, model.threshold)
    scored["risk_band"] = [bands.band(score) for score in scored["score"].tolist()]
    return scored


def input_identity(path: Path) -> str:
    """The name of the `adhoc` list a file's scores are stored under: `<file name>@<first 16 hex digits of the
    SHA-256 of its bytes>`. The same file scored again has the same identity; a different file, or the same file
    edited, another."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return f"{path.name}@{digest.hexdigest()[:16]}"


def _write_list(scored: pd.DataFrame, path: Path) -> None:
    optional = [column for column in OPTIONAL_LIST_COLUMNS if column in scored.columns]
    frame = scored.rename(columns={"score": "probability"}).loc[:, [*OUTPUT_COLUMNS, *optional]]
    if file_format(path, "output") == "parquet":
        write_parquet_atomically(frame, path)
        return
    # Full precision (the shortest repr that round-trips), so the file holds the very scores the API returns.
    write_csv_atomically(frame, path, date_format="%Y-%m-%d")


def score_input(
    settings: Settings,
    contract: DatasetContract,
    input_path: Path,
    output_path: Path | None = None,
    entities_path: Path | None = None,
) -> InputScoringRun:
    """Score `input_path` with the dataset's champion and write its list (see the module docstring).

    Everything that can be checked without Spark is checked first: the input's columns and format, the output's
    format, and that a champion exists.
    """
    input_path = input_path.resolve()
    output_path = (output_path or default_output_path(input_path)).resolve()
    fmt = check_input(contract, input_path)
    file_format(output_path, "output")
    if output_path == input_path:
        raise InputFileError(f"output {output_path} is the input file; give another --output")
    if entities_path is not None:
        if contract.events is None or contract.entities is None:
            raise InputFileError(
                f"dataset {contract.name!r} takes attributes from the input itself: --entities is for event data "
                "with an entity table"
            )
        check_columns(contract, entities_path.resolve(), "entities", role="entities")
    elif contract.events is not None and contract.entities is not None:
        table = contract.resolve(contract.entities.path)
        if not table.exists():
            raise InputFileError(
                f"dataset {contract.name!r} takes customers' attributes from its entity table {table}, which does "
                "not exist; give one with --entities FILE"
            )
    model = load_champion(settings, contract)

    features, cutoff, left_out, events = input_features(settings, contract, input_path, fmt, entities_path)
    if features.empty:
        raise InputFileError(
            f"input {input_path}: no customer of the file is in the scored population at {cutoff} (see the "
            "contract's `population`); nothing was written"
        )
    duplicated = features[ENTITY_ID][features[ENTITY_ID].duplicated()]
    if len(duplicated):
        key = contract.entities.key if contract.entities is not None else ENTITY_ID
        raise InputFileError(
            f"input {input_path}: column {key!r} must be unique (one row per customer); {len(duplicated)} "
            f"duplicated, e.g. {duplicated.head(3).tolist()}. Remove the duplicates and score again"
        )
    scored = scored_list(model, features, cutoff, settings)
    # The value and survival columns of the snapshot's lists, from this file's own rows and purchases.
    purchases = None
    if contract.value is not None and events is not None:
        try:
            purchases = purchases_of(contract, events, cutoff, f"in {input_path}")
        except ValueError as error:
            raise InputFileError(str(error)) from None
    scored = with_model_columns(settings, contract, scored, cutoff, None, features, purchases)
    _write_list(scored, output_path)
    identity = input_identity(input_path)
    in_database = store_list(settings, scored, contract.name, f"{LIST_KIND}:{identity}", cutoff, LIST_KIND, identity)
    log.info(
        "scored %s customers of %s at %s with %s v%s -> %s",
        len(scored),
        input_path,
        cutoff,
        model.name,
        model.version,
        output_path,
    )
    return InputScoringRun(
        input_path=input_path,
        output_path=output_path,
        cutoff=cutoff,
        model_version=model.version,
        rows_scored=len(scored),
        rows_left_out=left_out,
        rows_in_database=in_database,
    )
