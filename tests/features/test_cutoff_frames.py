"""Per-cutoff frames kept between run dates: a snapshot built from stored frames is the snapshot a full rebuild
gives, and a re-delivered file invalidates exactly the cutoffs whose days it changed."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from pathlib import Path

import pandas as pd
import pytest

from churnops.bronze import BronzeManifest, SourceFileRecord
from churnops.jobs.cutoff_frames import FRAMES_DIR, cutoff_keys
from churnops.jobs.features import build_feature_snapshot, prepare_run, reuse_snapshot
from churnops.jobs.generate import generate, write_generated
from churnops.snapshot_files import data_files, file_sha256
from churnops.snapshots import METADATA_FILE, dataset_dir, load_snapshot, read_metadata, write_metadata
from tests.features.conftest import make_settings, synthetic_contract_yaml, write_contract

D = dt.date
HORIZON = dt.timedelta(days=60)  # the synthetic contract's


def month_landing(source: Path, landing: Path) -> None:
    """The events of `source` as one landing file per month, as a source system delivering monthly would."""
    events = pd.read_parquet(source)
    landing.mkdir(parents=True, exist_ok=True)
    for month, rows in events.groupby(events["event_time"].dt.strftime("%Y-%m")):
        rows.to_parquet(landing / f"events-{month}.parquet", index=False)


@pytest.fixture(scope="module")
def monthly(tmp_path_factory):
    """80 synthetic customers (events to 2024-12-31) delivered monthly into a landing folder; returns a factory
    of (contract, settings) pairs, each with its own landing copy and home."""
    data = tmp_path_factory.mktemp("frames-data")
    write_generated(generate(80, seed=5), data / "events.parquet", data / "customers.parquet")

    def platform(name: str):
        folder = tmp_path_factory.mktemp(name)
        month_landing(data / "events.parquet", folder / "landing")
        raw = synthetic_contract_yaml(data, name="monthly")
        raw["events"]["path"] = str(folder / "landing")
        return write_contract(folder, raw), make_settings(folder / "home")

    return platform


def build(spark, contract, settings, run_date):
    prepared = prepare_run(contract, settings, run_date)
    return reuse_snapshot(settings, contract, prepared) or build_feature_snapshot(spark, contract, settings, prepared)


def same_snapshot(a, b) -> None:
    names = ("content_hash", "cutoff_hashes", "file_digests", "training_hash", "column_dtypes", "cutoffs")
    for name in names:
        assert getattr(a.metadata, name) == getattr(b.metadata, name), name
    assert a.snapshot_dir.name == b.snapshot_dir.name


@pytest.mark.slow
def test_a_snapshot_from_stored_frames_equals_a_full_rebuild(spark, monthly):
    contract, settings = monthly("incremental")
    december = build(spark, contract, settings, D(2024, 12, 1))
    january = build(spark, contract, settings, D(2025, 1, 1))
    fresh_contract, fresh_settings = monthly("full")
    full = build(spark, fresh_contract, fresh_settings, D(2025, 1, 1))

    all_cutoffs = sorted(D.fromisoformat(d) for days in january.metadata.cutoffs.values() for d in days)
    assert sorted(december.computed_cutoffs) == sorted(
        D.fromisoformat(d) for days in december.metadata.cutoffs.values() for d in days
    )
    assert sorted(full.computed_cutoffs) == all_cutoffs
    # The new run date computes its new cutoffs only: those it shares with December come from stored frames.
    shared = set(all_cutoffs) & {D.fromisoformat(d) for days in december.metadata.cutoffs.values() for d in days}
    assert len(shared) >= 4
    assert set(january.computed_cutoffs) == set(all_cutoffs) - shared
    same_snapshot(january, full)
    frame, _ = load_snapshot(january.snapshot_dir)  # verifies every recorded file digest
    assert len(frame) == sum(full.metadata.rows_per_cutoff.values())
    # Written by Spark, partitioned by cutoff, one file per cutoff named by position; hashed from the files.
    folders = sorted(p.name for p in (january.snapshot_dir / "data").iterdir())
    assert folders == [f"cutoff={day}" for day in sorted(full.metadata.rows_per_cutoff)]
    assert all(path.endswith("/part-00000.parquet") for path in january.metadata.file_digests)
    assert january.metadata.hash_scheme and not january.metadata.column_digests
    # The executors' digests are the files' SHA-256, as a reader streaming them computes it.
    data = january.snapshot_dir / "data"
    assert january.metadata.file_digests == {path: file_sha256(str(data / path)) for path in data_files(data)}


@pytest.mark.slow
def test_a_redelivered_file_invalidates_the_cutoffs_that_read_its_days(spark, monthly):
    contract, settings = monthly("redelivery")
    before = build(spark, contract, settings, D(2024, 12, 1))

    # July is delivered again with other amounts: its rows replace the first delivery's.
    july = Path(contract.events.path) / "events-2024-07.parquet"
    rows = pd.read_parquet(july)
    rows.assign(amount=rows["amount"] * 3 + 1).to_parquet(july, index=False)
    after = build(spark, contract, settings, D(2024, 12, 1))

    first_changed_day = rows["event_time"].min().date()
    cutoffs = sorted(D.fromisoformat(d) for days in after.metadata.cutoffs.values() for d in days)
    assert sorted(after.computed_cutoffs) == [c for c in cutoffs if c + HORIZON > first_changed_day]
    assert 0 < len(after.computed_cutoffs) < len(cutoffs)
    assert after.metadata.content_hash != before.metadata.content_hash

    fresh_contract, fresh_settings = monthly("redelivery-full")
    fresh_july = Path(fresh_contract.events.path) / "events-2024-07.parquet"
    rows.assign(amount=rows["amount"] * 3 + 1).to_parquet(fresh_july, index=False)
    same_snapshot(after, build(spark, fresh_contract, fresh_settings, D(2024, 12, 1)))
    frames = [
        p
        for p in (dataset_dir(settings, contract.name) / FRAMES_DIR).iterdir()
        if p.is_dir() and not p.name.startswith(".")
    ]
    assert len(frames) == len(cutoffs) + len(after.computed_cutoffs)


def record(days: dict[str, str], sha256: str = "a" * 64) -> SourceFileRecord:
    return SourceFileRecord(
        size=1,
        mtime_ns=1,
        sha256=sha256,
        ingestion_id="run-1",
        ingested_at="2024-12-01T00:00:00+00:00",
        future_after="2024-12-01T00:00:00+00:00",
        rows_read=len(days),
        rows_accepted=len(days),
        rows_quarantined=0,
        days={day: {"part": part, "rows": 1} for day, part in days.items()},
    )


def test_a_cutoff_key_covers_the_days_before_its_horizon_end_and_whether_its_label_is_observed(monthly):
    contract, _ = monthly("keys")
    files = {
        "a.parquet": record({"2024-03-01": "events/day=2024-03-01/a-1.parquet"}),
        "b.parquet": record({"2024-06-15": "events/day=2024-06-15/b-1.parquet"}, sha256="b" * 64),
    }
    manifest = BronzeManifest(dataset="monthly", source="landing", rules="r", files=files)
    cutoffs = [D(2024, 4, 1), D(2024, 5, 1), D(2024, 7, 1)]
    keys = cutoff_keys("base", contract, manifest, cutoffs, observed_until=D(2024, 12, 1))

    redelivered = dataclasses.replace(files["b.parquet"], sha256="c" * 64)
    changed = cutoff_keys(
        "base",
        contract,
        dataclasses.replace(manifest, files={**files, "b.parquet": redelivered}),
        cutoffs,
        observed_until=D(2024, 12, 1),
    )
    # 2024-06-15 is read by the cutoffs whose horizon ends after it: 2024-05-01 (to 06-30) and 2024-07-01.
    assert [keys[c] == changed[c] for c in cutoffs] == [True, False, False]
    assert (
        cutoff_keys("other definitions", contract, manifest, cutoffs, D(2024, 12, 1))[D(2024, 4, 1)]
        != keys[D(2024, 4, 1)]
    )
    # Whether the label horizon was observed changes the rows (labels are null until it is).
    assert cutoff_keys("base", contract, manifest, cutoffs, D(2024, 8, 1))[D(2024, 7, 1)] != keys[D(2024, 7, 1)]
    assert cutoff_keys("base", contract, manifest, cutoffs, D(2024, 8, 1))[D(2024, 4, 1)] == keys[D(2024, 4, 1)]


def test_snapshot_metadata_with_fields_this_version_does_not_know_is_read(tmp_path):
    frame = pd.DataFrame({"customer_id": ["a", "b"], "cutoff": pd.to_datetime(["2024-01-01"] * 2), "x": [1.0, 2.0]})
    from churnops.snapshots import describe

    write_metadata(tmp_path, describe(frame, "demo", {"scoring": [D(2024, 1, 1)]}, ["x"], {}))
    payload = json.loads((tmp_path / METADATA_FILE).read_text())
    (tmp_path / METADATA_FILE).write_text(json.dumps(payload | {"written_by_a_newer_version": {"k": 1}}))
    assert read_metadata(tmp_path).content_hash == payload["content_hash"]
