"""The training row budget: cutoffs over it are sampled in Spark, stratified by label, the same rows for the same
seed; what was kept is recorded in the model card."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from churnops.features import CUTOFF, ENTITY_ID, LABEL, LABEL_AVAILABLE
from churnops.jobs.model_card import _sample_lines
from churnops.jobs.training.sampling import over_budget, sample_training_rows, stratum_fractions

BUDGET = 400


def test_each_label_of_a_cutoff_over_budget_keeps_the_same_share_and_cutoffs_under_it_keep_every_row() -> None:
    rows = {("2024-01-01", 0): 900, ("2024-01-01", 1): 100, ("2024-02-01", 0): 300, ("2024-02-01", 1): 50}

    fractions = stratum_fractions(rows, budget=BUDGET)

    assert fractions[("2024-01-01", 0)] == fractions[("2024-01-01", 1)] == BUDGET / 1_000
    assert fractions[("2024-02-01", 0)] == fractions[("2024-02-01", 1)] == 1.0


@pytest.mark.slow
def test_a_snapshot_over_budget_is_sampled_per_cutoff_keeping_its_label_rate_and_the_same_rows_per_seed(
    trained_platform,
) -> None:
    from churnops.jobs.spark import spark_session
    from churnops.snapshots import latest_snapshot_dir, load_snapshot

    settings = trained_platform.settings.model_copy(
        update={"training": trained_platform.settings.training.model_copy(update={"max_rows_per_cutoff": BUDGET})}
    )
    snapshot_dir = latest_snapshot_dir(settings, trained_platform.contract.name)
    whole, metadata = load_snapshot(snapshot_dir)
    assert over_budget(metadata, BUDGET) and not over_budget(metadata, None)
    spark = spark_session(settings, "churnops-tests-row-budget")
    try:
        sample, record = sample_training_rows(spark, snapshot_dir, metadata, settings)
        again, _ = sample_training_rows(spark, snapshot_dir, metadata, settings)
        other_seed = settings.model_copy(
            update={"training": settings.training.model_copy(update={"seed": settings.training.seed + 1})}
        )
        other, _ = sample_training_rows(spark, snapshot_dir, metadata, other_seed)
    finally:
        spark.stop()

    pd.testing.assert_frame_equal(sample, again)  # reproducible
    assert set(sample[ENTITY_ID]) != set(other[ENTITY_ID])  # and seeded
    labelled = whole[whole[LABEL_AVAILABLE]]
    # Rows of the snapshot, unchanged: the sample is the snapshot's rows at the kept keys.
    keyed = labelled.set_index([ENTITY_ID, CUTOFF]).loc[pd.MultiIndex.from_frame(sample[[ENTITY_ID, CUTOFF]])]
    pd.testing.assert_frame_equal(keyed.reset_index()[sample.columns].reset_index(drop=True), sample, check_like=False)
    for day, rows in labelled.groupby(labelled[CUTOFF].dt.strftime("%Y-%m-%d")):
        kept = sample[sample[CUTOFF] == pd.Timestamp(day)]
        fraction = BUDGET / len(rows)
        # Binomial counts: within 5 standard deviations of the budget and of each label's expected share.
        assert abs(len(kept) - BUDGET) < 5 * np.sqrt(BUDGET * (1 - fraction)), (day, len(kept))
        positives = int(rows[LABEL].sum())
        expected = positives * fraction
        assert abs(int(kept[LABEL].sum()) - expected) < 5 * np.sqrt(expected * (1 - fraction)) + 1, day
    strata = {(s.cutoff, s.label): s for s in record.strata}
    assert sum(s.sampled for s in record.strata) == len(sample)
    assert sum(s.rows for s in record.strata) == len(labelled)
    card = "\n".join(_sample_lines(record.as_record()))
    some = next(iter(strata.values()))
    assert f"Row budget {BUDGET:,} per cutoff" in card
    assert f"cutoff {some.cutoff}, label {some.label}: {some.sampled:,} of {some.rows:,}" in card
