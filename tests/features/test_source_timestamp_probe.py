"""The feature job's source-timestamp leakage probe: a feature definition that reads rows dated at or after the
cutoff is found on real Spark output and fails the snapshot with the feature named, before anything is written."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

import churnops.jobs.feature_frames as frames
import churnops.jobs.features as feature_job
from churnops.features import FeatureSpec, event_feature_specs
from churnops.snapshots import dataset_dir
from tests.features.conftest import make_settings, synthetic_contract_yaml, write_contract

# The classic mistake: a 30-day window without its lower bound also sums the label window after the cutoff.
LEAKY = FeatureSpec(
    name="amount_sum_30d_unbounded",
    window_days=30,
    definition="amount in the 30 days before the cutoff (written without the lower bound)",
    expression="SUM(CASE WHEN days_before <= 30 THEN amount_sum ELSE 0 END)",
)


@pytest.fixture(scope="module")
def contract_and_daily(spark, small_synthetic, tmp_path_factory):
    folder = tmp_path_factory.mktemp("probe")
    contract = write_contract(folder, synthetic_contract_yaml(small_synthetic, name="probe"))
    settings = make_settings(folder / "home")
    daily = frames.bucket_by_day(frames.read_events(spark, contract, settings), contract)
    return contract, daily, sorted(set(contract.plan(dt.date(2025, 1, 1)).all))


def test_every_catalog_feature_reads_only_rows_before_the_cutoff(contract_and_daily) -> None:
    contract, daily, cutoffs = contract_and_daily
    counts = frames.features_reading_past_the_cutoff(
        daily, contract, cutoffs, event_feature_specs(contract), sample_one_in=2
    )
    assert counts.pop("_rows_compared") > 100
    assert counts == {spec.name: 0 for spec in event_feature_specs(contract)}


def test_a_window_without_its_lower_bound_is_found(contract_and_daily) -> None:
    contract, daily, cutoffs = contract_and_daily
    bounded = next(s for s in event_feature_specs(contract) if s.name == "amount_sum_30d")
    counts = frames.features_reading_past_the_cutoff(daily, contract, cutoffs, [bounded, LEAKY], sample_one_in=2)
    assert counts["amount_sum_30d"] == 0
    # Every sampled row whose customer bought in the label window changes; there are many in the synthetic data.
    assert counts[LEAKY.name] > 0.2 * counts["_rows_compared"]


def test_a_leaking_definition_fails_the_snapshot_with_its_name_and_writes_nothing(
    spark, small_synthetic, tmp_path, monkeypatch
) -> None:
    contract = write_contract(tmp_path, synthetic_contract_yaml(small_synthetic, name="leaky"))
    settings = make_settings(tmp_path / "home")
    # A developer adds the leaky definition to the catalog.
    monkeypatch.setattr(frames, "event_feature_specs", lambda c: [*event_feature_specs(c), LEAKY])
    with pytest.raises(frames.FeatureLeakageError, match=LEAKY.name):
        feature_job.build_feature_snapshot(spark, contract, settings)
    assert list(dataset_dir(settings, contract.name).glob("*/snapshot.json")) == []


def test_the_dataset_owner_can_allow_a_finding_and_the_snapshot_records_it(
    spark, small_synthetic, tmp_path, monkeypatch
) -> None:
    raw = synthetic_contract_yaml(small_synthetic, name="allowed")
    raw["leakage"] = {"allowed_features": [LEAKY.name]}
    contract = write_contract(tmp_path, raw)
    monkeypatch.setattr(frames, "event_feature_specs", lambda c: [*event_feature_specs(c), LEAKY])
    run = feature_job.build_feature_snapshot(spark, contract, make_settings(tmp_path / "home"))
    probe = run.metadata.leakage_probes["source_timestamps"]
    assert set(probe["features_reading_past_cutoff"]) == {LEAKY.name}
    assert probe["rows_compared"] > 0
    assert dataclasses.asdict(run.metadata)["leakage_probes"] == run.metadata.leakage_probes
