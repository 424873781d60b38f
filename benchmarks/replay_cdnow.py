"""CDNOW replayed weekly through the real DAGs (`churnops replay`), with the realized ROC AUC of every cohort.

Replays the `cdnow` dataset (the real purchase log, 90-day repeat-purchase propensity) every 7 days from 1997-07-01
to 1998-03-31 under the `drift` policy, then writes, from the replay's own timeline and cohort records:
`docs/results/replay-cdnow.md` + `.png` — per cohort (list scored at a run date): customers scored, positive rate,
realized ROC AUC, precision at the top 10 %, the version that scored it; the trainings and their reasons; the run
dates not run because there was too little history to train a first model.

A list scored at run date d matures at d + 90 days. The replay itself (`churnops replay`) evaluates the lists whose
horizon ends after the last run date once the run dates are done: it releases the rest of the log up to the last
list's maturity and runs the platform's `compute_realized_performance`, with no new scoring.

    .venv/bin/python benchmarks/replay_cdnow.py --home /tmp/cdnow-replay --write-doc
    .venv/bin/python benchmarks/replay_cdnow.py --home /tmp/cdnow-replay --report-only --write-doc   # re-render

A replay killed midway resumes where it stopped when the command is run again with the same options.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.replay_common import churnops, replay_folder, stage_seconds, weekly_replay  # noqa: E402

DATASET = "cdnow"
POLICY = "drift"
RESULTS = REPO / "docs" / "results"


def run(args: argparse.Namespace) -> float:
    """Prepare CDNOW once, replay it; return the wall seconds of this invocation."""
    if not (args.home / "data" / DATASET / "events.parquet").exists():
        churnops(args.home, "generate", "--dataset", DATASET)
    started = time.perf_counter()
    weekly_replay(args.home, DATASET, args.start, args.end, POLICY, args.trials)
    return time.perf_counter() - started


def cohort_table(timeline: pd.DataFrame, cohorts: pd.DataFrame) -> pd.DataFrame:
    """One row per list the replay scored: its run date, customers scored, the version that scored it, and its
    realized outcome — positive rate, ROC AUC, precision at the top 10 % — with when it was evaluated ("replay": at a
    later run date, "after": once the replay released the rest of the log, "not matured": its horizon ends after
    the log)."""
    scored = timeline[timeline["scored_rows"].notna()][["run_date", "scored_rows", "champion_version"]]
    frame = scored.merge(cohorts, how="left", left_on="run_date", right_on="cohort")
    # An evaluation exists when the store has a record (its ROC AUC is empty when the cohort had one class only).
    evaluated = frame["n_scored"].notna().to_numpy()
    after = frame["matured_after_replay"].astype("boolean").fillna(False).to_numpy(dtype=bool)
    return pd.DataFrame(
        {
            "run_date": frame["run_date"],
            "customers_scored": frame["scored_rows"].astype("int64"),
            "model_version": frame["model_version"].fillna(frame["champion_version"]),
            "positive_rate": frame["observed_rate"],
            "roc_auc": frame["roc_auc"],
            "precision_at_10": frame["precision_at_10"],
            "evaluated": np.where(~evaluated, "not matured", np.where(after, "after", "replay")),
        }
    )


def training_table(timeline: pd.DataFrame) -> pd.DataFrame:
    """The trainings of the replay: run date, the trigger and reason that started it, the outcome and version."""
    trained = timeline[timeline["training_outcome"].notna()]
    return pd.DataFrame(
        {
            "run_date": trained["run_date"],
            "trigger": trained["decision_trigger"],
            "reason": trained["decision_reason"],
            "outcome": trained["training_outcome"],
            "version": trained["trained_version"],
        }
    ).reset_index(drop=True)


def not_run(timeline: pd.DataFrame) -> pd.DataFrame:
    """The run dates whose DAGs were not run, and why (`churnops.monitoring.timeline.skipped_step`)."""
    from churnops.monitoring.timeline import NOT_RUN

    skipped = timeline[timeline["decision_reason"].str.startswith(NOT_RUN)]
    return skipped[["run_date", "decision_reason"]].reset_index(drop=True)


def per_cohort_frame(timeline: pd.DataFrame, table: pd.DataFrame) -> pd.DataFrame:
    """The timeline with each run date's own list as its realized cohort, for `plot_timelines`."""
    auc = table.set_index("run_date")["roc_auc"]
    return timeline.assign(
        realized_cohort=timeline["run_date"].where(timeline["run_date"].isin(auc.dropna().index)),
        realized_roc_auc=timeline["run_date"].map(auc),
    )


def _fmt(value: object, digits: int) -> str:
    return "—" if value is None or pd.isna(value) else f"{value:.{digits}f}"


def render(
    args: argparse.Namespace, timeline: pd.DataFrame, cohorts: pd.DataFrame, wall: float | None, out: Path
) -> str:
    """The results page (its PNG drawn into `out`), every figure computed from the timeline and cohort records."""
    from churnops.monitoring.timeline_plot import plot_timelines

    table = cohort_table(timeline, cohorts)
    trainings = training_table(timeline)
    skipped = not_run(timeline)
    png = plot_timelines(
        {f"cdnow, policy {POLICY}": per_cohort_frame(timeline, table)},
        out / "replay-cdnow.png",
        "CDNOW weekly replay: realized ROC AUC of each run date's list (90-day horizon)",
    )
    evaluated = table.dropna(subset=["roc_auc"])
    trained = trainings["outcome"].isin(["registered", "promoted"])
    seconds = stage_seconds(timeline[timeline["seconds"] != "{}"]) if (timeline["seconds"] != "{}").any() else {}
    ran = timeline[~timeline["run_date"].isin(skipped["run_date"])]
    lines = [
        "# CDNOW replayed weekly through the real DAGs",
        "",
        f"Written by `benchmarks/replay_cdnow.py` from the replay's own timeline and cohort records "
        f"({dt.date.today()}; run dates {args.start} to {args.end} every 7 days, policy `{POLICY}`, {args.trials} "
        "Optuna trials per training). Each run date that could train ran the real feature, drift, training (when "
        "asked) and scoring DAGs (`churnops replay`). A list scored at run date d is judged on purchases in "
        "[d, d + 90 days) by the platform's `compute_realized_performance`; the lists whose horizon ended after "
        "the last run date were judged once the replay had released the rest of the log (column *evaluated*: "
        "`replay` = at a later run date, `after` = after the last run date, no new scoring).",
        "",
        f"- run dates: {len(timeline)}; not run for lack of history: {len(skipped)}"
        + (f" (first run date that ran: {ran['run_date'].min()})" if len(ran) else ""),
        f"- lists scored: {len(table)}; evaluated: {len(evaluated)} "
        f"({int((evaluated['evaluated'] == 'after').sum())} after the last run date); not matured within the log: "
        f"{int((table['evaluated'] == 'not matured').sum())}",
        f"- realized ROC AUC per cohort: mean {_fmt(evaluated['roc_auc'].mean(), 4)}, min "
        f"{_fmt(evaluated['roc_auc'].min(), 4)}, max {_fmt(evaluated['roc_auc'].max(), 4)}; precision at the top "
        f"10 %: mean {_fmt(evaluated['precision_at_10'].mean(), 4)}",
        f"- trainings requested: {len(trainings)}; trained: {int(trained.sum())} "
        f"({int((trainings['outcome'] == 'promoted').sum())} promoted); skipped for lack of new data: "
        f"{int((trainings['outcome'] == 'skipped').sum())}",
    ]
    if seconds:
        lines.append(
            f"- seconds (indicative, shared 2-core machine): median step {seconds['step_total']:.0f} s, sum of DAG "
            f"time {seconds['all_steps'] / 60:.1f} min"
            + (f", wall of this invocation {wall / 60:.1f} min" if wall is not None else "")
            + f"; {platform.node()}, load average at the end {os.getloadavg()[0]:.1f}"
        )
    lines += [
        "",
        "## Per cohort",
        "",
        "| run date (cohort) | customers scored | positive rate | realized ROC AUC | precision at top 10 % | "
        "scored by version | evaluated |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for row in table.itertuples():
        lines.append(
            f"| {row.run_date} | {row.customers_scored:,} | {_fmt(row.positive_rate, 4)} | {_fmt(row.roc_auc, 4)} | "
            f"{_fmt(row.precision_at_10, 4)} | {row.model_version} | {row.evaluated} |"
        )
    lines += ["", f"![realized ROC AUC per cohort, trainings marked]({png.name})", "", "## Trainings", ""]
    lines += ["| run date | trigger | reason | outcome | version |", "|---|---|---|---|---:|"]
    for row in trainings.itertuples():
        # A skipped training names the version that had already learned from the same snapshot.
        version = f"(v{row.version} already learned it)" if row.outcome == "skipped" else (row.version or "—")
        lines.append(f"| {row.run_date} | {row.trigger} | {row.reason} | {row.outcome} | {version} |")
    if len(skipped):
        first, last = skipped["run_date"].min(), skipped["run_date"].max()
        lines += [
            "",
            "## Run dates not run",
            "",
            f"Run dates recorded without running the DAGs: {len(skipped)} ({first} to {last}). The contract's "
            "cutoffs could not yet give a first model fully observed training and out-of-time labels and one time "
            f"fold. The reason recorded for the last of them: {skipped['decision_reason'].iloc[-1]}",
        ]
    return "\n".join(lines) + "\n"


def main() -> None:
    from churnops.monitoring.timeline import read_cohorts, read_timeline

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, required=True, help="working folder for the data and the replay")
    parser.add_argument("--start", default="1997-07-01")
    parser.add_argument("--end", default="1998-03-31")
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--report-only", action="store_true", help="only re-render from the existing replay")
    parser.add_argument("--write-doc", action="store_true", help="write into docs/results (else the replay folder)")
    args = parser.parse_args()
    wall = None if args.report_only else run(args)
    folder = replay_folder(args.home, DATASET, POLICY)
    timeline = read_timeline(folder)
    if timeline.empty:
        raise SystemExit(f"no timeline in {folder}: run without --report-only first")
    out = RESULTS if args.write_doc else folder
    page = render(args, timeline, read_cohorts(folder), wall, out)
    (out / "replay-cdnow.md").write_text(page)
    print(page)


if __name__ == "__main__":
    main()
