"""Feature snapshots: versioned, content-hashed, published atomically, verified on load.

Layout under `<home>/features/<dataset>/`: one folder per snapshot, named by its content hash, holding `data/`
(Parquet) and `snapshot.json` (metadata: cutoffs, row counts, features, hash); `latest.json` names the newest.
The hash covers the rows sorted by (cutoff, customer) so the same inputs always give the same hash, however Spark
split the files.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
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

    @property
    def snapshot_id(self) -> str:
        return self.content_hash[:16]


def content_hash(frame: pd.DataFrame) -> str:
    """SHA-256 over the column names and the rows, in (cutoff, customer) order."""
    ordered = frame.sort_values([CUTOFF, ENTITY_ID], kind="stable", ignore_index=True)
    ordered = ordered[sorted(ordered.columns)]
    row_hashes = pd.util.hash_pandas_object(ordered, index=False).to_numpy(dtype=np.uint64)
    digest = hashlib.sha256()
    digest.update(json.dumps([(c, str(ordered[c].dtype)) for c in ordered.columns]).encode())
    digest.update(row_hashes.tobytes())
    return digest.hexdigest()


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


def describe(
    frame: pd.DataFrame,
    dataset: str,
    cutoffs: dict[str, list[dt.date]],
    feature_columns: list[str],
    source_fingerprints: dict[str, str],
    validation: str = "out_of_time",
    ingestion: dict[str, Any] | None = None,
    leakage_probes: dict[str, Any] | None = None,
) -> SnapshotMetadata:
    counts = frame.groupby(CUTOFF).size()
    return SnapshotMetadata(
        dataset=dataset,
        content_hash=content_hash(frame),
        created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        cutoffs={role: [d.isoformat() for d in dates] for role, dates in cutoffs.items()},
        rows_per_cutoff={pd.Timestamp(k).date().isoformat(): int(v) for k, v in counts.items()},
        feature_columns=feature_columns,
        source_fingerprints=source_fingerprints,
        validation=validation,
        ingestion=ingestion or {},
        leakage_probes=leakage_probes or {},
    )


def write_metadata(snapshot_dir: Path, metadata: SnapshotMetadata) -> None:
    write_json_atomically(asdict(metadata), snapshot_dir / METADATA_FILE)


def point_latest(settings: Settings, metadata: SnapshotMetadata) -> None:
    write_json_atomically({"snapshot_id": metadata.snapshot_id}, dataset_dir(settings, metadata.dataset) / LATEST_FILE)


def latest_snapshot_dir(settings: Settings, dataset: str) -> Path:
    pointer = dataset_dir(settings, dataset) / LATEST_FILE
    if not pointer.exists():
        raise FileNotFoundError(
            f"no feature snapshot for dataset {dataset!r} under {pointer.parent}; run `churnops features` first"
        )
    return pointer.parent / json.loads(pointer.read_text())["snapshot_id"]


def load_snapshot(snapshot_dir: Path, verify: bool = True) -> tuple[pd.DataFrame, SnapshotMetadata]:
    """Read a snapshot's rows and metadata; refuse it if its content does not match its recorded hash."""
    metadata = SnapshotMetadata(**json.loads((snapshot_dir / METADATA_FILE).read_text()))
    frame = pd.read_parquet(snapshot_dir / DATA_DIR)
    frame[CUTOFF] = pd.to_datetime(frame[CUTOFF])
    if verify:
        actual = content_hash(frame)
        if actual != metadata.content_hash:
            raise SnapshotIntegrityError(
                f"snapshot {snapshot_dir} was modified after it was written: recorded hash "
                f"{metadata.content_hash[:16]}…, content hashes to {actual[:16]}…; rebuild it with `churnops features`"
            )
    return frame, metadata


def metadata_dict(metadata: SnapshotMetadata) -> dict[str, Any]:
    return asdict(metadata)
