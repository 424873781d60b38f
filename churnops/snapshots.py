"""Feature snapshots: versioned, content-hashed, published atomically, verified on load, one per run date.

Layout under `<home>/features/<dataset>/`: one folder per snapshot, named by its content hash, holding `data/`
(Parquet, partitioned by cutoff when Spark wrote it: churnops/snapshot_files.py, which also hashes it from its
files' digests) and `snapshot.json` (metadata: cutoffs, row counts, features, hashes); `runs/<run date>.json` names
the snapshot of each run date, `inputs/<inputs key>.json` the snapshot built from each set of inputs (so unchanged
data and definitions reuse a snapshot instead of rebuilding it), and `latest.json` the snapshot of the newest run
date. The training hash covers what training reads: two run dates with the same one have nothing new to learn
from. The row hashing below is that of snapshots written by pandas (tests, benchmarks, older snapshots).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from churnops.config import Settings
from churnops.features import CUTOFF, ENTITY_ID
from churnops.storage import write_json_atomically

DATA_DIR = "data"
METADATA_FILE = "snapshot.json"
LATEST_FILE = "latest.json"
RUNS_DIR = "runs"
INPUTS_DIR = "inputs"


class SnapshotIntegrityError(RuntimeError):
    """A snapshot's content no longer matches the hash recorded when it was written."""


@dataclass(frozen=True)
class SnapshotMetadata:
    dataset: str
    content_hash: str
    created_at: str
    cutoffs: dict[str, list[str]]
    rows_per_cutoff: dict[str, int]
    feature_columns: list[str]
    source_fingerprints: dict[str, str]
    # How training must validate: `out_of_time` by cutoff, or `stratified_holdout` for entity-level data.
    validation: str = "out_of_time"
    # The bronze layer's reconciled counts (read = accepted + quarantined) for the events this snapshot used.
    ingestion: dict[str, Any] = field(default_factory=dict)
    # What the feature job's leakage probes checked and found (jobs/features.py `probe_source_timestamps`).
    leakage_probes: dict[str, Any] = field(default_factory=dict)
    # The run date the snapshot was built for, the last observed day + 1, and the hash of what training reads.
    run_date: str | None = None
    observed_until: str | None = None
    training_hash: str = ""
    # Digest of everything the snapshot was computed from (definitions, inputs, plan): see `find_by_inputs`.
    inputs_key: str = ""
    # One hash per cutoff and the pandas dtype of every column, so a stage that needs one cutoff (scoring) reads
    # and verifies only its rows. Empty on old snapshots: those are read and verified whole.
    cutoff_hashes: dict[str, str] = field(default_factory=dict)
    column_dtypes: dict[str, str] = field(default_factory=dict)
    # Per cutoff, one digest per column (`column_digest`), for pandas-hashed snapshots: a stage checks what it read.
    column_digests: dict[str, dict[str, str]] = field(default_factory=dict)
    # Spark-written snapshots (snapshot_files.py): each data file's SHA-256 and the hash scheme; empty when pandas.
    file_digests: dict[str, str] = field(default_factory=dict)
    hash_scheme: str = ""

    @property
    def snapshot_id(self) -> str:
        return self.content_hash[:16]


def _column_hashes(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """One uint64 hash per value of every column (pandas' `hash_pandas_object`, which depends on the dtype)."""
    hashes = {}
    for column in frame.columns:
        values = frame[column]
        if column == ENTITY_ID and values.dtype == object and not values.isna().any():
            # Customer ids are (nearly) all distinct: categorising them first, pandas' default, only adds a hash
            # table pass (4x slower at 1M ids); the hashes of present values are the same either way.
            hashes[column] = pd.util.hash_array(values.to_numpy(), categorize=False)
        else:
            hashes[column] = pd.util.hash_pandas_object(values, index=False).to_numpy(dtype=np.uint64)
    return hashes


def _combined_row_hashes(hashes: list[np.ndarray]) -> np.ndarray:
    """One hash per row from its columns' value hashes, exactly as `hash_pandas_object` combines a DataFrame's
    columns (CPython's tuple hash): computed here so the value hashes serve the row hashes and the column digests
    alike, and no sorted copy of the frame is made. tests/features/test_snapshot_hashes.py holds it to pandas."""
    out = np.full(len(hashes[0]) if hashes else 0, 0x345678, dtype=np.uint64)
    mult = np.uint64(1000003)
    for i, values in enumerate(hashes):
        out ^= values
        out *= mult
        mult += np.uint64(82520 + 2 * (len(hashes) - i))
    return out + np.uint64(97531)


def _row_order(frame: pd.DataFrame) -> np.ndarray:
    """Row positions in (cutoff, customer) order (customer only without cutoffs); only the keys are sorted."""
    keys = [CUTOFF, ENTITY_ID] if CUTOFF in frame.columns else [ENTITY_ID]
    return frame[keys].reset_index(drop=True).sort_values(keys, kind="stable").index.to_numpy()


def _header(frame: pd.DataFrame) -> bytes:
    return json.dumps([(c, str(frame[c].dtype)) for c in sorted(frame.columns)]).encode()


def _ordered_row_hashes(frame: pd.DataFrame, hashes: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The row order and the row hashes in that order."""
    order = _row_order(frame)
    return order, _combined_row_hashes([hashes[c] for c in sorted(frame.columns)])[order]


def _digest(header: bytes, row_hashes: np.ndarray) -> str:
    digest = hashlib.sha256()
    digest.update(header)
    digest.update(row_hashes.tobytes())
    return digest.hexdigest()


def content_hash(frame: pd.DataFrame) -> str:
    """SHA-256 over the column names and dtypes and the rows, in (cutoff, customer) order."""
    _, row_hashes = _ordered_row_hashes(frame, _column_hashes(frame))
    return _digest(_header(frame), row_hashes)


def column_digest(customer_hashes: np.ndarray, value_hashes: np.ndarray) -> str:
    """A column's digest over some rows: the sum (mod 2**64) of one mixed hash per (customer, value) pair.

    The sum does not depend on the row order, so a reader checks a column without sorting the rows; each term is a
    bijection of the value's hash for a given customer (splitmix64's finaliser), so changing any one value always
    changes the digest, and moving a value to another customer or adding or dropping a row changes it but with a
    chance of 2**-64.
    """
    with np.errstate(over="ignore"):
        terms = customer_hashes ^ (value_hashes * np.uint64(0x9E3779B97F4A7C15))
        terms = (terms ^ (terms >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        terms = (terms ^ (terms >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        terms ^= terms >> np.uint64(31)
    return f"{int(terms.sum(dtype=np.uint64)):016x}"


def content_hashes(frame: pd.DataFrame) -> tuple[str, dict[str, str], dict[str, dict[str, str]]]:
    """The whole frame's content hash, each cutoff's, and each cutoff's column digests, from one pass of hashing.

    A cutoff's hash equals `content_hash` of its rows when they carry the whole frame's dtypes (row hashes do not
    depend on the other rows), which is how `load_snapshot` checks one cutoff without reading the others; the column
    digests (`column_digest`) let it check only the columns it reads, without sorting them.
    """
    hashes = _column_hashes(frame)
    order, row_hashes = _ordered_row_hashes(frame, hashes)
    header = _header(frame)
    if CUTOFF not in frame.columns:
        return _digest(header, row_hashes), {}, {}
    days = frame[CUTOFF].to_numpy()[order]
    starts = np.flatnonzero(np.r_[True, days[1:] != days[:-1]])
    ends = np.r_[starts[1:], len(days)]
    per_cutoff, per_column = {}, {}
    for start, end in zip(starts, ends, strict=True):
        day = pd.Timestamp(days[start]).date().isoformat()
        per_cutoff[day] = _digest(header, row_hashes[start:end])
        rows = order[start:end]
        customers = hashes[ENTITY_ID][rows]
        per_column[day] = {column: column_digest(customers, values[rows]) for column, values in hashes.items()}
    return _digest(header, row_hashes), per_cutoff, per_column


def file_fingerprint(path: Path) -> str:
    """SHA-256 of a source file, or of every file under a source folder in name order."""
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        digest.update(file.name.encode())
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def dataset_dir(settings: Settings, dataset: str) -> Path:
    return settings.features_dir / dataset


def training_hash(frame: pd.DataFrame, cutoffs: dict[str, list[dt.date]], validation: str) -> str:
    """Content hash of the rows training reads: the labelled rows of the training and out-of-time cutoffs.

    Entity-level snapshots carry the run date as their one cutoff; it is left out, so the same table on another
    day has the same training hash.
    """
    from churnops.features import LABEL_AVAILABLE

    labelled = frame[frame[LABEL_AVAILABLE]] if LABEL_AVAILABLE in frame.columns else frame
    if validation != "out_of_time":
        return content_hash(labelled.drop(columns=[CUTOFF]))
    training_days = [pd.Timestamp(d) for role in ("train", "out_of_time") for d in cutoffs.get(role, [])]
    return content_hash(labelled[labelled[CUTOFF].isin(training_days)])


def describe(
    frame: pd.DataFrame,
    dataset: str,
    cutoffs: dict[str, list[dt.date]],
    feature_columns: list[str],
    source_fingerprints: dict[str, str],
    validation: str = "out_of_time",
    ingestion: dict[str, Any] | None = None,
    leakage_probes: dict[str, Any] | None = None,
    run_date: dt.date | None = None,
    observed_until: dt.date | None = None,
    inputs_key: str = "",
) -> SnapshotMetadata:
    counts = frame.groupby(CUTOFF).size()
    whole_hash, hashes_by_cutoff, digests_by_cutoff = content_hashes(frame)
    return SnapshotMetadata(
        dataset=dataset,
        content_hash=whole_hash,
        created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        cutoffs={role: [d.isoformat() for d in dates] for role, dates in cutoffs.items()},
        rows_per_cutoff={pd.Timestamp(k).date().isoformat(): int(v) for k, v in counts.items()},
        feature_columns=feature_columns,
        source_fingerprints=source_fingerprints,
        validation=validation,
        ingestion=ingestion or {},
        leakage_probes=leakage_probes or {},
        run_date=run_date.isoformat() if run_date else None,
        observed_until=observed_until.isoformat() if observed_until else None,
        training_hash=training_hash(frame, cutoffs, validation),
        inputs_key=inputs_key,
        cutoff_hashes=hashes_by_cutoff,
        column_digests=digests_by_cutoff,
        column_dtypes={column: str(dtype) for column, dtype in frame.dtypes.items()},
    )


def write_metadata(snapshot_dir: Path, metadata: SnapshotMetadata) -> None:
    write_json_atomically(asdict(metadata), snapshot_dir / METADATA_FILE)


def record_run(settings: Settings, metadata: SnapshotMetadata, run_date: dt.date | None = None) -> None:
    """Name `metadata`'s snapshot as the one of `run_date` (default: the date it was built for) and of its inputs;
    move `latest.json` forward only (a backfill of an earlier date never makes an older snapshot the latest)."""
    root = dataset_dir(settings, metadata.dataset)
    day = run_date.isoformat() if run_date else metadata.run_date
    pointer = {"snapshot_id": metadata.snapshot_id, "run_date": day, "inputs_key": metadata.inputs_key}
    if metadata.inputs_key:
        write_json_atomically(pointer, root / INPUTS_DIR / f"{metadata.inputs_key}.json")
    if day is None:
        write_json_atomically(pointer, root / LATEST_FILE)
        return
    write_json_atomically(pointer, root / RUNS_DIR / f"{day}.json")
    latest = root / LATEST_FILE
    current = json.loads(latest.read_text()).get("run_date") if latest.exists() else None
    if current is None or current <= day:
        write_json_atomically(pointer, latest)


def find_by_inputs(settings: Settings, dataset: str, inputs_key: str) -> Path | None:
    """The published snapshot built from exactly these inputs, if any (its folder still holds its data)."""
    pointer = dataset_dir(settings, dataset) / INPUTS_DIR / f"{inputs_key}.json"
    if not pointer.exists():
        return None
    folder = dataset_dir(settings, dataset) / json.loads(pointer.read_text())["snapshot_id"]
    return folder if (folder / METADATA_FILE).exists() else None


def snapshot_dir_for(settings: Settings, dataset: str, run_date: dt.date | None = None) -> Path:
    """The snapshot of `run_date` (the newest run date's when None)."""
    if run_date is None:
        return latest_snapshot_dir(settings, dataset)
    pointer = dataset_dir(settings, dataset) / RUNS_DIR / f"{run_date.isoformat()}.json"
    if not pointer.exists():
        raise FileNotFoundError(
            f"no feature snapshot of dataset {dataset!r} for run date {run_date}: the feature job has not run for "
            f"that date (`churnops features --run-date {run_date}` or the feature DAG)"
        )
    return pointer.parent.parent / json.loads(pointer.read_text())["snapshot_id"]


def read_metadata(snapshot_dir: Path) -> SnapshotMetadata:
    """A snapshot's metadata; fields this version does not know (written by a newer one) are ignored."""
    payload = json.loads((snapshot_dir / METADATA_FILE).read_text())
    return SnapshotMetadata(**{f.name: payload[f.name] for f in fields(SnapshotMetadata) if f.name in payload})


def latest_snapshot_dir(settings: Settings, dataset: str) -> Path:
    pointer = dataset_dir(settings, dataset) / LATEST_FILE
    if not pointer.exists():
        raise FileNotFoundError(
            f"no feature snapshot for dataset {dataset!r} under {pointer.parent}; run `churnops features` first"
        )
    return pointer.parent / json.loads(pointer.read_text())["snapshot_id"]


def load_snapshot(
    snapshot_dir: Path,
    verify: bool = True,
    cutoffs: Sequence[dt.date] | None = None,
    columns: Sequence[str] | None = None,
) -> tuple[pd.DataFrame, SnapshotMetadata]:
    """Read a snapshot's rows (only those of `cutoffs` when given; only `columns` plus the customer and cutoff when
    given) and metadata; refuse it if what was read does not match the hashes recorded when it was written.
    Snapshots written by Spark are checked by their files' digests (churnops/snapshot_files.py); older ones are read
    whole (or by cutoff, every column) when they lack per-cutoff column digests (or hashes)."""
    metadata = read_metadata(snapshot_dir)
    wanted = sorted({day.isoformat() for day in cutoffs}) if cutoffs is not None else None
    read_columns = None if columns is None else list(dict.fromkeys([ENTITY_ID, CUTOFF, *columns]))
    if metadata.hash_scheme:
        from churnops.snapshot_files import read_file_snapshot

        return read_file_snapshot(snapshot_dir, metadata, wanted, read_columns, verify), metadata
    if wanted is not None and all(day in metadata.column_digests for day in wanted):
        frame = _read_cutoffs(snapshot_dir, metadata, wanted, read_columns)
        if verify:
            _check_column_digests(snapshot_dir, metadata, wanted, frame)
        return frame, metadata
    if wanted is not None and all(day in metadata.cutoff_hashes for day in wanted):
        frame = _read_cutoffs(snapshot_dir, metadata, wanted)
        if verify:
            for day in wanted:
                _check_hash(
                    snapshot_dir,
                    f"cutoff {day}",
                    metadata.cutoff_hashes[day],
                    frame[frame[CUTOFF] == pd.Timestamp(day)],
                )
        return (frame if read_columns is None else frame.loc[:, read_columns]), metadata
    frame = pd.read_parquet(snapshot_dir / DATA_DIR)
    frame[CUTOFF] = pd.to_datetime(frame[CUTOFF])
    if verify:
        _check_hash(snapshot_dir, "all rows", metadata.content_hash, frame)
    if wanted is not None:
        frame = frame[frame[CUTOFF].isin([pd.Timestamp(day) for day in wanted])].reset_index(drop=True)
    return (frame if read_columns is None else frame.loc[:, read_columns]), metadata


def _check_column_digests(snapshot_dir: Path, metadata: SnapshotMetadata, days: list[str], frame: pd.DataFrame) -> None:
    """Each cutoff read has the rows it had when written, and each column read the values it had."""
    hashes = _column_hashes(frame)
    stamps = frame[CUTOFF].to_numpy()
    for day in days:
        rows = np.flatnonzero(stamps == np.datetime64(day, "ns"))
        if len(rows) != metadata.rows_per_cutoff.get(day, 0):
            raise SnapshotIntegrityError(
                f"snapshot {snapshot_dir} was modified after it was written: cutoff {day} was written with "
                f"{metadata.rows_per_cutoff.get(day, 0)} rows and now holds {len(rows)}; rebuild it with "
                "`churnops features`"
            )
        customers = hashes[ENTITY_ID][rows] if len(rows) < len(frame) else hashes[ENTITY_ID]
        for column, values in hashes.items():
            recorded = metadata.column_digests[day].get(column)
            actual = column_digest(customers, values[rows] if len(rows) < len(frame) else values)
            if actual != recorded:
                raise SnapshotIntegrityError(
                    f"snapshot {snapshot_dir} was modified after it was written: column {column!r} of cutoff {day} "
                    f"was recorded with digest {recorded}, its values now give {actual}; rebuild it with "
                    "`churnops features`"
                )


def _check_hash(snapshot_dir: Path, part: str, recorded: str, rows: pd.DataFrame) -> None:
    actual = content_hash(rows)
    if actual != recorded:
        raise SnapshotIntegrityError(
            f"snapshot {snapshot_dir} was modified after it was written: recorded hash of {part} {recorded[:16]}…, "
            f"content hashes to {actual[:16]}…; rebuild it with `churnops features`"
        )


def _read_cutoffs(
    snapshot_dir: Path, metadata: SnapshotMetadata, days: list[str], columns: list[str] | None = None
) -> pd.DataFrame:
    """The rows of `days` only (of `columns` only, when given), with the dtypes the whole snapshot has (a column that
    is float because other cutoffs hold a missing value stays float), so their hashes match those recorded at write
    time."""
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    dataset = ds.dataset(snapshot_dir / DATA_DIR, format="parquet")
    column_type = dataset.schema.field(CUTOFF).type
    values = _typed_cutoffs([pd.Timestamp(day) for day in days], column_type)
    frame = dataset.to_table(columns=columns, filter=pc.field(CUTOFF).isin(values)).to_pandas()
    frame[CUTOFF] = pd.to_datetime(frame[CUTOFF])
    for column, dtype in metadata.column_dtypes.items():
        if column in frame.columns and str(frame[column].dtype) != dtype:
            frame[column] = frame[column].astype(dtype)
    return frame


def _typed_cutoffs(stamps: list[pd.Timestamp], column_type: Any) -> Any:
    """Cutoff values typed as the Parquet column is (a date or a timestamp column, as the writer chose)."""
    import pyarrow as pa

    if pa.types.is_date(column_type):
        return pa.array([stamp.date() for stamp in stamps], type=column_type)
    return pa.array([stamp.to_datetime64() for stamp in stamps]).cast(column_type)
