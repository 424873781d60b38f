"""Leakage probes: a feature that alone separates the label almost perfectly is named, unless allowed."""

from __future__ import annotations

import numpy as np
import pandas as pd

from churnops.leakage import check_leakage, single_feature_auc


def training_frame(n: int = 2_000, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    label = rng.integers(0, 2, n)
    return pd.DataFrame(
        {
            "honest": label * 0.5 + rng.normal(0, 1, n),  # informative, far from perfect
            # Copies the label with a little noise: what a feature reading past the cutoff looks like.
            "leaky": np.where(label == 1, -1.0, 1.0) * rng.uniform(1, 2, n),
            "leaky_category": np.where(label == 1, "gone", "active"),
            "noise": rng.normal(0, 1, n),
            "label": label.astype(float),
        }
    )


def test_a_near_perfect_single_feature_is_named_in_either_direction():
    findings = check_leakage(training_frame(), ["honest", "leaky", "noise"], ["leaky_category"], "label", 0.95)

    assert [f.feature for f in findings] == ["leaky", "leaky_category"]
    assert all(f.value > 0.95 and f.probe == "single_feature_auc" and not f.allowed for f in findings)
    assert "leaky" in findings[0].message and "allowed_features" in findings[0].message


def test_an_allowed_feature_is_reported_but_marked_allowed():
    findings = check_leakage(training_frame(), ["leaky"], [], "label", 0.95, allowed=("leaky",))

    assert [(f.feature, f.allowed) for f in findings] == [("leaky", True)]


def test_a_clean_training_set_has_no_findings():
    assert check_leakage(training_frame(), ["honest", "noise"], [], "label", 0.95) == []


def test_rows_without_a_label_are_ignored():
    frame = training_frame()
    # Unlabelled rows (horizon not observed yet) look like positives; counted as negatives they would hide the leak.
    frame.loc[:199, "label"] = np.nan
    frame.loc[:199, "leaky"] = -1.5
    assert [f.feature for f in check_leakage(frame, ["leaky"], [], "label", 0.95)] == ["leaky"]


def test_single_feature_auc_matches_a_pairwise_count():
    rng = np.random.default_rng(4)
    values, label = rng.normal(size=300).round(1), rng.integers(0, 2, 300)
    positives, negatives = values[label == 1], values[label == 0]
    pairs = (positives[:, None] > negatives[None, :]).mean() + 0.5 * (positives[:, None] == negatives[None, :]).mean()
    assert abs(single_feature_auc(values, label) - max(pairs, 1 - pairs)) < 1e-12


def test_missing_values_that_give_the_label_away_are_caught():
    frame = training_frame()
    frame["missing_when_churned"] = np.where(frame["label"] == 1, np.nan, frame["noise"])
    findings = check_leakage(frame, ["missing_when_churned"], [], "label", 0.95)
    assert [f.feature for f in findings] == ["missing_when_churned"]
