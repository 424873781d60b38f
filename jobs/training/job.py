"""The training job for one dataset: search, select, evaluate, register and gate, wired in order.

1. **Search** (`search`): an Optuna study over LightGBM, each trial a nested MLflow run, cross-validated inside the
   training period only (`data`).
2. **Selection** (`selection`, `postprocess`, `candidates`): the family with the best cross-validated ROC AUC
   (LightGBM's best trial or the logistic regression) refitted; BG/NBD blend, calibration and threshold chosen on
   the folds; the model, the other family and the baselines measured on the evaluation rows; on entity data the
   choice refitted on every labelled row.
3. **Registry** (`registration`): the chosen model is registered once and aliased `challenger`.
4. **Gate** (`gate`, `champion`): `champion` moves only when the pure promotion rules say so; the decision is
   recorded in MLflow, `evaluation.json` and PostgreSQL.

Resumable: a killed task re-enters the same study and MLflow parent run, continues the trials, and registers
exactly once. Nothing touches the aliases before the search and evaluation are complete. A snapshot with nothing
new to learn (`unchanged`) is not trained at all.
"""

from __future__ import annotations

import logging
import subprocess
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from churnops.config import Settings
from churnops.dataset import DatasetContract
from churnops.jobs.survival.pipeline import train_survival_model
from churnops.jobs.training.champion import champion_for_comparison
from churnops.jobs.training.data import TrainingData, leakage_findings
from churnops.jobs.training.gate import Champion, ChampionScores, NoChampion, PromotionDecision, decide_promotion
from churnops.jobs.training.registration import GATED_ATTR, apply_decision, gate_metrics, register_model
from churnops.jobs.training.sampling import over_budget, sample_with_session
from churnops.jobs.training.search import (
    PARENT_RUN_ATTR,
    TrialCallback,
    close_interrupted_trial_runs,
    open_study,
    run_search,
)
from churnops.jobs.training.selection import select_and_evaluate
from churnops.jobs.training.unchanged import learning_key, record_skip, tag_learning_key, version_trained_on
from churnops.metrics import evaluation_label
from churnops.registry import configure_mlflow, ensure_experiment
from churnops.snapshot_files import training_cutoffs
from churnops.snapshots import SnapshotMetadata, latest_snapshot_dir, load_snapshot, read_metadata

log = logging.getLogger(__name__)


class ChampionUnavailableError(RuntimeError):
    """The champion exists but could not be loaded or scored: the gate refused, and the training fails so that
    someone restores the champion (or moves the alias by hand) instead of the platform training blind."""


@dataclass(frozen=True)
class TrainingResult:
    model_name: str
    model_version: str
    run_id: str
    best_params: dict[str, Any]
    # Measured on the evaluation rows: a later cutoff, or the holdout of entity data (see `validation`).
    evaluation_metrics: dict[str, float]
    threshold: float
    n_trials: int
    decision: PromotionDecision | None  # None when skipped
    snapshot_id: str
    evaluation_path: Path | None = None
    evaluation: dict[str, Any] = field(default_factory=dict)
    # True when the snapshot's training rows are those a registered version already learned from: nothing ran.
    skipped: bool = False
    skip_reason: str = ""
    # What the evaluation rows are: "out_of_time" or "stratified_holdout" (churnops.metrics.evaluation_label).
    validation: str = "out_of_time"
    # The value model's training (churnops.jobs.value.pipeline), when the contract has a `value` section.
    value: Any = None


def git_commit() -> str:
    """The checked-out commit of this code, or "unknown" outside a git checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent, check=True
        )
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def train(
    settings: Settings,
    contract: DatasetContract,
    snapshot_dir: Path | None = None,
    n_trials: int | None = None,
    on_trial: TrialCallback | None = None,
    reason: str | None = None,
) -> TrainingResult:
    """The churn model's training, then the survival and value models' when the contract asks for them (each its own
    gate)."""
    # Imported here: the value pipeline reuses this package's learning-key helpers (an import cycle at load time).
    from churnops.jobs.value.pipeline import train_value_step

    if not contract.has_event_time:
        # The user's table is the whole input of entity-level data: a table that no longer fits its contract (say,
        # edited since the feature run) fails here in seconds, with the column named, rather than inside the fit.
        from churnops.jobs.source_check import require_clean_sources

        require_clean_sources(contract)
    data, metadata = _training_data(settings, contract, snapshot_dir)
    configure_mlflow(settings)
    churn = _train_churn_model(settings, contract, data, metadata, n_trials, on_trial, reason)
    # After the churn model, so a failure of the survival model never costs the churn model's training.
    train_survival_model(settings, contract, data, metadata)  # no-op without the contract's `survival:` section
    return replace(churn, value=train_value_step(settings, contract, snapshot_dir))


def _train_churn_model(
    settings: Settings,
    contract: DatasetContract,
    data: TrainingData,
    metadata: SnapshotMetadata,
    n_trials: int | None,
    on_trial: TrialCallback | None,
    reason: str | None,
) -> TrainingResult:
    """Search, fit, evaluate against champion and baselines, register, and run the champion gate for one dataset.

    Skips (recorded in MLflow) when a registered version learned from the same training rows. Raises
    ChampionUnavailableError, after recording the refusal, when a champion exists but cannot be scored, and
    SourceCheckError when an entity-level dataset's table does not fit its contract.
    """
    search = settings.training.model_copy(update={"n_trials": n_trials or settings.training.n_trials})
    learned_from = learning_key(metadata.training_hash, search)
    same_rows = version_trained_on(contract.model_name, learned_from)
    if same_rows is not None:
        run_id, why = record_skip(settings, contract, metadata, same_rows, reason)
        return TrainingResult(
            contract.model_name,
            same_rows,
            run_id,
            {},
            {},
            float("nan"),
            0,
            None,
            metadata.snapshot_id,
            skipped=True,
            skip_reason=why,
            validation=data.validation,
        )
    seed = settings.training.seed
    leakage = leakage_findings(data, contract)
    experiment_id = ensure_experiment(settings, contract)
    study = open_study(settings, contract, metadata, seed)
    with _parent_run(study, experiment_id, contract) as parent:
        run_id = parent.info.run_id
        study.set_user_attr(PARENT_RUN_ATTR, run_id)
        commit = git_commit()
        _tag_training_run(contract, metadata, data, commit)
        total_trials = n_trials or settings.training.n_trials
        run_search(study, data, seed, total_trials, settings.training.timeout_seconds, experiment_id, on_trial)
        selected = select_and_evaluate(settings.training, contract, data, study, seed)
        champion = champion_for_comparison(contract.model_name, data)
        version = register_model(study, selected, data, contract, metadata, run_id, commit)
        tag_learning_key(contract.model_name, version, learned_from)
        # `scores` are the evaluation rows scored by the model fitted without them, even when (entity data) the
        # registered version is the refit on every labelled row: the gate compares what was measured on unseen rows.
        decision = decide_promotion(data.y_eval, selected["scores"], champion, leakage, settings.training)
        apply_decision(settings, contract, data, version, selected["metrics"], decision, run_id)
        if decision.champion_error is None:
            # Gated for good; after a refusal for an unavailable champion a retry re-decides the same version.
            study.set_user_attr(GATED_ATTR, version)
        evaluation, evaluation_path = _write_report(
            settings, contract, metadata, data, selected, champion, decision, leakage, version, run_id, commit
        )
    if decision.champion_error is not None:
        raise ChampionUnavailableError(
            f"{contract.model_name} v{version} was registered as challenger but not promoted: {decision.reason}"
        )

    log.info(
        "trained %s v%s (%s): %s ROC AUC %.4f; %s; evaluation report: %s",
        contract.model_name,
        version,
        selected["family"],
        evaluation_label(data.validation),
        selected["metrics"]["roc_auc"],
        decision.reason,
        evaluation_path,
    )
    return TrainingResult(
        model_name=contract.model_name,
        model_version=version,
        run_id=run_id,
        best_params=dict(study.best_trial.params),
        evaluation_metrics=selected["metrics"],
        threshold=selected["threshold"],
        n_trials=len(study.trials),
        decision=decision,
        snapshot_id=metadata.snapshot_id,
        evaluation_path=evaluation_path,
        evaluation=evaluation,
        validation=data.validation,
    )


def _training_data(
    settings: Settings, contract: DatasetContract, snapshot_dir: Path | None
) -> tuple[TrainingData, SnapshotMetadata]:
    """The snapshot (the dataset's latest unless given) split into training and evaluation rows."""
    snapshot_dir = snapshot_dir or latest_snapshot_dir(settings, contract.name)
    metadata = read_metadata(snapshot_dir)
    sample = None
    if over_budget(metadata, settings.training.max_rows_per_cutoff):
        # Sampled in Spark: the whole snapshot never reaches the driver (nor its digests' check, which would).
        frame, sample = sample_with_session(settings, snapshot_dir, metadata)
    else:
        frame, metadata = load_snapshot(snapshot_dir, cutoffs=training_cutoffs(metadata))
    data = TrainingData(frame, metadata, contract, settings.training.cv_folds, settings.training.seed)
    data.sample = sample
    if data.validation != "out_of_time":
        log.warning(
            "dataset %s has no event time: NO OUT-OF-TIME VALIDATION IS POSSIBLE; evaluating on a stratified 20 %% "
            "holdout instead, which overstates how the model will do on future customers",
            contract.name,
        )
    return data, metadata


def _parent_run(study: Any, experiment_id: str, contract: DatasetContract) -> Any:
    """The training's MLflow parent run, started or, for a retried task, re-entered (its id is a study attribute),
    so all trials stay under one training in MLflow."""
    import mlflow

    parent_run_id = study.user_attrs.get(PARENT_RUN_ATTR)
    if parent_run_id:
        close_interrupted_trial_runs(experiment_id, parent_run_id)
    return mlflow.start_run(
        run_id=parent_run_id, experiment_id=experiment_id, run_name=None if parent_run_id else f"train-{contract.name}"
    )


def _tag_training_run(contract: DatasetContract, metadata: SnapshotMetadata, data: TrainingData, commit: str) -> None:
    import mlflow

    mlflow.set_tags(
        {
            "churnops.dataset": contract.name,
            "churnops.snapshot_hash": metadata.content_hash,
            "churnops.training_hash": metadata.training_hash,
            "churnops.run_date": metadata.run_date or "",
            "churnops.git_commit": commit,
            "churnops.kind": "training",
            "churnops.validation": data.validation,
        }
    )


def _write_report(
    settings: Settings,
    contract: DatasetContract,
    metadata: SnapshotMetadata,
    data: TrainingData,
    selected: dict[str, Any],
    champion: Champion,
    decision: PromotionDecision,
    leakage: list[dict[str, Any]],
    version: str,
    run_id: str,
    commit: str,
) -> tuple[dict[str, Any], Path]:
    """evaluation.json, plots and model card under the working folder, logged to the parent run; the decision
    tagged on the parent run."""
    import mlflow

    from churnops.jobs.report import build_evaluation, write_report

    champion_scores = champion.scores if isinstance(champion, ChampionScores) else None
    champion_version = None if isinstance(champion, NoChampion) else champion.version
    evaluation = build_evaluation(
        contract=contract,
        metadata=metadata,
        data_summary=data.summary(),
        model_version=version,
        run_id=run_id,
        git_commit=commit,
        selected=selected,
        champion_version=champion_version,
        champion_scores=champion_scores,
        labels=data.y_eval,
        promotion=decision.as_record(),
        leakage=leakage,
    )
    report_dir = settings.home / "reports" / contract.name / run_id
    evaluation_path = write_report(
        report_dir,
        evaluation,
        labels=data.y_eval,
        scores={
            "new model": selected["scores"],
            **({f"champion v{champion_version}": champion_scores} if champion_scores is not None else {}),
            **selected["baseline_scores"],
        },
        model=selected["model"],
        x_eval=selected["view"].x_eval,
        feature_names=selected["view"].schema.columns,
        seed=settings.training.seed,
    )
    mlflow.log_artifacts(str(report_dir), artifact_path="report")
    mlflow.set_tags(
        {
            "churnops.promoted": str(decision.promoted).lower(),
            "churnops.promotion_reason": decision.reason,
            "churnops.promotion_rule": decision.rule,
            "churnops.model_version": version,
            "churnops.evaluation_json": str(evaluation_path),
        }
    )
    mlflow.log_metrics(gate_metrics(decision))
    return evaluation, evaluation_path
