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
from churnops.jobs.model_card import model_card

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
            "family": selected["family"],
            # Entity data: the registered model is the choice refitted on all labelled rows after evaluation.
            "refitted_on_all_rows": selected["refitted_on_all_rows"],
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
            "family": selected["family"],
            "family_cv_roc_auc": selected["family_cv_roc_auc"],
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
    model: Any,
    x_eval: np.ndarray,
    feature_names: list[str],
    seed: int,
) -> Path:
    """Write plots, the model card and evaluation.json into `out_dir`; return the evaluation.json path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    figures = plot_curves(out_dir, labels, scores)
    rows = np.random.default_rng(seed).permutation(len(x_eval))[:SHAP_SAMPLE_ROWS]
    importances = global_importances(model, x_eval[np.sort(rows)], feature_names)
    figures += plot_importances(out_dir, model, x_eval[np.sort(rows)], feature_names, importances)
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


def global_importances(model: Any, x: np.ndarray, feature_names: list[str]) -> dict[str, dict[str, float]]:
    """Per feature: mean |SHAP| (LightGBM's exact TreeSHAP contributions, or the linear model's centred terms;
    log-odds) and total split gain (the linear model: its mean |term| on the training rows)."""
    contributions = model.predict(x, pred_contrib=True)[:, :-1]  # last column is the expected value
    gains = model.feature_importance(importance_type="gain")
    table = {
        name: {"mean_abs_shap": float(np.abs(contributions[:, i]).mean()), "gain": float(gains[i])}
        for i, name in enumerate(feature_names)
    }
    return dict(sorted(table.items(), key=lambda kv: -kv[1]["mean_abs_shap"]))


def plot_importances(
    out_dir: Path, model: Any, x: np.ndarray, feature_names: list[str], importances: dict[str, dict[str, float]]
) -> list[Path]:
    """SHAP summary (one dot per customer and feature, coloured by the feature's value) and gain importances."""
    plt = _pyplot()
    contributions = model.predict(x, pred_contrib=True)[:, :-1]
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
