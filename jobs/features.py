"""The feature job: one run date's point-in-time features and labels, published as a content-hashed snapshot.

A run works for one run date (`churnops.run_dates`): its scoring cutoff, and the cutoffs of the contract's schedule
whose labels are observed by then (`DatasetContract.plan`). Before Spark starts, the job checks the sources against
the contract (`churnops.jobs.source_check`), brings the bronze layer up to date, refuses a run date the data does not
reach, and digests everything the snapshot depends on (feature definitions, contract, plan, source fingerprints); when a
published snapshot has the same digest it is reused and Spark never starts. Otherwise the frames of
`churnops.jobs.feature_frames` are computed, checked by the leakage probe, written by Spark as Parquet partitioned by
cutoff, digested by the executors, and published atomically (churnops/snapshot_files.py): no row reaches the driver.

Run it through the CLI (`churnops features`), from Airflow (spark-submit of this file), or directly:
`spark-submit jobs/features.py --dataset synthetic [--run-date YYYY-MM-DD]`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from pyspark.sql import SparkSession

from churnops.bronze import BronzeManifest
from churnops.config import Settings
from churnops.dataset import CutoffPlan, DatasetContract, load_contract
from churnops.features import model_feature_columns
from churnops.jobs.cutoff_frames import assemble_feature_files, digest_files
from churnops.jobs.feature_frames import probe_source_timestamps
from churnops.run_dates import DataNotReady, parse_date, require_watermark, run_date_from_data
from churnops.snapshot_files import describe_files
from churnops.snapshots import (
    DATA_DIR,
    SnapshotMetadata,
    dataset_dir,
    file_fingerprint,
    find_by_inputs,
    read_metadata,
    record_run,
    write_metadata,
)
from churnops.storage import publish_directory, staging_directory_for, write_json_atomically

log = logging.getLogger(__name__)

PROBES_DIR = "probes"


@dataclass(frozen=True)
class PreparedRun:
    """What the job decides before Spark starts: the run date, its cutoffs, the bronze files it reads (one
    ingestion, one manifest: the probe, the features and the fingerprint all see the same files) and the digest of
    its inputs."""

    run_date: dt.date
    plan: CutoffPlan
    source_fingerprints: dict[str, str]
    inputs_key: str
    manifest: BronzeManifest | None


@dataclass(frozen=True)
class FeatureRun:
    snapshot_dir: Path
    metadata: SnapshotMetadata
    # True when a published snapshot with the same inputs was reused and no Spark work was done.
    reused: bool = False
    # The cutoffs Spark computed; the others came from the frames stored by earlier runs (jobs/cutoff_frames.py).
    computed_cutoffs: tuple[dt.date, ...] = ()


def _definitions_digest() -> str:
    """Digest of the code that defines and computes the features (the declarations, the Spark frames, the kernel and
    this job), so a changed definition or computation never reuses a snapshot or frame computed by the old one."""
    from churnops import features as definitions
    from churnops.jobs import cutoff_frames, feature_frames, feature_kernel

    digest = hashlib.sha256()
    modules = (definitions, feature_frames, feature_kernel, cutoff_frames)
    for module_file in (*(Path(str(m.__file__)) for m in modules), Path(__file__)):
        digest.update(module_file.read_bytes())
    return digest.hexdigest()


def probe_once(
    spark: SparkSession, contract: DatasetContract, settings: Settings, cutoffs: list[dt.date], manifest: BronzeManifest
) -> dict:
    """The source-timestamp leakage probe, run once per version of the feature definitions and of the contract's
    event fields: its verdict is about the definitions, not about the day's data, so a daily run reuses it (and
    records where from) instead of scanning bronze a second time. A refused finding is never stored: every run
    raises it again."""
    fields = contract.model_dump(mode="json", include={"events", "entities", "label", "leakage"})
    key = hashlib.sha256(json.dumps([_definitions_digest(), fields], sort_keys=True).encode()).hexdigest()[:32]
    stored = dataset_dir(settings, contract.name) / PROBES_DIR / f"{key}.json"
    if stored.exists():
        return json.loads(stored.read_text()) | {"probed_for": key, "reused": True}
    result = probe_source_timestamps(spark, contract, settings, cutoffs, manifest)
    write_json_atomically(result, stored)
    return result | {"probed_for": key, "reused": False}


def inputs_key(contract: DatasetContract, plan: CutoffPlan, source_fingerprints: dict[str, str]) -> str:
    """Digest of everything a snapshot depends on: feature definitions, the contract, the plan, the sources."""
    contract_fields = contract.model_dump(mode="json", exclude={"description", "base_dir"})
    payload = {
        "definitions": _definitions_digest(),
        "contract": contract_fields,
        "plan": plan.model_dump(mode="json"),
        "sources": source_fingerprints,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:32]


def frames_key(contract: DatasetContract, source_fingerprints: dict[str, str]) -> str:
    """Digest of what every cutoff's rows depend on besides its own event days: the feature definitions, the
    contract and the entity table (`jobs/cutoff_frames.py` adds the cutoff and the bronze days it reads)."""
    contract_fields = contract.model_dump(mode="json", exclude={"description", "base_dir"})
    payload = [_definitions_digest(), contract_fields, source_fingerprints.get("entities")]
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:32]


def prepare_run(contract: DatasetContract, settings: Settings, run_date: dt.date | None = None) -> PreparedRun:
    """Check the sources, bring the bronze layer up to date, fix the run date and its plan, and digest the inputs
    (no Spark).

    The source check comes first: a file that does not fit the contract fails here, in seconds, with every problem
    named (`SourceCheckError`), instead of as a Spark error deep in the job. It reads the entity table and the event
    files not yet ingested. Without a `run_date` the run takes the day after the latest day of data. A run date the
    data does not reach (within `settings.watermark.tolerance_days`) is refused with the last day seen.
    """
    from churnops.jobs.ingest import ensure_bronze
    from churnops.jobs.source_check import event_files_not_yet_ingested, require_clean_sources

    new_event_files = event_files_not_yet_ingested(contract, settings) if contract.events is not None else None
    require_clean_sources(contract, new_event_files)

    sources: dict[str, str] = {}
    latest, manifest = None, None
    if contract.events is not None:
        manifest = ensure_bronze(contract, settings)
        # The manifest's (path, SHA-256) list: no source byte is read again to fingerprint the events.
        sources["events"] = manifest.fingerprint()
        latest = manifest.latest_event_day
        run_date = run_date or (run_date_from_data(latest) if latest else None)
        if run_date is None:
            raise DataNotReady(f"dataset {contract.name!r} has no accepted events yet; nothing to compute")
        if contract.cutoffs.as_of is None:
            require_watermark(contract.name, run_date, latest, settings.watermark.tolerance_days)
    if contract.entities is not None:
        sources["entities"] = file_fingerprint(contract.resolve(contract.entities.path))
    run_date = run_date or dt.datetime.now(dt.UTC).date()
    observed_until = latest + dt.timedelta(days=1) if latest is not None else None
    plan = contract.plan(run_date, observed_until=observed_until)
    return PreparedRun(run_date, plan, sources, inputs_key(contract, plan, sources), manifest)


def reuse_snapshot(settings: Settings, contract: DatasetContract, prepared: PreparedRun) -> FeatureRun | None:
    """The published snapshot with the same inputs, now also named as this run date's; None when there is none."""
    existing = find_by_inputs(settings, contract.name, prepared.inputs_key)
    if existing is None:
        return None
    metadata = read_metadata(existing)
    record_run(settings, metadata, run_date=prepared.run_date)
    log.info("feature snapshot %s reused for run date %s (same inputs)", metadata.snapshot_id, prepared.run_date)
    return FeatureRun(snapshot_dir=existing, metadata=metadata, reused=True)


def build_feature_snapshot(
    spark: SparkSession, contract: DatasetContract, settings: Settings, prepared: PreparedRun | None = None
) -> FeatureRun:
    """Compute features for every cutoff of the run's plan (only those no earlier run stored) and publish them as a
    hashed snapshot."""
    prepared = prepared or prepare_run(contract, settings)
    plan = prepared.plan
    cutoffs = sorted(set(plan.all))
    # The probe runs first: a leaking definition fails the run before anything is written.
    manifest = prepared.manifest
    started = time.perf_counter()
    leakage_probes = probe_once(spark, contract, settings, cutoffs, manifest) if manifest else {}
    probed = time.perf_counter()
    observed_until = plan.observed_until or plan.scoring

    target_root = dataset_dir(settings, contract.name)
    staging = staging_directory_for(target_root / "incoming")
    try:
        computed = assemble_feature_files(
            spark,
            contract,
            settings,
            cutoffs,
            observed_until,
            manifest,
            frames_key(contract, prepared.source_fingerprints),
            staging / "computed",
            staging / DATA_DIR,
        )
        assembled = time.perf_counter()
        numeric, categorical = model_feature_columns(contract)
        ingestion = {} if manifest is None else manifest.totals() | {"latest_event_day": str(manifest.latest_event_day)}
        metadata = describe_files(
            staging / DATA_DIR,
            digest_files(spark, staging / DATA_DIR),
            {"train": list(plan.train), "out_of_time": [plan.out_of_time], "scoring": [plan.scoring]},
            contract.validation,
            dataset=contract.name,
            feature_columns=numeric + categorical,
            source_fingerprints=prepared.source_fingerprints,
            ingestion=ingestion,
            leakage_probes=leakage_probes,
            run_date=prepared.run_date.isoformat(),
            observed_until=plan.observed_until.isoformat() if plan.observed_until else None,
            inputs_key=prepared.inputs_key,
        )
        write_metadata(staging, metadata)
        final = target_root / metadata.snapshot_id
        if final.exists():
            # Same rows, same hash: the snapshot is already published; re-running is a no-op.
            shutil.rmtree(staging)
        else:
            publish_directory(staging, final)
        record_run(settings, metadata)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    log.info(
        "feature snapshot %s for run date %s: %s rows; %d of %d cutoffs computed; seconds: probe %.1f, "
        "features %.1f, digest and publish %.1f",
        final,
        prepared.run_date,
        sum(metadata.rows_per_cutoff.values()),
        len(computed),
        len(cutoffs),
        probed - started,
        assembled - probed,
        time.perf_counter() - assembled,
    )
    return FeatureRun(snapshot_dir=final, metadata=metadata, computed_cutoffs=tuple(computed))


def run_feature_job(
    contract: DatasetContract, settings: Settings, run_date: dt.date | None = None, app_name: str | None = None
) -> FeatureRun:
    """The whole job: prepare, reuse a snapshot with the same inputs, or start Spark and build one."""
    from churnops.jobs.spark import spark_session

    started = time.perf_counter()
    prepared = prepare_run(contract, settings, run_date)
    reused = reuse_snapshot(settings, contract, prepared)
    log.info("feature job prepared in %.1f s (source check, ingestion, plan, digests)", time.perf_counter() - started)
    if reused is not None:
        return reused
    started = time.perf_counter()
    spark = spark_session(settings, app_name or f"churnops-features-{contract.name}")
    log.info("Spark session started in %.1f s", time.perf_counter() - started)
    try:
        return build_feature_snapshot(spark, contract, settings, prepared)
    finally:
        spark.stop()


def main(argv: list[str] | None = None) -> None:
    """Entry point for `spark-submit jobs/features.py --dataset NAME [--run-date YYYY-MM-DD]`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default=None, help="built-in dataset name or contract YAML path")
    parser.add_argument("--run-date", default=None, help="the run's date (default: the day after the latest data)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = Settings()
    contract = load_contract(args.dataset or settings.dataset, settings)
    run = run_feature_job(contract, settings, parse_date(args.run_date))
    verb = "reused" if run.reused else "built"
    print(f"feature snapshot {run.metadata.snapshot_id} {verb} at {run.snapshot_dir}")  # noqa: T201


if __name__ == "__main__":
    main()
