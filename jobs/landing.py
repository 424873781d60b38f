"""The landing side of ingestion: which source files a contract names, and which of them are new or changed.

`events.path` names a file, a folder (every file of the declared format under it, recursively, hive-style
partition folders such as `day=2024-05-01/` included), or a glob (`landing/*.csv`, `landing/**/part-*.parquet`).
Names starting with `.` or `_` are skipped at any depth: they are files still being written, or markers such as
Spark's `_SUCCESS`. Each file is known by its path relative to the source root, with `/` separators.

Change detection is cheap first: a file whose size and modification time match the manifest is unchanged and is
not read. Only the others are hashed (SHA-256); a new hash is a new delivery. The one exception is a file modified
within `RACY_SECONDS` before it was ingested: on a filesystem with coarse timestamps it could be rewritten with the
same size and the same modification time, so its stat proves nothing and it is hashed again on every run.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass, field, replace
from pathlib import Path

from churnops.bronze import BronzeManifest, SourceFileRecord
from churnops.dataset import DatasetContract

GLOB_CHARACTERS = frozenset("*?[")
# The coarsest modification-time resolution of a common filesystem (FAT: 2 s).
RACY_SECONDS = 2
SUFFIXES = {"parquet": (".parquet",), "csv": (".csv",)}


@dataclass(frozen=True)
class SourceFile:
    relative: str
    path: Path
    size: int
    mtime_ns: int
    sha256: str | None = None


def is_glob(spec: str) -> bool:
    return any(character in GLOB_CHARACTERS for character in spec)


def source_root(contract: DatasetContract) -> Path:
    """The folder source paths are relative to: the file's folder, the folder itself, or a glob's fixed prefix."""
    assert contract.events is not None
    target = contract.resolve(contract.events.path)
    if is_glob(contract.events.path):
        return Path(*target.parts[: _first_glob_part(target)])
    return target if target.is_dir() else target.parent


def _first_glob_part(path: Path) -> int:
    return next(i for i, part in enumerate(path.parts) if is_glob(part))


def _visible(relative: Path) -> bool:
    return not any(part.startswith((".", "_")) for part in relative.parts)


def list_source_files(contract: DatasetContract) -> list[SourceFile]:
    """Every source file the contract's `events.path` names today, in path order."""
    assert contract.events is not None
    source = contract.events
    target = contract.resolve(source.path)
    root = source_root(contract)
    if is_glob(source.path):
        matches = sorted(root.glob(str(Path(*target.parts[_first_glob_part(target) :]))))
    else:
        matches = [target] if target.exists() else []
    paths: set[Path] = set()
    for match in matches:
        if match.is_dir():
            suffixes = SUFFIXES[source.format]
            paths.update(p for p in match.rglob("*") if p.is_file() and p.name.lower().endswith(suffixes))
        elif match.is_file():
            paths.add(match)
    files = []
    for path in sorted(paths):
        relative = path.relative_to(root)
        if path != target and not _visible(relative):
            continue
        stat = path.stat()
        files.append(SourceFile(relative.as_posix(), path, stat.st_size, stat.st_mtime_ns))
    return files


def sha256_of(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


@dataclass(frozen=True)
class Changes:
    """How today's landing folder differs from the manifest."""

    # New files and re-deliveries (same path, new content), hashed: the only files to read.
    to_ingest: list[SourceFile] = field(default_factory=list)
    # Files whose records change without reading a row: the same content with a new stat, or back after a removal.
    records: dict[str, SourceFileRecord] = field(default_factory=dict)
    unchanged: list[str] = field(default_factory=list)
    # Files in the manifest that are no longer in the landing folder (newly gone; their rows stay).
    gone: list[str] = field(default_factory=list)


def _racy(record: SourceFileRecord) -> bool:
    ingested_ns = int(dt.datetime.fromisoformat(record.ingested_at).replace(tzinfo=dt.UTC).timestamp()) * 10**9
    return record.mtime_ns > ingested_ns - RACY_SECONDS * 10**9


def detect_changes(files: list[SourceFile], manifest: BronzeManifest, now: dt.datetime) -> Changes:
    """Compare the listing with the manifest; hash only files whose size or modification time changed."""
    changes = Changes()
    for file in files:
        record = manifest.files.get(file.relative)
        digest = None
        if record is None or (record.size, record.mtime_ns) != (file.size, file.mtime_ns) or _racy(record):
            digest = file.sha256 or sha256_of(file.path)  # a table comes with its fingerprint
        if record is None or (digest is not None and digest != record.sha256):
            changes.to_ingest.append(replace(file, sha256=digest))
            continue
        # The same content: at most its stat changed, or it came back after a removal.
        restated = record.with_stat(file.size, file.mtime_ns)
        if restated == record:
            changes.unchanged.append(file.relative)
        else:
            changes.records[file.relative] = restated
    present = {file.relative for file in files}
    for relative, record in sorted(manifest.files.items()):
        if relative not in present and record.gone_since is None:
            changes.gone.append(relative)
            changes.records[relative] = replace(record, gone_since=now.isoformat(timespec="seconds"))
    return changes
