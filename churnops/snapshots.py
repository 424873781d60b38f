"""Feature snapshots: versioned, content-hashed, published atomically, verified on load, one per run date.

Layout under `<home>/features/<dataset>/`: one folder per snapshot, named by its content hash, holding `data/`
(Parquet) and `snapshot.json` (metadata: cutoffs, row counts, features, hashes); `runs/<run date>.json` names the
snapshot of each run date, `inputs/<inputs key>.json` the snapshot built from each set of inputs (so unchanged data
and definitions reuse a snapshot instead of rebuilding it), and `latest.json` the snapshot of the newest run date.
The content hash covers the rows sorted by (cutoff, customer) so the same inputs always give the same hash, however
Spark split the files. The training hash covers only the labelled rows training reads (training and out-of-time
cutoffs): two run dates with the same training hash have nothing new to learn from.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
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
    # One hash per cutoff (same scheme as `content_hash`, over that cutoff's rows) and the pandas dtype of every
    # column, so a stage that needs one cutoff (scoring) reads and verifies only its rows. Empty on snapshots
    # written before they existed: those are read and verified whole.
    cutoff_hashes: dict[str, str] = field(default_factory=dict)
    column_dtypes: dict[str, str] = field(default_factory=dict)

    @property
    def snapshot_id(self) -> str:
        return self.content_hash[:16]


def _ordered_row_hashes(frame: pd.DataFrame) -> tuple[pd.DataFrame, bytes, np.ndarray]:
    """The rows in (cutoff, customer) order (customer only without cutoffs), the column header and one hash per row."""
    keys = [CUTOFF, ENTITY_ID] if CUTOFF in frame.columns else [ENTITY_ID]
    ordered = frame.sort_values(keys, kind="stable", ignore_index=True)
    ordered = ordered[sorted(ordered.columns)]
    header = json.dumps([(c, str(ordered[c].dtype)) for c in ordered.columns]).encode()
    return ordered, header, pd.util.hash_pandas_object(ordered, index=False).to_numpy(dtype=np.uint64)


def _digest(header: bytes, row_hashes: np.ndarray) -> str:
    digest = hashlib.sha256()
    digest.update(header)
    digest.update(row_hashes.tobytes())
    return digest.hexdigest()


def content_hash(frame: pd.DataFrame) -> str:
    """SHA-256 over the column names and dtypes and the rows, in (cutoff, customer) order."""
    _, header, row_hashes = _ordered_row_hashes(frame)
    return _digest(header, row_hashes)


def content_hashes(frame: pd.DataFrame) -> tuple[str, dict[str, str]]:
    """The whole frame's content hash and each cutoff's, from one pass over the rows.

    A cutoff's hash equals `content_hash` of its rows when they carry the whole frame's dtypes (row hashes do not
    depend on the other rows), which is how `load_snapshot` checks one cutoff without reading the others.
    """
    ordered, header, row_hashes = _ordered_row_hashes(frame)
    if CUTOFF not in ordered.columns:
        return _digest(header, row_hashes), {}
    days = ordered[CUTOFF].to_numpy()
    starts = np.flatnonzero(np.r_[True, days[1:] != days[:-1]])
    ends = np.r_[starts[1:], len(days)]
    per_cutoff = {
        pd.Timestamp(days[start]).date().isoformat(): _digest(header, row_hashes[start:end])
        for start, end in zip(starts, ends, strict=True)
    }
    return _digest(header, row_hashes), per_cutoff


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
    whole_hash, hashes_by_cutoff = content_hashes(frame)
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
    return SnapshotMetadata(**json.loads((snapshot_dir / METADATA_FILE).read_text()))


def latest_snapshot_dir(settings: Settings, dataset: str) -> Path:
    pointer = dataset_dir(settings, dataset) / LATEST_FILE
    if not pointer.exists():
        raise FileNotFoundError(
            f"no feature snapshot for dataset {dataset!r} under {pointer.parent}; run `churnops features` first"
        )
    return pointer.parent / json.loads(pointer.read_text())["snapshot_id"]


def load_snapshot(
    snapshot_dir: Path, verify: bool = True, cutoffs: Sequence[dt.date] | None = None
) -> tuple[pd.DataFrame, SnapshotMetadata]:
    """Read a snapshot's rows (only those of `cutoffs` when given) and metadata; refuse it if its content does not
    match its recorded hash."""
    metadata = read_metadata(snapshot_dir)
    wanted = sorted({day.isoformat() for day in cutoffs}) if cutoffs is not None else None
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
        return frame, metadata
    frame = pd.read_parquet(snapshot_dir / DATA_DIR)
    frame[CUTOFF] = pd.to_datetime(frame[CUTOFF])
    if verify:
        _check_hash(snapshot_dir, "all rows", metadata.content_hash, frame)
    if wanted is not None:
        frame = frame[frame[CUTOFF].isin([pd.Timestamp(day) for day in wanted])].reset_index(drop=True)
    return frame, metadata


def _check_hash(snapshot_dir: Path, part: str, recorded: str, rows: pd.DataFrame) -> None:
    actual = content_hash(rows)
    if actual != recorded:
        raise SnapshotIntegrityError(
            f"snapshot {snapshot_dir} was modified after it was written: recorded hash of {part} {recorded[:16]}…, "
            f"content hashes to {actual[:16]}…; rebuild it with `churnops features`"
        )


def _read_cutoffs(snapshot_dir: Path, metadata: SnapshotMetadata, days: list[str]) -> pd.DataFrame:
    """The rows of `days` only, with the dtypes the whole snapshot has (a column that is float because other cutoffs
    hold a missing value stays float), so their hashes match those recorded at write time."""
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    dataset = ds.dataset(snapshot_dir / DATA_DIR, format="parquet")
    column_type = dataset.schema.field(CUTOFF).type
    values = _typed_cutoffs([pd.Timestamp(day) for day in days], column_type)
    frame = dataset.to_table(filter=pc.field(CUTOFF).isin(values)).to_pandas()
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


def metadata_dict(metadata: SnapshotMetadata) -> dict[str, Any]:
    return asdict(metadata)
