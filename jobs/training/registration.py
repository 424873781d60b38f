"""What a training leaves in the registry and the database: the registered model version (logged once, even
across retries), the aliases the gate's decision moves, the version's tags and the PostgreSQL records.

The model is logged as a native LightGBM booster (text) or, when the logistic regression won, as its JSON numbers
under churnops' own MLmodel flavour (`churnops.linear_model`), with its feature schema, threshold and
post-processing in the metadata, so scoring and serving load exactly what was evaluated
(`churnops.registry.load_model_version` reads those two kinds and nothing else).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pandas as pd

from churnops.config import Settings
from churnops.dataset import DatasetContract
from churnops.jobs.training.data import TrainingData
from churnops.jobs.training.gate import PromotionDecision
from churnops.linear_model import LINEAR_FLAVOR, LINEAR_MODEL_FILE, LinearModel
from churnops.postprocess import ScorePostprocess
from churnops.registry import CHALLENGER_ALIAS, CHAMPION_ALIAS, POSTPROCESS_KEY
from churnops.snapshots import SnapshotMetadata

log = logging.getLogger(__name__)

# Study user attributes that make a retried task register exactly once: the version registered, and the version
# whose gate has run. A version registered but not yet gated is re-used by the retry.
REGISTERED_ATTR = "registered_version"
GATED_ATTR = "gated_version"


def register_model(
    study: Any,
    selected: dict[str, Any],
    data: TrainingData,
    contract: DatasetContract,
    metadata: SnapshotMetadata,
    run_id: str,
    git_commit: str,
) -> str:
    """Log and register the model once: a retry after a crash between registration and gate reuses the version."""
    import lightgbm
    import mlflow
    from mlflow.models import infer_signature

    pending = study.user_attrs.get(REGISTERED_ATTR)
    if pending is not None and pending != study.user_attrs.get(GATED_ATTR):
        log.info("re-using model version %s registered by the interrupted run of this study", pending)
        return str(pending)
    view = selected["view"]
    example = pd.DataFrame(view.x_eval[:5], columns=view.schema.columns)
    # Check the post-processing round-trips before it is registered: scoring and serving rebuild it from metadata.
    ScorePostprocess.from_metadata(selected["postprocess"], view.schema.columns)
    signature = infer_signature(example, selected["scores"][:5])
    metadata = _model_metadata(selected, data, contract, metadata, run_id, git_commit)
    if isinstance(selected["model"], LinearModel):
        info = log_linear_model(
            selected["model"], registered_model_name=contract.model_name, metadata=metadata, signature=signature
        )
    else:
        info = mlflow.lightgbm.log_model(
            selected["model"],
            name="model",
            signature=signature,
            input_example=example,
            registered_model_name=contract.model_name,
            metadata=metadata,
            pip_requirements=[f"lightgbm=={lightgbm.__version__}"],
        )
    version = str(info.registered_model_version)
    study.set_user_attr(REGISTERED_ATTR, version)
    return version


def _save_linear_model(path: str, mlflow_model: Any, model: LinearModel, signature: Any = None) -> None:
    """The model folder MLflow's `Model.log` asks its flavour for: the JSON numbers and an MLmodel naming them."""
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / LINEAR_MODEL_FILE).write_text(model.to_json())
    mlflow_model.signature = signature
    mlflow_model.add_flavor(LINEAR_FLAVOR, data=LINEAR_MODEL_FILE, format_version=1)
    mlflow_model.save(str(folder / "MLmodel"))


def log_linear_model(
    model: LinearModel, *, registered_model_name: str, metadata: dict[str, Any], signature: Any = None
) -> Any:
    """Log and register a `LinearModel` on the active run under churnops' own flavour (no pickle, no pyfunc)."""
    from mlflow.models import Model

    flavor = SimpleNamespace(__name__=LINEAR_FLAVOR, save_model=_save_linear_model)
    return Model.log(
        artifact_path=None,
        name="model",
        flavor=flavor,
        registered_model_name=registered_model_name,
        metadata=metadata,
        model=model,
        signature=signature,
    )


def _model_metadata(
    selected: dict[str, Any],
    data: TrainingData,
    contract: DatasetContract,
    metadata: SnapshotMetadata,
    run_id: str,
    git_commit: str,
) -> dict[str, Any]:
    from churnops.banding import band_score_cutoffs
    from churnops.input_ranges import FEATURE_RANGES_KEY, observed_ranges

    view = selected["view"]
    return {
        "feature_schema": view.schema.to_dict(),
        # What the API compares new rows with (serving.out_of_range_policy).
        FEATURE_RANGES_KEY: observed_ranges(view.x_train, view.schema.numeric),
        "threshold": selected["threshold"],
        POSTPROCESS_KEY: selected["postprocess"],
        "risk_band_cutoffs": band_score_cutoffs(selected["scores"]),
        "dataset": contract.name,
        "snapshot_hash": metadata.content_hash,
        "training_hash": metadata.training_hash,
        "run_date": metadata.run_date,
        "validation": data.validation,
        "out_of_time_cutoff": data.eval_cutoff,
        "out_of_time_metrics": selected["metrics"],
        "training_run_id": run_id,
        "git_commit": git_commit,
        "best_params": selected["best_params"],
        "model_family": selected["family"],
        "family_cv_roc_auc": selected["family_cv_roc_auc"],
        # Entity data: the row count the registered model learned from (train + holdout), None when not refitted.
        "refitted_on_all_rows": selected["refitted_on_all_rows"],
    }


def apply_decision(
    settings: Settings,
    contract: DatasetContract,
    data: TrainingData,
    version: str,
    metrics: dict[str, float],
    decision: PromotionDecision,
    run_id: str,
) -> None:
    """Mark the new version `challenger`, move `champion` to it if promoted, and record the decision everywhere.

    The database row comes before the aliases move: a retry after a failed write re-decides from the same state.
    """
    from mlflow import MlflowClient

    client = MlflowClient()
    name = contract.model_name
    if settings.database_url is not None:
        record_in_database(settings, contract, data, version, metrics, decision, run_id)
    client.set_registered_model_alias(name, CHALLENGER_ALIAS, version)
    if decision.promoted:
        client.set_registered_model_alias(name, CHAMPION_ALIAS, version)
    for key, value in version_tags(decision).items():
        client.set_model_version_tag(name, version, key, value)


def version_tags(decision: PromotionDecision) -> dict[str, str]:
    """The decision as model-version tags: verdict, rule, reason, checks, and every number as `gate.<name>`."""
    record = decision.as_record()
    verdict_keys = {"promoted", "rule", "reason", "sanity_checks"}
    return {
        "promoted": str(decision.promoted).lower(),
        "promotion_reason": decision.reason,
        "promotion_rule": decision.rule,
        "decided_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "sanity_checks": ",".join(f"{k}={str(v).lower()}" for k, v in decision.sanity_checks.items()),
        **{f"gate.{k}": str(v) for k, v in record.items() if k not in verdict_keys and v is not None},
    }


def gate_metrics(decision: PromotionDecision) -> dict[str, float]:
    """The decision's numbers as MLflow run metrics (`gate_<name>`), for charts across trainings."""
    return {
        f"gate_{k}": float(v)
        for k, v in decision.as_record().items()
        if isinstance(v, int | float) and not isinstance(v, bool) and v is not None
    } | {"gate_promoted": float(decision.promoted)}


def record_in_database(
    settings: Settings,
    contract: DatasetContract,
    data: TrainingData,
    version: str,
    metrics: dict[str, float],
    decision: PromotionDecision,
    run_id: str,
) -> None:
    """One promotion-decision row and the evaluation metrics of the new model in the platform's PostgreSQL."""
    from churnops import db

    eval_cutoff = dt.date.fromisoformat(data.eval_cutoff) if data.eval_cutoff else None
    record = decision.as_record()
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
            champion_version=decision.champion_version,
            promoted=decision.promoted,
            reason=decision.reason,
            metric="roc_auc",
            challenger_value=metrics["roc_auc"],
            champion_value=decision.champion_auc,
            margin=decision.rules.margin,
            eval_cutoff=eval_cutoff,
            mlflow_run_id=run_id,
            statistics={k: record[k] for k in db.PROMOTION_STATISTICS},
        )
