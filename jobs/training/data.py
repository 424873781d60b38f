"""The rows a training sees: a snapshot split into training and evaluation rows, validation splits over the
training rows, the candidate feature sets and each one's encoded matrices.

Out-of-time data (event logs) validates on time folds: a fold validated at cutoff v fits only cutoffs whose labels
ended before v, so no fold learns from the future it is scored on; the evaluation rows are the snapshot's
out-of-time cutoff. Entity-level data has no event time, so it gets stratified folds and a stratified 20 % holdout
(the job says loudly that no out-of-time validation was possible).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from churnops.dataset import DatasetContract
from churnops.features import CUTOFF, LABEL, LABEL_AVAILABLE, event_feature_specs, model_feature_columns
from churnops.schema import FeatureSchema
from churnops.snapshots import SnapshotMetadata

# Features of the compact candidate set (besides entity attributes): recency, frequency, monetary, tenure. It
# extrapolates better than all features to customers older than those seen in training.
RFM_FAMILIES = ("recency", "frequency")
RFM_EXTRA = ("event_count_all", "amount_sum_all", "amount_mean_all")


@dataclass(frozen=True)
class Fold:
    fit_cutoffs: tuple[pd.Timestamp, ...]
    valid_cutoff: pd.Timestamp


@dataclass(frozen=True)
class Split:
    """One validation split over the training rows: fit on `fit`, validate on `valid` (boolean masks)."""

    name: str
    fit: np.ndarray
    valid: np.ndarray


@dataclass(frozen=True)
class EncodedView:
    """The training and evaluation rows encoded for one feature set."""

    schema: FeatureSchema
    x_train: np.ndarray
    x_eval: np.ndarray


def time_folds(train_cutoffs: list[pd.Timestamp], horizon_days: int, n_folds: int) -> list[Fold]:
    """Expanding-window folds: validate on each of the last `n_folds` cutoffs, fit on cutoffs whose labels ended
    before it (cutoff + horizon <= validation cutoff), so no fold learns from the future it is scored on."""
    horizon = pd.Timedelta(days=horizon_days)
    folds = []
    for valid in sorted(train_cutoffs)[-n_folds:]:
        fit = tuple(c for c in sorted(train_cutoffs) if c + horizon <= valid)
        if fit:
            folds.append(Fold(fit_cutoffs=fit, valid_cutoff=valid))
    if not folds:
        days = ", ".join(c.date().isoformat() for c in train_cutoffs)
        raise ValueError(
            f"no time fold possible: the training cutoffs ({days}) are "
            f"closer together than the {horizon_days}-day horizon; add earlier cutoffs to the dataset contract"
        )
    return folds


class TrainingData:
    """The snapshot split into training rows and evaluation rows, with validation splits and encodings.

    `splits` are the cross-validation splits the search scores trials on; `retro_splits` validate on every past
    cutoff a fold can be built for (the post-processing choices and the retro-test use them).
    """

    def __init__(
        self, frame: pd.DataFrame, metadata: SnapshotMetadata, contract: DatasetContract, cv_folds: int, seed: int
    ) -> None:
        self.numeric, self.categorical = model_feature_columns(contract)
        self.validation = metadata.validation
        self.horizon_days = contract.label.horizon_days
        self._split_rows(frame[frame[LABEL_AVAILABLE]].reset_index(drop=True), metadata, seed)
        self.y_train = self.train[LABEL].to_numpy(dtype=np.int64)
        self.y_eval = self.eval[LABEL].to_numpy(dtype=np.int64)
        self.splits, self.retro_splits = self._splits(cv_folds, seed)
        self.feature_sets = _feature_sets(contract, self.numeric, self.categorical)
        self._views: dict[str, EncodedView] = {}
        # What the row budget kept (churnops.jobs.training.sampling.TrainingSample), None when every row was read.
        self.sample: Any = None

    def _split_rows(self, labelled: pd.DataFrame, metadata: SnapshotMetadata, seed: int) -> None:
        if self.validation == "out_of_time":
            cutoffs = {role: [pd.Timestamp(d) for d in dates] for role, dates in metadata.cutoffs.items()}
            self.train = labelled[labelled[CUTOFF].isin(cutoffs["train"])].reset_index(drop=True)
            self.eval = labelled[labelled[CUTOFF].isin(cutoffs["out_of_time"])].reset_index(drop=True)
            self.train_cutoffs = sorted(cutoffs["train"])
            self.eval_cutoff: str | None = cutoffs["out_of_time"][0].date().isoformat()
        else:
            from sklearn.model_selection import train_test_split

            train_idx, eval_idx = train_test_split(
                np.arange(len(labelled)), test_size=0.2, stratify=labelled[LABEL], random_state=seed
            )
            self.train = labelled.iloc[np.sort(train_idx)].reset_index(drop=True)
            self.eval = labelled.iloc[np.sort(eval_idx)].reset_index(drop=True)
            self.train_cutoffs = sorted(pd.Timestamp(d) for d in metadata.cutoffs["train"])
            self.eval_cutoff = None
        if self.train.empty or self.eval.empty:
            raise ValueError(
                f"snapshot {metadata.snapshot_id} has no labelled rows for training ({len(self.train)}) or for "
                f"evaluation ({len(self.eval)})"
            )

    def _splits(self, cv_folds: int, seed: int) -> tuple[list[Split], list[Split]]:
        if self.validation == "out_of_time":
            assert self.horizon_days is not None

            def as_split(fold: Fold) -> Split:
                return Split(
                    name=fold.valid_cutoff.date().isoformat(),
                    fit=self.train[CUTOFF].isin(list(fold.fit_cutoffs)).to_numpy(),
                    valid=(self.train[CUTOFF] == fold.valid_cutoff).to_numpy(),
                )

            cv = [as_split(f) for f in time_folds(self.train_cutoffs, self.horizon_days, cv_folds)]
            retro = [as_split(f) for f in time_folds(self.train_cutoffs, self.horizon_days, len(self.train_cutoffs))]
            return cv, retro
        from sklearn.model_selection import StratifiedKFold

        folds = StratifiedKFold(n_splits=max(cv_folds, 3), shuffle=True, random_state=seed)
        splits = []
        for i, (fit_idx, valid_idx) in enumerate(folds.split(self.train, self.y_train)):
            fit, valid = np.zeros(len(self.train), bool), np.zeros(len(self.train), bool)
            fit[fit_idx], valid[valid_idx] = True, True
            splits.append(Split(name=f"fold-{i}", fit=fit, valid=valid))
        return splits, splits

    def view(self, feature_set: str) -> EncodedView:
        """The rows encoded for one feature set (the schema is fitted on the training rows; cached)."""
        if feature_set not in self._views:
            numeric, categorical = self.feature_sets[feature_set]
            schema = FeatureSchema.fit(self.train, numeric, categorical)
            self._views[feature_set] = EncodedView(
                schema, schema.encode_frame(self.train), schema.encode_frame(self.eval)
            )
        return self._views[feature_set]

    def all_rows_view(self, feature_set: str) -> EncodedView:
        """Training and evaluation rows together (`x_train`, labels `y_all`), the schema fitted on all of them: what
        an entity-data champion is refitted on after evaluation. `x_eval` keeps the evaluation rows, for the report."""
        numeric, categorical = self.feature_sets[feature_set]
        every_row = pd.concat([self.train, self.eval], ignore_index=True)
        schema = FeatureSchema.fit(every_row, numeric, categorical)
        return EncodedView(schema, schema.encode_frame(every_row), schema.encode_frame(self.eval))

    @property
    def y_all(self) -> np.ndarray:
        """The labels of `all_rows_view`'s rows: training rows, then evaluation rows."""
        return np.concatenate([self.y_train, self.y_eval])

    def summary(self) -> dict[str, Any]:
        """What the evaluation report says about the rows: validation kind, cutoffs and row counts."""
        return {
            "validation": self.validation,
            "evaluation_cutoff": self.eval_cutoff,
            "training_cutoffs": [c.date().isoformat() for c in self.train_cutoffs],
            "training_rows": len(self.train),
            "evaluation_rows": len(self.eval),
            "training_sample": None if self.sample is None else self.sample.as_record(),
        }


def _feature_sets(
    contract: DatasetContract, numeric: list[str], categorical: list[str]
) -> dict[str, tuple[list[str], list[str]]]:
    """`all` features, plus the compact `rfm` set when the contract has event features."""
    sets = {"all": (numeric, categorical)}
    event_specs = event_feature_specs(contract)
    rfm = [s.name for s in event_specs if s.family in RFM_FAMILIES or s.name in RFM_EXTRA]
    if rfm:
        event_names = {s.name for s in event_specs}
        entity_numeric = [c for c in numeric if c not in event_names]
        entity_categorical = [c for c in categorical if c != "most_frequent_event_type"]
        sets["rfm"] = (rfm + entity_numeric, entity_categorical)
    return sets


def leakage_findings(data: TrainingData, contract: DatasetContract) -> list[dict[str, Any]]:
    """The feature platform's leakage probes on the training rows (a single feature that separates the label)."""
    from churnops.leakage import check_leakage

    findings = check_leakage(
        data.train,
        data.numeric,
        data.categorical,
        threshold=contract.leakage.max_single_feature_auc,
        allowed=contract.leakage.allowed_features,
    )
    return [
        {"feature": f.feature, "probe": f.probe, "value": f.value, "allowed": f.allowed, "message": f.message}
        for f in findings
    ]
