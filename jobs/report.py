"""The training report: `evaluation.json`, plots and a model card, written to a folder and logged to MLflow.

`evaluation.json` is the machine-readable record dashboards, docs and tests read: the dataset, snapshot hash,
evaluation cutoff, every metric for the new model, the re-scored champion and each baseline, the selection
choices, the retro-test and the promotion decision. The plots (matplotlib, Agg backend: no display needed) are
the ones a reviewer looks at: ROC, precision-recall, calibration, cumulative gain, lift, a SHAP summary from
LightGBM's own contributions (`pred_contrib=True`, no shap package) and global importances.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from churnops.jobs.evaluate import binary_metrics, stability
from churnops.metrics import evaluation_label

if TYPE_CHECKING:
    from churnops.dataset import DatasetContract
    from churnops.snapshots import SnapshotMetadata

EVALUATION_FILE = "evaluation.json"
MODEL_CARD_FILE = "model_card.md"
SHAP_SAMPLE_ROWS = 2000
TOP_FEATURES = 15


def build_evaluation(
    *,
    contract: DatasetContract,
    metadata: SnapshotMetadata,
    data_summary: dict[str, Any],
    model_version: str,
    run_id: str,
    git_commit: str,
    selected: dict[str, Any],
    champion_version: str | None,
    champion_scores: np.ndarray | None,
    labels: np.ndarray,
    promotion: dict[str, Any],
    leakage: list[dict[str, Any]],
) -> dict[str, Any]:
    """Everything a reader of one training run needs, as plain JSON-able data.

    `promotion` is the gate's decision as a record (`PromotionDecision.as_record`); `champion_scores` is None when
    there is no champion or it could not be scored on these rows.
    """
    baselines = {name: binary_metrics(labels, s) for name, s in selected["baseline_scores"].items()}
    return {
        "dataset": contract.name,
        "model_name": contract.model_name,
        "model_version": model_version,
        "training_run_id": run_id,
        "snapshot_hash": metadata.content_hash,
        "snapshot_id": metadata.snapshot_id,
        "git_commit": git_commit,
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "label": {"kind": contract.label.kind, "horizon_days": contract.label.horizon_days},
        **data_summary,
        "new_model": {
            "family": "lightgbm",
            "metrics": selected["metrics"],
            "uncalibrated_metrics": selected["uncalibrated_metrics"],
        },
        "champion": None
        if champion_version is None
        else {
            "version": champion_version,
            "metrics": None if champion_scores is None else binary_metrics(labels, champion_scores),
        },
        "baselines": baselines,
        "baseline_details": selected["baseline_details"],
        "selection": {
            "n_trials": selected["n_trials"],
            "best_params": selected["best_params"],
            "feature_set": selected["feature_set"],
            "boosting_rounds": selected["rounds"],
            "cv_roc_auc": selected["cv_roc_auc"],
            "logistic_regression_cv_roc_auc": selected["logistic_regression_cv_roc_auc"],
            "blend_weight_bgnbd": selected["blend_weight"],
            "blend_cv_roc_auc_by_weight": selected["blend_auc_by_weight"],
            "calibration": selected["calibration"]["method"],
            "calibration_fold_brier_by_method": selected["calibration_brier_by_method"],
            "threshold": selected["threshold"],
            "threshold_objective": selected["threshold_objective"],
            "chosen_on": "training-period folds only; the evaluation rows never informed a choice",
        },
        "retro_test": {"gini_by_cutoff": selected["retro_gini"], **stability(selected["retro_gini"])},
        "leakage_findings": leakage,
        "promotion": promotion,
    }


def write_report(
    out_dir: Path,
    evaluation: dict[str, Any],
    *,
    labels: np.ndarray,
    scores: dict[str, np.ndarray],
    booster: Any,
    x_eval: np.ndarray,
    feature_names: list[str],
    seed: int,
) -> Path:
    """Write plots, the model card and evaluation.json into `out_dir`; return the evaluation.json path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    figures = plot_curves(out_dir, labels, scores)
    rows = np.random.default_rng(seed).permutation(len(x_eval))[:SHAP_SAMPLE_ROWS]
    importances = global_importances(booster, x_eval[np.sort(rows)], feature_names)
    figures += plot_importances(out_dir, booster, x_eval[np.sort(rows)], feature_names, importances)
    evaluation = {**evaluation, "global_importances": importances, "artifacts": sorted(p.name for p in figures)}
    path = out_dir / EVALUATION_FILE
    path.write_text(json.dumps(evaluation, indent=2, sort_keys=False, default=_json_default) + "\n")
    (out_dir / MODEL_CARD_FILE).write_text(model_card(evaluation))
    return path


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value)}")


# ---------------------------------------------------------------------------------------------------------------
# Curves
# ---------------------------------------------------------------------------------------------------------------


def gain_curve(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(share of customers targeted, share of positives caught), best scores first; starts at (0, 0)."""
    order = np.argsort(-scores, kind="stable")
    caught = np.concatenate([[0.0], np.cumsum(labels[order]) / labels.sum()])
    targeted = np.arange(len(labels) + 1) / len(labels)
    return targeted, caught


def reliability(labels: np.ndarray, scores: np.ndarray, bins: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Mean predicted vs observed rate in score-quantile bins (equal-count bins stay populated on skewed scores)."""
    order = np.argsort(scores, kind="stable")
    chunks = np.array_split(order, bins)
    return (
        np.array([scores[c].mean() for c in chunks if len(c)]),
        np.array([labels[c].mean() for c in chunks if len(c)]),
    )


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curves(out_dir: Path, labels: np.ndarray, scores: dict[str, np.ndarray]) -> list[Path]:
    """ROC, precision-recall, calibration, cumulative gain and lift, every scorer on one axis per plot."""
    from sklearn.metrics import precision_recall_curve, roc_curve

    plt = _pyplot()
    paths = []

    def save(fig: Any, name: str) -> None:
        fig.tight_layout()
        fig.savefig(out_dir / name, dpi=110)
        plt.close(fig)
        paths.append(out_dir / name)

    fig, ax = plt.subplots(figsize=(5.5, 5))
    for name, s in scores.items():
        fpr, tpr, _ = roc_curve(labels, s)
        ax.plot(fpr, tpr, label=f"{name} (AUC {binary_metrics(labels, s)['roc_auc']:.3f})")
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC (evaluation rows)")
    ax.legend(fontsize=8)
    save(fig, "roc.png")

    fig, ax = plt.subplots(figsize=(5.5, 5))
    for name, s in scores.items():
        precision, recall, _ = precision_recall_curve(labels, s)
        ax.plot(recall, precision, label=f"{name} (AP {binary_metrics(labels, s)['pr_auc']:.3f})")
    ax.axhline(labels.mean(), color="grey", linestyle=":", linewidth=1, label="base rate")
    ax.set(xlabel="recall", ylabel="precision", title="Precision-recall (evaluation rows)")
    ax.legend(fontsize=8)
    save(fig, "precision_recall.png")

    fig, ax = plt.subplots(figsize=(5.5, 5))
    for name, s in scores.items():
        predicted, observed = reliability(labels, s)
        ax.plot(
            predicted,
            observed,
            marker="o",
            markersize=3,
            label=f"{name} (Brier {binary_metrics(labels, s)['brier']:.4f})",
        )
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    ax.set(xlabel="mean predicted probability", ylabel="observed rate", title="Calibration (score deciles)")
    ax.legend(fontsize=8)
    save(fig, "calibration.png")

    fig, (gain_ax, lift_ax) = plt.subplots(1, 2, figsize=(11, 4.5))
    for name, s in scores.items():
        targeted, caught = gain_curve(labels, s)
        gain_ax.plot(targeted, caught, label=name)
        with np.errstate(divide="ignore", invalid="ignore"):
            lift = caught[1:] / targeted[1:]
        lift_ax.plot(targeted[1:], lift, label=name)
    gain_ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    gain_ax.set(xlabel="share of customers targeted", ylabel="share of positives caught", title="Cumulative gain")
    lift_ax.axhline(1.0, color="grey", linestyle=":", linewidth=1)
    lift_ax.set(xlabel="share of customers targeted", ylabel="lift", title="Cumulative lift", xlim=(0.01, 1))
    for ax in (gain_ax, lift_ax):
        ax.legend(fontsize=8)
        ax.axvline(0.05, color="lightgrey", linewidth=0.8)
        ax.axvline(0.10, color="lightgrey", linewidth=0.8)
    save(fig, "gain_lift.png")
    return paths


# ---------------------------------------------------------------------------------------------------------------
# Explanations
# ---------------------------------------------------------------------------------------------------------------


def global_importances(booster: Any, x: np.ndarray, feature_names: list[str]) -> dict[str, dict[str, float]]:
    """Per feature: mean |SHAP| (LightGBM's exact TreeSHAP contributions, log-odds) and total split gain."""
    contributions = booster.predict(x, pred_contrib=True)[:, :-1]  # last column is the expected value
    gains = booster.feature_importance(importance_type="gain")
    table = {
        name: {"mean_abs_shap": float(np.abs(contributions[:, i]).mean()), "gain": float(gains[i])}
        for i, name in enumerate(feature_names)
    }
    return dict(sorted(table.items(), key=lambda kv: -kv[1]["mean_abs_shap"]))


def plot_importances(
    out_dir: Path, booster: Any, x: np.ndarray, feature_names: list[str], importances: dict[str, dict[str, float]]
) -> list[Path]:
    """SHAP summary (one dot per customer and feature, coloured by the feature's value) and gain importances."""
    plt = _pyplot()
    contributions = booster.predict(x, pred_contrib=True)[:, :-1]
    top = list(importances)[:TOP_FEATURES]
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(top) + 1.5))
    jitter = np.random.default_rng(0).uniform(-0.3, 0.3, len(x))
    for row, name in enumerate(reversed(top)):
        i = feature_names.index(name)
        values = x[:, i]
        finite = np.isfinite(values)
        colour = np.full(len(values), 0.5)
        if finite.any():
            low, high = np.nanpercentile(values[finite], [5, 95])
            colour[finite] = np.clip((values[finite] - low) / (high - low if high > low else 1.0), 0, 1)
        ax.scatter(contributions[:, i], row + jitter, c=colour, cmap="coolwarm", s=4, alpha=0.6, linewidths=0)
    ax.set_yticks(range(len(top)), list(reversed(top)), fontsize=8)
    ax.axvline(0, color="grey", linewidth=0.8)
    ax.set(xlabel="SHAP value (contribution to log-odds)", title="SHAP summary (blue = low value, red = high)")
    fig.tight_layout()
    fig.savefig(out_dir / "shap_summary.png", dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 0.35 * len(top) + 1.5))
    ax.barh(list(reversed(top)), [importances[n]["gain"] for n in reversed(top)])
    ax.set(xlabel="total split gain", title="Global importance (gain)")
    ax.tick_params(axis="y", labelsize=8)
    fig.tight_layout()
    fig.savefig(out_dir / "importance_gain.png", dpi=110)
    plt.close(fig)
    return [out_dir / "shap_summary.png", out_dir / "importance_gain.png"]


# ---------------------------------------------------------------------------------------------------------------
# Model card
# ---------------------------------------------------------------------------------------------------------------

CARD_METRICS = (
    "roc_auc",
    "gini",
    "pr_auc",
    "log_loss",
    "brier",
    "ks",
    "precision_at_5",
    "recall_at_5",
    "lift_at_5",
    "precision_at_10",
    "recall_at_10",
    "lift_at_10",
)


def metrics_table(evaluation: dict[str, Any]) -> list[str]:
    """Markdown table: one row per scorer (new model, champion, baselines), one column per metric."""
    rows = [("new model (LightGBM)", evaluation["new_model"]["metrics"])]
    champion = evaluation.get("champion")
    if champion and champion.get("metrics"):
        rows.append((f"champion v{champion['version']}", champion["metrics"]))
    rows += [(f"baseline: {name}", m) for name, m in evaluation["baselines"].items()]
    lines = ["| scorer | " + " | ".join(CARD_METRICS) + " |", "|---|" + "---:|" * len(CARD_METRICS)]
    for name, metrics in rows:
        lines.append(f"| {name} | " + " | ".join(f"{metrics[k]:.4f}" for k in CARD_METRICS) + " |")
    return lines


def model_card(evaluation: dict[str, Any]) -> str:
    """A one-page model card: data window, population, features, metrics, choices, caveats, decision."""
    selection, retro, promotion = evaluation["selection"], evaluation["retro_test"], evaluation["promotion"]
    label = evaluation["label"]
    label_text = (
        f"`{label['kind']}` within {label['horizon_days']} days of the cutoff"
        if label["horizon_days"]
        else f"`{label['kind']}` (the entity table's label column)"
    )
    out_of_time = evaluation["validation"] == "out_of_time"
    evaluated_on = (
        f"the out-of-time cutoff {evaluation['evaluation_cutoff']}"
        if out_of_time
        else "a stratified 20 % holdout (no event time: **no out-of-time validation was possible**)"
    )
    # Entity data has no time axis: its folds are stratified and its evaluation rows a holdout, not a later cutoff.
    held_out = "every label ends before the evaluation cutoff" if out_of_time else "the holdout is not among them"
    folds = "time-fold" if out_of_time else "stratified-fold"
    retro_of = "past cutoff, the last one being the evaluation cutoff" if out_of_time else "validation fold"
    top_features = list(evaluation.get("global_importances", {}))[:10]
    lines = [
        f"# Model card: {evaluation['model_name']} v{evaluation['model_version']}",
        "",
        f"Generated by `jobs/report.py` for training run `{evaluation['training_run_id']}` on "
        f"{evaluation['created_at']}.",
        "",
        "## Data",
        f"- Dataset `{evaluation['dataset']}`, snapshot `{evaluation['snapshot_id']}` (SHA-256 "
        f"`{evaluation['snapshot_hash']}`), code commit `{evaluation['git_commit']}`.",
        f"- Label: {label_text}.",
        f"- Training window: cutoffs {', '.join(evaluation['training_cutoffs'])} "
        f"({evaluation['training_rows']:,} customer-cutoff rows); {held_out}.",
        f"- Evaluated on {evaluated_on}: {evaluation['evaluation_rows']:,} customers.",
        "",
        "## Model",
        f"- LightGBM, {selection['n_trials']} Optuna trials, feature set `{selection['feature_set']}`, "
        f"{selection['boosting_rounds']} rounds; {folds} CV ROC AUC {selection['cv_roc_auc']:.4f} "
        f"(logistic regression on the same folds: {selection['logistic_regression_cv_roc_auc']:.4f}).",
        f"- Post-processing chosen on the training folds: BG/NBD blend weight {selection['blend_weight_bgnbd']}, "
        f"calibration `{selection['calibration']}`, threshold {selection['threshold']:.4f} "
        f"({selection['threshold_objective']}).",
        f"- Best parameters: `{json.dumps(selection['best_params'], default=_json_default)}`.",
        f"- Most important features (mean |SHAP|): {', '.join(f'`{f}`' for f in top_features)}.",
        "",
        f"## Evaluation ({evaluation_label(evaluation['validation'])})",
        "",
        *metrics_table(evaluation),
        "",
        f"Retro-test (Gini per {retro_of}): "
        + ", ".join(f"{k}: {v:.3f}" for k, v in retro["gini_by_cutoff"].items())
        + f"; mean {retro['gini_mean']:.3f}, std {retro['gini_std']:.3f}, spread {retro['gini_spread']:.3f}.",
        "",
        "## Promotion",
        f"- Promoted to champion: **{promotion['promoted']}** (rule `{promotion.get('rule', 'n/a')}`) — "
        f"{promotion['reason']}.",
        f"- Sanity checks: {promotion['sanity_checks']}; margin {promotion['margin']}, "
        f"AUC floor {promotion['min_auc']}.",
        *_comparison_lines(promotion),
        "",
        "## Caveats",
        "- Scores rank customers at one cutoff; deciles and bands are relative to the scored list.",
        "- Probabilities are calibrated on the training folds' out-of-fold predictions; a label-rate shift after "
        "training moves them (watch the calibration plot and the drift DAG).",
        "- The registered artifact is the LightGBM booster; the BG/NBD blend and calibration are stored in its "
        "metadata and applied by `churnops.postprocess` (scoring and the API), not by MLflow's generic pyfunc.",
    ]
    if evaluation["leakage_findings"]:
        lines.append(
            "- Leakage probes: "
            + "; ".join(
                f"`{f['feature']}` {f['probe']} {f['value']} (allowed: {f['allowed']})"
                for f in evaluation["leakage_findings"]
            )
        )
    return "\n".join(lines) + "\n"


def _comparison_lines(promotion: dict[str, Any]) -> list[str]:
    """The champion comparison behind the decision, when there was a champion to compare with."""
    if promotion.get("auc_difference") is None:
        return []
    return [
        f"- Against the champion on the same rows: ROC AUC difference {promotion['auc_difference']:+.4f} "
        f"({1 - promotion['significance_level']:.0%} CI [{promotion['auc_difference_ci_low']:+.4f}, "
        f"{promotion['auc_difference_ci_high']:+.4f}], DeLong p = {promotion['p_value']:.3g}, level "
        f"{promotion['significance_level']}); Brier {promotion['challenger_brier']:.4f} vs "
        f"{promotion['champion_brier']:.4f} (tolerance {promotion['brier_tolerance']}), log loss "
        f"{promotion['challenger_log_loss']:.4f} vs {promotion['champion_log_loss']:.4f} "
        f"(tolerance {promotion['log_loss_tolerance']})."
    ]
