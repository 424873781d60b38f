"""Draw a replay's timeline: realized ROC AUC per cohort and drift over run dates, with the trainings marked."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd


def plot_timelines(
    timelines: dict[str, pd.DataFrame], path: Path, title: str, marks: dict[str, dt.date] | None = None
) -> Path:
    """One PNG for one or several replays (e.g. one per policy): realized ROC AUC by cohort on top, the
    importance-weighted drifted share below; a triangle per training (filled when promoted), dotted lines at
    `marks` (e.g. the regime change)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (auc_axis, drift_axis) = plt.subplots(2, 1, figsize=(11, 7), sharex=True, height_ratios=(3, 2))
    # One baseline for every replay's training markers, so each replay's row sits below all curves and the rows
    # never land on one another (a per-replay minimum put two replays' rows at the same height).
    realized_aucs = [frame["realized_roc_auc"].dropna() for frame in timelines.values()]
    lowest_auc = min((aucs.min() for aucs in realized_aucs if len(aucs)), default=0.5)
    for index, (label, frame) in enumerate(timelines.items()):
        color = f"C{index}"
        realized = frame.dropna(subset=["realized_cohort", "realized_roc_auc"]).drop_duplicates("realized_cohort")
        auc_axis.plot(
            pd.to_datetime(realized["realized_cohort"]), realized["realized_roc_auc"], "o-", color=color, label=label
        )
        trained = frame[frame["training_outcome"].isin(["registered", "promoted"])]
        for _, row in trained.iterrows():
            filled = row["training_outcome"] == "promoted"
            auc_axis.plot(
                pd.to_datetime(row["run_date"]),
                lowest_auc - 0.01 - 0.01 * index,
                "^",
                color=color,
                markerfacecolor=color if filled else "none",
            )
        drift_axis.plot(pd.to_datetime(frame["run_date"]), frame["weighted_drifted_share"], ".-", color=color)
    for name, day in (marks or {}).items():
        for axis in (auc_axis, drift_axis):
            axis.axvline(pd.Timestamp(day), color="grey", linestyle=":")
        auc_axis.annotate(name, (pd.Timestamp(day), auc_axis.get_ylim()[1]), fontsize=8, va="top", ha="left")
    auc_axis.set_ylabel("realized ROC AUC (by cohort)")
    auc_axis.set_title(title)
    # Outside the axes: inside, the legend covered the first training markers drawn in the lower left.
    auc_axis.legend(
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        fontsize=8,
        title="▲ training\n(filled: promoted)",
        title_fontsize=8,
    )
    auc_axis.grid(alpha=0.3)
    drift_axis.set_ylabel("weighted drifted share")
    drift_axis.set_xlabel("run date (cohort date for realized AUC)")
    drift_axis.grid(alpha=0.3)
    figure.autofmt_xdate()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
