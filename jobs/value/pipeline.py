"""The value model inside the platform's runs: trained after the churn model by the training job, applied to every
list the scoring job writes. Both steps do nothing for a dataset without a `value:` section.

Training (`train_value_step`): the purchases of the bronze layer, the value cutoffs of the run (the latest cutoff
whose whole value horizon is observed evaluates; earlier ones whose training window ends by it train), the Optuna
search on time folds (`churnops.jobs.value.search`, every trial a nested MLflow run), the model and its baselines
measured on the evaluation customers, the version registered as `churnops-<dataset>-value` and promoted by
`churnops.jobs.value.gate`. A re-run on the same purchases and settings registers nothing.

Scoring (`add_value_columns`): the value champion's expected value over the horizon at the list's cutoff (BTYD
refitted on the history before it, no label read), then the campaign columns of `churnops.jobs.value.campaign`.
The platform's catalog features are not passed to the value model: its training cutoffs are not the snapshot's,
so it learns from its own purchase-history features only.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from churnops.bronze import AMOUNT, EVENT_DAY, EVENT_TYPE, BronzeMissingError, read_bronze_events
from churnops.config import Settings
from churnops.dataset import DatasetContract
from churnops.features import ENTITY_ID
from churnops.jobs.training.unchanged import tag_learning_key, version_trained_on
from churnops.jobs.value.campaign import campaign_columns
from churnops.jobs.value.features import CutoffInputs, baseline_values, cutoff_inputs
from churnops.jobs.value.gate import ValuePromotion, decide_value_promotion
from churnops.jobs.value.history import value_in_window
from churnops.jobs.value.metrics import value_metrics
from churnops.jobs.value.model import ValueModel
from churnops.jobs.value.registered import apply_value_decision, log_value_model, value_champion
from churnops.jobs.value.search import train_value_model
from churnops.registry import ensure_experiment
from churnops.snapshots import latest_snapshot_dir, read_metadata

log = logging.getLogger(__name__)

MODEL_KEY = "value_model"  # the candidate's row among the evaluation metrics
NAIVE_KEY = "past_spend_rate"


class NotEnoughHistoryError(ValueError):
    """The run's data does not yet cover a value horizon after enough cutoffs: no value model can be evaluated."""


@dataclass(frozen=True)
class ValueCutoffs:
    training: tuple[pd.Timestamp, ...]
    evaluation: pd.Timestamp
    window_days: int


@dataclass(frozen=True)
class ValueTrainingResult:
    model_name: str
    model_version: str
    promoted: bool
    reason: str
    evaluation_cutoff: dt.date | None
    # Spearman, revenue capture, Gini, MAE, ... of the candidate (`value_model`), the champion and every baseline.
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    run_id: str = ""
    skipped: bool = False


def purchase_events(settings: Settings, contract: DatasetContract, before: dt.date) -> pd.DataFrame:
    """The bronze events of the days before `before` that are purchases (`value.event_type`), with amounts."""
    events = read_bronze_events(
        settings,
        contract.name,
        columns=[ENTITY_ID, EVENT_DAY, EVENT_TYPE, AMOUNT],
        last_day=before - dt.timedelta(days=1),
    )
    return purchases_of(contract, events, before, "in the bronze layer")


def purchases_of(contract: DatasetContract, events: pd.DataFrame, before: dt.date, source: str) -> pd.DataFrame:
    """The `events` (bronze layout) of the days before `before` that are purchases (`value.event_type`): the value
    model's input, from the bronze layer or from a file scored by `churnops score --input`."""
    value = _value_section(contract)
    events = events.loc[
        pd.to_datetime(events[EVENT_DAY]) < pd.Timestamp(before), [ENTITY_ID, EVENT_DAY, EVENT_TYPE, AMOUNT]
    ]
    if value.event_type is not None:
        events = events[events[EVENT_TYPE] == value.event_type]
    if events.empty:
        raise no_purchases_error(contract, before, source)
    return events.drop(columns=[EVENT_TYPE]).reset_index(drop=True)


def no_purchases_error(contract: DatasetContract, before: dt.date, source: str) -> ValueError:
    """The refusal of a value forecast without a purchase to learn from."""
    event_type = _value_section(contract).event_type
    kind = f"`{event_type}` events" if event_type else "events"
    return ValueError(
        f"dataset {contract.name!r}: no {kind} before {before} {source}; the value model needs "
        "purchases with amounts (check value.event_type)"
    )


def value_cutoffs(contract: DatasetContract, scoring: dt.date, observed_until: dt.date) -> ValueCutoffs:
    """The evaluation cutoff (the latest scheduled or pinned cutoff whose value horizon ends by the observed data)
    and the training cutoffs (the latest `train_cutoffs` whose training window ends by the evaluation cutoff)."""
    value = _value_section(contract)
    schedule = set(contract.cutoffs.cutoffs_before(scoring))
    if contract.cutoffs.out_of_time is not None:
        schedule.add(contract.cutoffs.out_of_time)
    horizon = dt.timedelta(days=value.horizon_days)
    evaluable = sorted(c for c in schedule if c + horizon <= observed_until)
    if not evaluable:
        raise NotEnoughHistoryError(
            f"dataset {contract.name!r}: no cutoff before {scoring} has its {value.horizon_days}-day value horizon "
            f"observed (data until {observed_until}); shorten value.horizon_days or move cutoffs.first earlier"
        )
    evaluation = evaluable[-1]
    window = value.window_for(contract.label.horizon_days)
    trainable = sorted(c for c in schedule if c + dt.timedelta(days=window) <= evaluation)
    count = value.train_cutoffs or contract.cutoffs.train_cutoffs
    if len(trainable) < 2:
        raise NotEnoughHistoryError(
            f"dataset {contract.name!r}: the value model needs at least 2 cutoffs whose {window}-day window ends by "
            f"the evaluation cutoff {evaluation}, found {len(trainable)}; shorten value.window_days or the horizon"
        )
    return ValueCutoffs(tuple(pd.Timestamp(c) for c in trainable[-count:]), pd.Timestamp(evaluation), window)


def train_value_step(
    settings: Settings, contract: DatasetContract, snapshot_dir: Path | None = None
) -> ValueTrainingResult | None:
    """Train, evaluate, register and gate the value model for the run of the snapshot (None: no value section).
    The search runs `value.n_trials` trials."""
    if contract.value is None:
        return None
    metadata = read_metadata(snapshot_dir or latest_snapshot_dir(settings, contract.name))
    scoring = dt.date.fromisoformat(metadata.cutoffs["scoring"][0])
    observed = dt.date.fromisoformat(metadata.observed_until) if metadata.observed_until else scoring
    try:
        cutoffs = value_cutoffs(contract, scoring, observed)
        before = min(observed, (cutoffs.evaluation + pd.Timedelta(days=contract.value.horizon_days)).date())
        events = purchase_events(settings, contract, before=before)
    except (NotEnoughHistoryError, BronzeMissingError) as error:
        # An early run date (a replay's first weeks), or a snapshot trained without its event log (a copied
        # snapshot): the churn model trains from the snapshot alone, the value model waits for the events.
        log.warning("value model not trained: %s", error)
        return ValueTrainingResult(contract.value_model_name, "", False, f"skipped: {error}", None, skipped=True)
    horizon = contract.value.horizon_days
    trials, seed = contract.value.n_trials, settings.training.seed
    name = contract.value_model_name
    key = _learning_key(contract, cutoffs, events, trials, seed)
    same = version_trained_on(name, key)
    if same is not None:
        log.info("value model %s v%s already learned from these purchases and settings: not retrained", name, same)
        return ValueTrainingResult(name, same, False, "skipped: no new data", cutoffs.evaluation.date(), skipped=True)
    import mlflow

    experiment_id = ensure_experiment(settings, contract)
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"train-value-{contract.name}") as parent:
        mlflow.set_tags(
            {
                "churnops.kind": "value_training",
                "churnops.dataset": contract.name,
                "churnops.run_date": metadata.run_date or "",
                "churnops.evaluation_cutoff": str(cutoffs.evaluation.date()),
            }
        )
        inputs = {c: cutoff_inputs(events, c) for c in cutoffs.training}
        trained = train_value_model(
            inputs, events, cutoffs.evaluation, horizon, cutoffs.window_days, trials, seed, _trial_logger(experiment_id)
        )
        evaluation = cutoff_inputs(events, cutoffs.evaluation)
        metrics, decision = _evaluate_and_decide(
            name, trained.model.predict_at(evaluation, horizon), evaluation, events, horizon
        )
        _log_run(trained, cutoffs, metrics, decision, horizon)
        version = log_value_model(
            trained.model,
            registered_model_name=name,
            metadata={
                "dataset": contract.name,
                "horizon_days": horizon,
                "window_days": cutoffs.window_days,
                "evaluation_cutoff": str(cutoffs.evaluation.date()),
                "training_cutoffs": [str(c.date()) for c in cutoffs.training],
                "evaluation_spearman": metrics[MODEL_KEY]["spearman"],
            },
        )
        apply_value_decision(name, version, decision.promoted, decision.reason)
        tag_learning_key(name, version, key)
        mlflow.set_tags({"churnops.model_version": version, "churnops.promoted": str(decision.promoted).lower()})
    log.info("value model %s v%s: %s", name, version, decision.reason)
    return ValueTrainingResult(
        name, version, decision.promoted, decision.reason, cutoffs.evaluation.date(), metrics, parent.info.run_id
    )


def add_value_columns(
    settings: Settings,
    contract: DatasetContract,
    scored: pd.DataFrame,
    cutoff: dt.date,
    purchases: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """The list with `expected_value`, `expected_saved_value`, `campaign_rank` and `in_campaign` added; unchanged
    without a value section or before a value model has been promoted. `purchases`: the purchases before the cutoff
    (`purchases_of`); default: the bronze layer's (`churnops score --input` passes its file's).

    p(churn) is the list's score for a churn label and 1 - score for a propensity label (the probability of not
    buying in the label horizon). A customer without a purchase before the cutoff has no purchase history to
    forecast from, and an expected value of 0.
    """
    champion = list_value_champion(contract)
    if champion is None:
        return scored
    version, model = champion
    if purchases is None:
        purchases = purchase_events(settings, contract, before=cutoff)
    inputs = cutoff_inputs(purchases, cutoff)
    predicted = model.predict_at(inputs, contract.value.horizon_days)
    by_customer = pd.Series(predicted, index=inputs.history.index.astype(str))
    expected = by_customer.reindex(scored[ENTITY_ID].astype(str)).fillna(0.0).to_numpy()
    columns = campaign_columns(churn_probability(contract, scored["score"].to_numpy()), expected, contract.value)
    log.info(
        "value model %s v%s: %s customers in the campaign, expected saved value %.2f",
        contract.value_model_name,
        version,
        int(columns["in_campaign"].sum()),
        float(columns.loc[columns["in_campaign"], "expected_saved_value"].sum()),
    )
    return pd.concat([scored.reset_index(drop=True), columns], axis=1)


def list_value_champion(contract: DatasetContract) -> tuple[str, ValueModel] | None:
    """(version, model) of the value champion a list is given columns by; None without a value section, or
    (with a warning) before a value model has been promoted."""
    if contract.value is None:
        return None
    champion = value_champion(contract.value_model_name)
    if champion is None:
        log.warning("no value model is champion for %s yet: the list has no value columns", contract.name)
        return None
    version, model, _ = champion
    return version, model


def churn_probability(contract: DatasetContract, score: np.ndarray) -> np.ndarray:
    """p(churn) from a list's scores: the score for a churn label, 1 - score for a propensity label (the
    probability of not buying in the label horizon)."""
    score = np.asarray(score, dtype=np.float64)
    return score if contract.label.kind == "churn" else 1.0 - score


def _value_section(contract: DatasetContract) -> Any:
    if contract.value is None:
        raise ValueError(f"dataset {contract.name!r} has no `value` section in its contract")
    return contract.value


def _learning_key(
    contract: DatasetContract, cutoffs: ValueCutoffs, events: pd.DataFrame, trials: int, seed: int
) -> str:
    """What a value model learned from: the purchases, the cutoffs and every setting of the search."""
    digest = hashlib.sha256(pd.util.hash_pandas_object(events, index=False).to_numpy().tobytes()).hexdigest()
    described = {
        "dataset": contract.name,
        "value": contract.value.model_dump(mode="json") if contract.value else None,
        "training": [str(c.date()) for c in cutoffs.training],
        "evaluation": str(cutoffs.evaluation.date()),
        "trials": trials,
        "seed": seed,
        "events": digest,
    }
    return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()


def _trial_logger(experiment_id: str) -> Any:
    """An Optuna trial callback that records each finished trial as a nested MLflow run."""
    import mlflow

    def on_trial(number: int, params: dict[str, Any], score: float) -> None:
        with mlflow.start_run(run_name=f"value-trial-{number}", nested=True, experiment_id=experiment_id):
            mlflow.set_tag("churnops.kind", "value_trial")
            mlflow.log_params(params)
            mlflow.log_metric("fold_score", score)

    return on_trial


def _evaluate_and_decide(
    name: str, predicted: np.ndarray, evaluation: CutoffInputs, events: pd.DataFrame, horizon: int
) -> tuple[dict[str, dict[str, float]], ValuePromotion]:
    """Metrics of the candidate, the champion (scored on the same customers) and the baselines; the gate's call."""
    actual = value_in_window(events, evaluation.history.index, evaluation.cutoff, horizon)
    predictions = {MODEL_KEY: predicted, **baseline_values(evaluation, horizon)}
    champion_error = None
    try:
        champion = value_champion(name)
    except Exception as error:  # an unreadable champion must refuse, never read as "no champion"
        champion, champion_error = None, error
    if champion is not None:
        predictions["champion"] = champion[1].predict_at(evaluation, horizon)
    metrics = {key: value_metrics(actual, values) for key, values in predictions.items()}
    if champion_error is not None:
        bar = float("nan")
        return metrics, ValuePromotion(
            False, f"refused: the value champion cannot be scored ({champion_error})", bar, ""
        )
    champion_spearman = metrics["champion"]["spearman"] if champion is not None else None
    decision = decide_value_promotion(metrics[MODEL_KEY]["spearman"], champion_spearman, metrics[NAIVE_KEY]["spearman"])
    return metrics, decision


def _log_run(
    trained: Any, cutoffs: ValueCutoffs, metrics: dict[str, dict[str, float]], decision: ValuePromotion, horizon: int
) -> None:
    import mlflow

    mlflow.log_params(
        {
            **{f"value_{k}": v for k, v in trained.search.params.as_dict().items()},
            "horizon_days": horizon,
            "window_days": cutoffs.window_days,
            "training_cutoffs": ",".join(str(c.date()) for c in cutoffs.training),
        }
    )
    mlflow.log_metrics(
        {
            f"{model}_{metric}": value
            for model, row in metrics.items()
            for metric, value in row.items()
            if np.isfinite(value)
        }
    )
    mlflow.log_dict(
        {"metrics": metrics, "promotion": decision.reason, "trials": trained.search.trials}, "value_evaluation.json"
    )
    mlflow.set_tag("churnops.promotion_reason", decision.reason)
