"""The training job: model selection for one dataset, honestly measured, registered and gated.

1. **Search**: an Optuna study (seeded TPE, median pruning, trial/time budget) over LightGBM — hyperparameters,
   class weighting (`scale_pos_weight`) and the feature set (all features, or a compact RFM set that extrapolates
   better to customers older than those seen in training) — each trial a nested MLflow run. Cross-validation
   stays inside the training period: time folds where each fold fits only cutoffs whose labels ended before its
   validation cutoff (or stratified folds for entity-level data without timestamps).
2. **Post-processing**, chosen on the time folds, never on the evaluation data: a blend weight with the BG/NBD
   purchase probability (event data), a calibration map (none / Platt / isotonic, kept only if it lowers the
   cross-fitted Brier score on the last fold), and the decision threshold for the configured objective.
3. **Evaluation** on the out-of-time cutoff (or a stratified holdout): every metric of `jobs.evaluate` for the new
   model, the re-scored champion, a logistic-regression candidate and the recency/BG/NBD baselines; a retro-test
   of Gini across past cutoffs; plots, a model card and `evaluation.json` (`jobs.report`).
4. **Registry**: the LightGBM model is registered (with its post-processing in the metadata, so scoring and
   serving load exactly what was evaluated) and aliased `challenger`; the gate moves `champion` only when the
   sanity checks pass and it beats the champion on the same customers by the configured margin.

Serving loads LightGBM boosters only, so the registered model is always the best LightGBM; logistic regression
and the baselines are reported next to it (docs/model-selection.md).

Resumable: the study lives in an RDB keyed by dataset, snapshot and seed; a killed task re-enters the same study
and MLflow parent run, continues the trials, and registers exactly once (the version is remembered in the study
until its gate has run). Nothing touches the aliases before the search and evaluation are complete.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from churnops.config import Settings
from churnops.dataset import DatasetContract
from churnops.features import CUTOFF, LABEL, LABEL_AVAILABLE, event_feature_specs, model_feature_columns
from churnops.postprocess import ScorePostprocess, apply_calibration
from churnops.registry import (
    CHALLENGER_ALIAS,
    CHAMPION_ALIAS,
    POSTPROCESS_KEY,
    LoadedModel,
    champion_or_none,
    configure_mlflow,
    ensure_experiment,
    load_model_version,
)
from churnops.schema import FeatureSchema
from churnops.snapshots import SnapshotMetadata, latest_snapshot_dir, load_snapshot
from jobs.evaluate import binary_metrics, choose_threshold, select_calibration, stability

log = logging.getLogger(__name__)

TrialCallback = Callable[[int, int, float | None], None]

# Study user attributes that make a retried task idempotent.
PARENT_RUN_ATTR = "mlflow_parent_run_id"
REGISTERED_ATTR = "registered_version"
GATED_ATTR = "gated_version"
BLEND_WEIGHTS = tuple(round(w, 1) for w in np.arange(0.0, 1.0, 0.1))
# Features of the compact candidate set (besides entity attributes): recency, frequency, monetary, tenure.
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
class PromotionDecision:
    promoted: bool
    reason: str
    champion_version: str | None
    champion_auc: float | None
    sanity_checks: dict[str, bool] = field(default_factory=dict)


@dataclass(frozen=True)
class TrainingResult:
    model_name: str
    model_version: str
    run_id: str
    best_params: dict[str, Any]
    out_of_time_metrics: dict[str, float]
    threshold: float
    n_trials: int
    decision: PromotionDecision
    snapshot_id: str
    evaluation_path: Path | None = None
    evaluation: dict[str, Any] = field(default_factory=dict)


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
        raise ValueError(
            f"no time fold possible: the training cutoffs {[c.date() for c in train_cutoffs]} are closer together "
            f"than the {horizon_days}-day horizon; add earlier cutoffs to the dataset contract"
        )
    return folds


def _base_params(seed: int) -> dict[str, Any]:
    return {
        "objective": "binary",
        "metric": "auc",
        "verbosity": -1,
        "seed": seed,
        "deterministic": True,
        "force_col_wise": True,
        # One thread: on a shared 2-core machine LightGBM's OpenMP threads spin against other processes and a
        # 2-thread fit measured 10x slower than a 1-thread one under load (and no faster on an idle machine's
        # small folds). Also keeps results identical whatever the core count.
        "num_threads": 1,
        "bagging_freq": 1,
    }


def _suggest_params(trial: Any, feature_sets: list[str]) -> dict[str, Any]:
    return {
        "feature_set": trial.suggest_categorical("feature_set", feature_sets),
        "learning_rate": trial.suggest_float("learning_rate", 0.01, 0.2, log=True),
        "num_leaves": trial.suggest_int("num_leaves", 4, 64, log=True),
        "min_child_samples": trial.suggest_int("min_child_samples", 10, 500, log=True),
        "feature_fraction": trial.suggest_float("feature_fraction", 0.4, 1.0),
        "bagging_fraction": trial.suggest_float("bagging_fraction", 0.5, 1.0),
        "lambda_l2": trial.suggest_float("lambda_l2", 1e-3, 10.0, log=True),
        # Class imbalance: up-weight the positive class; calibration afterwards restores probabilities.
        "scale_pos_weight": trial.suggest_float("scale_pos_weight", 1.0, 10.0, log=True),
    }


def _git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent, check=True
        )
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


@dataclass(frozen=True)
class _View:
    """The training and evaluation rows encoded for one feature set."""

    schema: FeatureSchema
    x_train: np.ndarray
    x_eval: np.ndarray


class _Data:
    """The snapshot split into training rows and evaluation rows, with validation splits and encodings."""

    def __init__(
        self, frame: pd.DataFrame, metadata: SnapshotMetadata, contract: DatasetContract, cv_folds: int, seed: int
    ) -> None:
        self.numeric, self.categorical = model_feature_columns(contract)
        labelled = frame[frame[LABEL_AVAILABLE]].reset_index(drop=True)
        self.validation = metadata.validation
        if self.validation == "out_of_time":
            cutoffs = {role: [pd.Timestamp(d) for d in dates] for role, dates in metadata.cutoffs.items()}
            self.train = labelled[labelled[CUTOFF].isin(cutoffs["train"])].reset_index(drop=True)
            self.eval = labelled[labelled[CUTOFF].isin(cutoffs["out_of_time"])].reset_index(drop=True)
            self.train_cutoffs = sorted(cutoffs["train"])
            self.eval_cutoff: str | None = cutoffs["out_of_time"][0].date().isoformat()
        else:
            # Entity-level data: no event time, so no out-of-time validation is possible (said loudly below).
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
        self.y_train = self.train[LABEL].to_numpy(dtype=np.int64)
        self.y_eval = self.eval[LABEL].to_numpy(dtype=np.int64)
        self.horizon_days = contract.label.horizon_days
        self.splits, self.retro_splits = self._splits(cv_folds, seed)
        self.feature_sets = {"all": (self.numeric, self.categorical)}
        rfm = [s.name for s in event_feature_specs(contract) if s.family in RFM_FAMILIES or s.name in RFM_EXTRA]
        if rfm:
            entity_numeric = [c for c in self.numeric if c not in {s.name for s in event_feature_specs(contract)}]
            entity_categorical = [c for c in self.categorical if c != "most_frequent_event_type"]
            self.feature_sets["rfm"] = (rfm + entity_numeric, entity_categorical)
        self._views: dict[str, _View] = {}

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

    def view(self, feature_set: str) -> _View:
        if feature_set not in self._views:
            numeric, categorical = self.feature_sets[feature_set]
            schema = FeatureSchema.fit(self.train, numeric, categorical)
            self._views[feature_set] = _View(schema, schema.encode_frame(self.train), schema.encode_frame(self.eval))
        return self._views[feature_set]


def _fit(view: _View, y: np.ndarray, params: dict[str, Any], mask: np.ndarray, rounds: int, valid: Any = None) -> Any:
    """Train a booster on the masked training rows; with `valid` = (x, y), stop early on it."""
    import lightgbm as lgb

    train_set = lgb.Dataset(
        view.x_train[mask],
        y[mask],
        feature_name=view.schema.columns,
        categorical_feature=view.schema.categorical_indices,
        free_raw_data=False,
    )
    if valid is None:
        return lgb.train(params, train_set, num_boost_round=rounds)
    valid_set = lgb.Dataset(valid[0], valid[1], reference=train_set)
    return lgb.train(
        params,
        train_set,
        num_boost_round=rounds,
        valid_sets=[valid_set],
        callbacks=[lgb.early_stopping(stopping_rounds=50, verbose=False)],
    )


def _booster_params(seed: int, trial_params: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """LightGBM parameters and the feature set from a trial's parameters."""
    params = {k: v for k, v in trial_params.items() if k != "feature_set"}
    return {**_base_params(seed), **params}, trial_params.get("feature_set", "all")


def _cross_validate(data: _Data, params: dict[str, Any], feature_set: str, trial: Any = None) -> dict[str, Any]:
    import optuna
    from sklearn.metrics import roc_auc_score

    view = data.view(feature_set)
    aucs, rounds = [], []
    for step, split in enumerate(data.splits):
        x_valid, y_valid = view.x_train[split.valid], data.y_train[split.valid]
        booster = _fit(view, data.y_train, params, split.fit, rounds=1000, valid=(x_valid, y_valid))
        scores = booster.predict(x_valid, num_iteration=booster.best_iteration)
        aucs.append(float(roc_auc_score(y_valid, scores)))
        rounds.append(int(booster.best_iteration or booster.current_iteration()))
        if trial is not None:
            trial.report(float(np.mean(aucs)), step)
            if trial.should_prune():
                raise optuna.TrialPruned()
    return {"auc": float(np.mean(aucs)), "fold_aucs": aucs, "rounds": max(1, int(np.mean(rounds)))}


# ---------------------------------------------------------------------------------------------------------------
# Post-processing chosen on the folds: BG/NBD blend, calibration, threshold
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _FoldPredictions:
    """The chosen configuration refitted (fixed rounds) on each retro split and scored on its validation rows."""

    split: Split
    labels: np.ndarray
    raw: np.ndarray
    bgnbd: np.ndarray | None


def _bgnbd_scores(frame: pd.DataFrame, contract: DatasetContract) -> tuple[np.ndarray, dict[str, float]] | None:
    """BG/NBD label-oriented scores for one cutoff's rows, fitted on those rows' history (no labels used)."""
    from jobs.baselines import bgnbd_purchase_probability, fit_bgnbd, has_rfm, rfm_from_features

    if contract.label.horizon_days is None or not has_rfm(frame):
        return None
    rfm = rfm_from_features(frame)
    params = fit_bgnbd(rfm)
    buys = bgnbd_purchase_probability(params, rfm, contract.label.horizon_days)
    return (1.0 - buys if contract.label.kind == "churn" else buys), params.as_dict()


def _choose_blend(folds: list[_FoldPredictions]) -> tuple[float, dict[str, float]]:
    """The BG/NBD blend weight with the best mean ROC AUC over the retro folds (0 = LightGBM alone)."""
    from sklearn.metrics import roc_auc_score

    if any(f.bgnbd is None for f in folds):
        return 0.0, {}
    by_weight = {
        str(w): float(np.mean([roc_auc_score(f.labels, (1 - w) * f.raw + w * f.bgnbd) for f in folds]))  # type: ignore[operator]
        for w in BLEND_WEIGHTS
    }
    best = max(BLEND_WEIGHTS, key=lambda w: (round(by_weight[str(w)], 6), -w))
    return float(best), by_weight


# ---------------------------------------------------------------------------------------------------------------
# Logistic-regression candidate
# ---------------------------------------------------------------------------------------------------------------


def _signed_log1p(x: np.ndarray) -> np.ndarray:
    # Counts and amounts are heavy-tailed; a linear model needs them on a log scale.
    return np.sign(x) * np.log1p(np.abs(x))


def _logistic_pipeline(numeric: list[str], categorical: list[str]) -> Any:
    """Median imputation with missing-indicators, log scaling, standardisation, one-hot; balanced class weights."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler

    numeric_steps = Pipeline(
        [
            ("impute", SimpleImputer(strategy="median", add_indicator=True, keep_empty_features=True)),
            ("log", FunctionTransformer(_signed_log1p)),
            ("scale", StandardScaler()),
        ]
    )
    encode = ColumnTransformer(
        [("numeric", numeric_steps, numeric), ("categorical", OneHotEncoder(handle_unknown="ignore"), categorical)]
    )
    model = LogisticRegression(C=1.0, class_weight="balanced", max_iter=2000)
    return Pipeline([("encode", encode), ("model", model)])


def _logistic_frame(frame: pd.DataFrame, numeric: list[str], categorical: list[str]) -> pd.DataFrame:
    out = frame[numeric].astype("float64")
    for name in categorical:
        out[name] = frame[name].astype("object").where(frame[name].notna(), "<missing>").astype(str)
    return out


def _logistic_candidate(data: _Data) -> dict[str, Any]:
    """Cross-validated ROC AUC on the same splits as LightGBM, then a refit on all training rows, scored on eval."""
    from sklearn.metrics import roc_auc_score
    from threadpoolctl import threadpool_limits

    numeric, categorical = data.numeric, data.categorical
    x_train = _logistic_frame(data.train, numeric, categorical)
    fold_aucs = []
    # One BLAS thread, for the same reason as LightGBM's num_threads=1.
    with threadpool_limits(limits=1):
        for split in data.splits:
            model = _logistic_pipeline(numeric, categorical).fit(x_train[split.fit], data.y_train[split.fit])
            valid_scores = model.predict_proba(x_train[split.valid])[:, 1]
            fold_aucs.append(float(roc_auc_score(data.y_train[split.valid], valid_scores)))
        model = _logistic_pipeline(numeric, categorical).fit(x_train, data.y_train)
        scores = model.predict_proba(_logistic_frame(data.eval, numeric, categorical))[:, 1]
    return {"cv_roc_auc": float(np.mean(fold_aucs)), "scores": scores}


# ---------------------------------------------------------------------------------------------------------------
# The job
# ---------------------------------------------------------------------------------------------------------------


def _open_study(settings: Settings, contract: DatasetContract, metadata: SnapshotMetadata, seed: int) -> Any:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    settings.home.mkdir(parents=True, exist_ok=True)
    # Heartbeats let a resumed study mark the trial a killed process left RUNNING as FAILED (after the grace period).
    storage = optuna.storages.RDBStorage(settings.optuna_storage, heartbeat_interval=10, grace_period=60)
    return optuna.create_study(
        study_name=f"{contract.name}-{metadata.snapshot_id}-seed{seed}",
        storage=storage,
        load_if_exists=True,
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=0),
    )


def _close_interrupted_trial_runs(experiment_id: str, parent_run_id: str) -> None:
    """Nested trial runs a killed process left RUNNING are marked KILLED, so MLflow shows what happened."""
    import mlflow
    from mlflow import MlflowClient

    stale = mlflow.search_runs(
        experiment_ids=[experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}' and attributes.status = 'RUNNING'",
        output_format="list",
    )
    for run in stale:
        MlflowClient().set_terminated(run.info.run_id, status="KILLED")


def train(
    settings: Settings,
    contract: DatasetContract,
    snapshot_dir: Path | None = None,
    n_trials: int | None = None,
    on_trial: TrialCallback | None = None,
) -> TrainingResult:
    """Search, fit, evaluate against champion and baselines, register, and run the champion gate for one dataset."""
    import mlflow

    snapshot_dir = snapshot_dir or latest_snapshot_dir(settings, contract.name)
    frame, metadata = load_snapshot(snapshot_dir)
    seed = settings.training.seed
    data = _Data(frame, metadata, contract, settings.training.cv_folds, seed)
    if data.validation != "out_of_time":
        log.warning(
            "dataset %s has no event time: NO OUT-OF-TIME VALIDATION IS POSSIBLE; evaluating on a stratified 20 %% "
            "holdout instead, which overstates how the model will do on future customers",
            contract.name,
        )
    total_trials = n_trials or settings.training.n_trials
    leakage = _leakage_findings(data, contract)

    configure_mlflow(settings)
    experiment_id = ensure_experiment(settings, contract)
    study = _open_study(settings, contract, metadata, seed)
    parent_run_id = study.user_attrs.get(PARENT_RUN_ATTR)
    if parent_run_id:
        _close_interrupted_trial_runs(experiment_id, parent_run_id)
    # A retried task re-enters the same parent run, so its trials stay under one training in MLflow.
    parent = mlflow.start_run(
        run_id=parent_run_id, experiment_id=experiment_id, run_name=None if parent_run_id else f"train-{contract.name}"
    )
    with parent:
        run_id = parent.info.run_id
        study.set_user_attr(PARENT_RUN_ATTR, run_id)
        git_commit = _git_commit()
        mlflow.set_tags(
            {
                "churnops.dataset": contract.name,
                "churnops.snapshot_hash": metadata.content_hash,
                "churnops.git_commit": git_commit,
                "churnops.kind": "training",
                "churnops.validation": data.validation,
            }
        )
        _search(study, data, seed, total_trials, settings.training.timeout_seconds, experiment_id, on_trial)
        selected = _select_and_evaluate(settings, contract, data, study, seed)
        champion = _current_champion(contract.model_name)
        champion_scores = _rescore_champion(champion, data)
        version = _register(study, selected, data, contract, metadata, run_id, git_commit)
        decision = _champion_gate(
            settings, contract, data, version, selected["metrics"], champion, champion_scores, leakage, run_id
        )
        study.set_user_attr(GATED_ATTR, version)

        from jobs.report import build_evaluation, write_report

        evaluation = build_evaluation(
            contract=contract,
            metadata=metadata,
            data_summary={
                "validation": data.validation,
                "evaluation_cutoff": data.eval_cutoff,
                "training_cutoffs": [c.date().isoformat() for c in data.train_cutoffs],
                "training_rows": len(data.train),
                "evaluation_rows": len(data.eval),
            },
            model_version=version,
            run_id=run_id,
            git_commit=git_commit,
            selected=selected,
            champion=champion,
            champion_scores=champion_scores,
            labels=data.y_eval,
            decision=decision,
            leakage=leakage,
            settings=settings,
        )
        report_dir = settings.home / "reports" / contract.name / run_id
        evaluation_path = write_report(
            report_dir,
            evaluation,
            labels=data.y_eval,
            scores={
                "new model": selected["scores"],
                **({f"champion v{champion.version}": champion_scores} if champion_scores is not None else {}),
                **selected["baseline_scores"],
            },
            booster=selected["booster"],
            x_eval=selected["view"].x_eval,
            feature_names=selected["view"].schema.columns,
            seed=seed,
        )
        mlflow.log_artifacts(str(report_dir), artifact_path="report")
        mlflow.set_tags(
            {
                "churnops.promoted": str(decision.promoted).lower(),
                "churnops.promotion_reason": decision.reason,
                "churnops.model_version": version,
                "churnops.evaluation_json": str(evaluation_path),
            }
        )

    log.info(
        "trained %s v%s: out-of-time ROC AUC %.4f; %s; evaluation report: %s",
        contract.model_name,
        version,
        selected["metrics"]["roc_auc"],
        decision.reason,
        evaluation_path,
    )
    return TrainingResult(
        model_name=contract.model_name,
        model_version=version,
        run_id=run_id,
        best_params=dict(study.best_trial.params),
        out_of_time_metrics=selected["metrics"],
        threshold=selected["threshold"],
        n_trials=len(study.trials),
        decision=decision,
        snapshot_id=metadata.snapshot_id,
        evaluation_path=evaluation_path,
        evaluation=evaluation,
    )


def _leakage_findings(data: _Data, contract: DatasetContract) -> list[dict[str, Any]]:
    """The feature platform's leakage probes on the training rows (a single feature that separates the label)."""
    from churnops.features import check_leakage

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


def _search(
    study: Any,
    data: _Data,
    seed: int,
    total_trials: int,
    timeout_seconds: int | None,
    experiment_id: str,
    on_trial: TrialCallback | None,
) -> None:
    """Run the trials still missing from the study; each trial is a nested MLflow run."""
    import mlflow
    import optuna

    feature_sets = list(data.feature_sets)

    def objective(trial: Any) -> float:
        params, feature_set = _booster_params(seed, _suggest_params(trial, feature_sets))
        with mlflow.start_run(run_name=f"trial-{trial.number}", nested=True, experiment_id=experiment_id):
            mlflow.log_params(trial.params)
            try:
                result = _cross_validate(data, params, feature_set, trial)
            except optuna.TrialPruned:
                mlflow.set_tag("optuna.state", "pruned")
                raise
            trial.set_user_attr("rounds", result["rounds"])
            mlflow.log_metrics(
                {"cv_roc_auc": result["auc"], "rounds": result["rounds"]}
                | {f"fold{i}_roc_auc": a for i, a in enumerate(result["fold_aucs"])}
            )
            mlflow.set_tag("optuna.state", "complete")
        return result["auc"]

    def report(study: Any, trial: Any) -> None:
        if on_trial is not None:
            on_trial(len(study.trials), total_trials, trial.value)

    done = sum(t.state.is_finished() for t in study.trials)
    if done < total_trials:
        study.optimize(objective, n_trials=total_trials - done, timeout=timeout_seconds, callbacks=[report])
    if not any(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials):
        raise RuntimeError("no Optuna trial completed; raise the trial or time budget")


def _select_and_evaluate(
    settings: Settings, contract: DatasetContract, data: _Data, study: Any, seed: int
) -> dict[str, Any]:
    """Refit the best trial, choose blend/calibration/threshold on the folds, and score the evaluation rows."""
    import mlflow

    from jobs.baselines import score_baselines

    best = study.best_trial
    params, feature_set = _booster_params(seed, best.params)
    rounds = int(best.user_attrs["rounds"])
    view = data.view(feature_set)

    folds = []
    for split in data.retro_splits:
        booster = _fit(view, data.y_train, params, split.fit, rounds)
        bgnbd = _bgnbd_scores(data.train[split.valid], contract) if data.validation == "out_of_time" else None
        folds.append(
            _FoldPredictions(
                split, data.y_train[split.valid], booster.predict(view.x_train[split.valid]), bgnbd and bgnbd[0]
            )
        )
    blend_weight, blend_auc_by_weight = _choose_blend(folds)

    def blended(raw: np.ndarray, bgnbd: np.ndarray | None) -> np.ndarray:
        return raw if blend_weight == 0 or bgnbd is None else (1 - blend_weight) * raw + blend_weight * bgnbd

    last = folds[-1]
    last_scores = blended(last.raw, last.bgnbd)
    calibration, brier_by_method = select_calibration(last.labels, last_scores, seed)
    objective = settings.training.threshold_objective
    top_fraction = float(settings.training.threshold_top_fraction)
    threshold = choose_threshold(last.labels, apply_calibration(calibration, last_scores), objective, top_fraction)

    booster = _fit(view, data.y_train, params, np.ones(len(data.y_train), dtype=bool), rounds)
    raw_eval = booster.predict(view.x_eval)
    eval_bgnbd = _bgnbd_scores(data.eval, contract)
    uncalibrated = blended(raw_eval, eval_bgnbd and eval_bgnbd[0])
    scores = apply_calibration(calibration, uncalibrated)
    metrics = binary_metrics(data.y_eval, scores)

    retro = {f.split.name: binary_metrics(f.labels, blended(f.raw, f.bgnbd))["gini"] for f in folds}
    if data.eval_cutoff is not None:
        retro[data.eval_cutoff] = metrics["gini"]

    baselines = score_baselines(data.train, data.eval, contract, bgnbd_params=eval_bgnbd and eval_bgnbd[1])
    logistic = _logistic_candidate(data)
    baseline_scores = {"logistic_regression": logistic["scores"], **baselines.scores}

    postprocess: dict[str, Any] = {"calibration": calibration}
    if blend_weight > 0 and eval_bgnbd is not None:
        postprocess["blend"] = {
            "weight": blend_weight,
            "bgnbd": eval_bgnbd[1],
            "horizon_days": contract.label.horizon_days,
            "label": contract.label.kind,
        }
    mlflow.log_params({f"best_{k}": v for k, v in best.params.items()} | {"best_rounds": rounds})
    mlflow.log_metrics(
        {f"oot_{k}": v for k, v in metrics.items()}
        | {f"oot_uncalibrated_{k}": v for k, v in binary_metrics(data.y_eval, uncalibrated).items()}
        | {
            f"baseline_{name}_{k}": v
            for name, s in baseline_scores.items()
            for k, v in binary_metrics(data.y_eval, s).items()
            if k in ("roc_auc", "gini", "pr_auc", "brier", "precision_at_10")
        }
        | {
            "best_cv_roc_auc": best.value,
            "logistic_regression_cv_roc_auc": logistic["cv_roc_auc"],
            "threshold": threshold,
            "blend_weight": blend_weight,
            "n_trials": len(study.trials),
        }
        | {f"retro_{k}": v for k, v in stability(retro).items()}
    )
    mlflow.set_tag("churnops.calibration", calibration["method"])
    return {
        "best_params": dict(best.params),
        "feature_set": feature_set,
        "rounds": rounds,
        "cv_roc_auc": float(best.value),
        "n_trials": len(study.trials),
        "booster": booster,
        "view": view,
        "scores": scores,
        "metrics": metrics,
        "uncalibrated_metrics": binary_metrics(data.y_eval, uncalibrated),
        "threshold": threshold,
        "threshold_objective": objective if objective == "f1" else f"top {top_fraction:.0%}",
        "calibration": calibration,
        "calibration_brier_by_method": brier_by_method,
        "blend_weight": blend_weight,
        "blend_auc_by_weight": blend_auc_by_weight,
        "postprocess": postprocess,
        "retro_gini": retro,
        "logistic_regression_cv_roc_auc": logistic["cv_roc_auc"],
        "baseline_scores": baseline_scores,
        "baseline_details": baselines.details,
    }


def _current_champion(name: str) -> LoadedModel | None:
    champion_version = champion_or_none(name)
    if champion_version is None:
        return None
    try:
        return load_model_version(name, str(champion_version.version))
    except Exception as error:  # its artifact is unreadable
        log.warning("current champion of %s cannot be loaded (%s); treating as absent", name, error)
        return None


def _rescore_champion(champion: LoadedModel | None, data: _Data) -> np.ndarray | None:
    """The champion's scores on the same evaluation rows (None if it needs features the data no longer has)."""
    if champion is None or set(champion.schema.columns) - set(data.eval.columns):
        return None
    return champion.predict_matrix(champion.schema.encode_frame(data.eval))


def _register(
    study: Any,
    selected: dict[str, Any],
    data: _Data,
    contract: DatasetContract,
    metadata: SnapshotMetadata,
    run_id: str,
    git_commit: str,
) -> str:
    """Log and register the model once: a retry after a crash between registration and gate reuses the version."""
    import lightgbm
    import mlflow
    from mlflow.models import infer_signature

    from churnops.banding import band_score_cutoffs

    pending = study.user_attrs.get(REGISTERED_ATTR)
    if pending is not None and pending != study.user_attrs.get(GATED_ATTR):
        log.info("re-using model version %s registered by the interrupted run of this study", pending)
        return str(pending)
    view = selected["view"]
    example = pd.DataFrame(view.x_eval[:5], columns=view.schema.columns)
    model_metadata = {
        "feature_schema": view.schema.to_dict(),
        "threshold": selected["threshold"],
        POSTPROCESS_KEY: selected["postprocess"],
        "risk_band_cutoffs": band_score_cutoffs(selected["scores"]),
        "dataset": contract.name,
        "snapshot_hash": metadata.content_hash,
        "validation": data.validation,
        "out_of_time_cutoff": data.eval_cutoff,
        "out_of_time_metrics": selected["metrics"],
        "training_run_id": run_id,
        "git_commit": git_commit,
        "best_params": selected["best_params"],
    }
    # Check the post-processing round-trips before it is registered: scoring and serving rebuild it from metadata.
    ScorePostprocess.from_metadata(selected["postprocess"], view.schema.columns)
    info = mlflow.lightgbm.log_model(
        selected["booster"],
        name="model",
        signature=infer_signature(example, selected["scores"][:5]),
        input_example=example,
        registered_model_name=contract.model_name,
        metadata=model_metadata,
        pip_requirements=[f"lightgbm=={lightgbm.__version__}"],
    )
    version = str(info.registered_model_version)
    study.set_user_attr(REGISTERED_ATTR, version)
    return version


def _champion_gate(
    settings: Settings,
    contract: DatasetContract,
    data: _Data,
    version: str,
    metrics: dict[str, float],
    champion: LoadedModel | None,
    champion_scores: np.ndarray | None,
    leakage: list[dict[str, Any]],
    run_id: str,
) -> PromotionDecision:
    """Mark the new version `challenger`; move `champion` to it only if the sanity checks pass and it beats the
    champion re-scored on the same evaluation rows by the configured margin. Records the decision everywhere."""
    from mlflow import MlflowClient

    client = MlflowClient()
    name = contract.model_name
    new_auc = metrics["roc_auc"]
    floor, margin = settings.training.min_auc, settings.training.promotion_margin
    blocking = [f["feature"] for f in leakage if not f["allowed"]]
    checks = {"leakage_probes_clean": not blocking, "auc_above_floor": new_auc >= floor}
    champion_version = champion.version if champion is not None else None
    champion_auc = binary_metrics(data.y_eval, champion_scores)["roc_auc"] if champion_scores is not None else None
    if blocking:
        promoted, reason = False, f"leakage probes flagged {blocking}; not promoted until the features are fixed"
    elif not checks["auc_above_floor"]:
        promoted, reason = False, f"evaluation ROC AUC {new_auc:.4f} is below the floor {floor}"
    elif champion is None:
        promoted, reason = True, "no champion yet"
    elif champion_auc is None:
        promoted, reason = True, f"champion v{champion.version} needs features the data no longer has"
    else:
        promoted = new_auc > champion_auc + margin
        verdict = "beats" if promoted else "does not beat"
        reason = (
            f"evaluation ROC AUC {new_auc:.4f} {verdict} champion v{champion.version}'s {champion_auc:.4f} "
            f"on the same customers by more than {margin}"
        )
    decision = PromotionDecision(promoted, reason, champion_version, champion_auc, checks)
    # The database row comes before the alias moves: a retry after a failed write re-decides from the same state.
    if settings.database_url is not None:
        _record_in_database(settings, contract, data, version, metrics, champion, champion_auc, decision, run_id)
    client.set_registered_model_alias(name, CHALLENGER_ALIAS, version)
    if promoted:
        client.set_registered_model_alias(name, CHAMPION_ALIAS, version)
    for key, value in {
        "promoted": str(promoted).lower(),
        "promotion_reason": reason,
        "decided_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "sanity_checks": ",".join(f"{k}={str(v).lower()}" for k, v in checks.items()),
    }.items():
        client.set_model_version_tag(name, version, key, value)
    return decision


def _record_in_database(
    settings: Settings,
    contract: DatasetContract,
    data: _Data,
    version: str,
    metrics: dict[str, float],
    champion: LoadedModel | None,
    champion_auc: float | None,
    decision: PromotionDecision,
    run_id: str,
) -> None:
    """One promotion-decision row and the evaluation metrics of both models in the platform's PostgreSQL."""
    from churnops import db

    eval_cutoff = dt.date.fromisoformat(data.eval_cutoff) if data.eval_cutoff else None
    with contextlib.closing(db.connect(settings)) as conn:
        db.migrate(conn)
        if eval_cutoff is not None:
            db.write_model_evaluation(
                conn,
                model_name=contract.model_name,
                model_version=version,
                dataset=contract.name,
                eval_cutoff=eval_cutoff,
                metrics=metrics,
                mlflow_run_id=run_id,
            )
        db.write_promotion_decision(
            conn,
            dataset=contract.name,
            model_name=contract.model_name,
            challenger_version=version,
            champion_version=champion.version if champion is not None else None,
            promoted=decision.promoted,
            reason=decision.reason,
            metric="roc_auc",
            challenger_value=metrics["roc_auc"],
            champion_value=champion_auc,
            margin=settings.training.promotion_margin,
            eval_cutoff=eval_cutoff,
            mlflow_run_id=run_id,
        )
