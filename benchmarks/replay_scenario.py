"""The regime-change scenario replayed under several retraining policies, through the real DAGs (`churnops replay`).

Generates the `regime_shift` dataset (5,000 customers by default), replays 26 weekly run dates around the shift once
per policy — each replay in a folder of its own under `--home` — and writes, from the replays' own timelines:
- `docs/results/replay-regime-shift.md` + `.png`: per policy, the trainings, the first retraining after the shift,
  and the mean realized ROC AUC of the cohorts scored before and after the shift;
- `docs/benchmarks/replay.md`: wall time per replay and the median seconds per DAG per step.

    .venv/bin/python benchmarks/replay_scenario.py --home /tmp/replays --write-doc
    .venv/bin/python benchmarks/replay_scenario.py --home /tmp/replays --policies drift --write-doc   # one policy
    .venv/bin/python benchmarks/replay_scenario.py --home /tmp/replays --report-only --write-doc      # re-render

A replay killed midway resumes where it stopped when the command is run again with the same options.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import time
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.replay_common import churnops, replay_folder, stage_seconds, weekly_replay  # noqa: E402

DATASET = "regime_shift"
POLICIES = ("never", "schedule:28d", "drift")


def run(args: argparse.Namespace) -> dict[str, float]:
    """Generate once, then one replay per policy; return each replay's wall seconds (this run only)."""
    if not (args.home / "data" / DATASET / "events.parquet").exists():
        churnops(args.home, "generate", "--dataset", DATASET, "--customers", str(args.customers))
    walls = {}
    for policy in args.policies:
        started = time.perf_counter()
        weekly_replay(args.home, DATASET, args.start, args.end, policy, args.trials)
        walls[policy] = time.perf_counter() - started
    return walls


def summarise(timeline: pd.DataFrame, shift: dt.date) -> dict[str, object]:
    """What a policy did: trainings, the first retraining after the shift, realized ROC AUC before and after."""
    trained = timeline[timeline["training_outcome"].isin(["registered", "promoted"])]
    after = pd.to_datetime(timeline["run_date"]).dt.date >= shift
    cohorts = timeline.dropna(subset=["realized_roc_auc"]).drop_duplicates("realized_cohort")
    cohort_after = pd.to_datetime(cohorts["realized_cohort"]).dt.date >= shift
    first_after = trained[pd.to_datetime(trained["run_date"]).dt.date >= shift]
    steps_after = (
        int((pd.to_datetime(first_after["run_date"].iloc[0]).date() - shift).days // 7) if len(first_after) else None
    )
    return {
        "trainings": len(trained),
        "promoted": int((trained["training_outcome"] == "promoted").sum()),
        "trainings_after_shift": int(after[trained.index].sum()) if len(trained) else 0,
        "skipped_no_new_data": int((timeline["training_outcome"] == "skipped").sum()),
        "first_retraining_after_shift": None if steps_after is None else str(first_after["run_date"].iloc[0]),
        "weeks_from_shift_to_first_retraining": steps_after,
        "realized_auc_before_shift": float(cohorts.loc[~cohort_after, "realized_roc_auc"].mean()),
        "realized_auc_after_shift": float(cohorts.loc[cohort_after, "realized_roc_auc"].mean()),
        "cohorts_after_shift": int(cohort_after.sum()),
        "steps": len(timeline),
    }


def write_docs(args: argparse.Namespace, walls: dict[str, float]) -> None:
    from churnops.jobs.generate import SCENARIOS
    from churnops.monitoring.timeline import read_timeline
    from churnops.monitoring.timeline_plot import plot_timelines

    shift = SCENARIOS[DATASET].shift_at
    # The policies asked for (`--policies`), so a replay still running can be left out of the page.
    timelines = {p: read_timeline(replay_folder(args.home, DATASET, p)) for p in args.policies}
    timelines = {p: t for p, t in timelines.items() if not t.empty}
    results = REPO / "docs" / "results"
    png = plot_timelines(
        timelines,
        results / "replay-regime-shift.png",
        "regime_shift: realized ROC AUC by policy",
        {"price rise": shift},
    )
    rows = {p: summarise(t, shift) for p, t in timelines.items()}
    lines = [
        "# The regime-change scenario, replayed under the retraining "
        + ("policy " if len(rows) == 1 else "policies ")
        + ", ".join(f"`{p}`" for p in rows),
        "",
        f"Written by `benchmarks/replay_scenario.py` from the replays' own timelines ({dt.date.today()}; "
        f"{args.customers:,} customers, run dates {args.start} to {args.end} every 7 days, {args.trials} Optuna "
        f"trials per training, price rise on {shift}). Each replay ran the real feature, drift, training and scoring "
        "DAGs for every run date (`churnops replay`).",
        "",
        "| policy | trainings (promoted) | skipped: no new data | first retraining after the shift | "
        "mean realized ROC AUC before the shift | after the shift (cohorts) |",
        "|---|---:|---:|---|---:|---:|",
    ]
    for policy, row in rows.items():
        first = row["first_retraining_after_shift"]
        first_text = f"{first} (week {row['weeks_from_shift_to_first_retraining']})" if first else "none"
        lines.append(
            f"| `{policy}` | {row['trainings']} ({row['promoted']}) | {row['skipped_no_new_data']} | {first_text} | "
            f"{row['realized_auc_before_shift']:.4f} | {row['realized_auc_after_shift']:.4f} "
            f"({row['cohorts_after_shift']}) |"
        )
    lines += [
        "",
        f"![realized ROC AUC and drift over time]({png.name})",
        "",
        "```json",
        json.dumps(rows, indent=2),
        "```",
        "",
    ]
    (results / "replay-regime-shift.md").write_text("\n".join(lines))
    bench = [
        "# Replay speed",
        "",
        f"Written by `benchmarks/replay_scenario.py` ({dt.date.today()}, {platform.node()}, "
        f"{os.cpu_count()} cores, load average at the end {os.getloadavg()[0]:.1f}). Seconds per DAG are medians "
        "over the run dates of each replay, read from its timeline (`dag.test()` of each DAG in the replay's "
        "process, spark-submit included); wall time covers this invocation only.",
        "",
        "| policy | steps | wall (this run) | sum of DAG seconds | median step | features | drift | training "
        "(when run) | scoring |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for policy, timeline in timelines.items():
        s = stage_seconds(timeline)
        wall = f"{walls[policy] / 60:.1f} min" if policy in walls else "—"
        bench.append(
            f"| `{policy}` | {len(timeline)} | {wall} | {s['all_steps'] / 60:.1f} min | {s['step_total']:.0f} s | "
            f"{s.get('features', float('nan')):.0f} s | {s.get('drift', float('nan')):.0f} s | "
            f"{s.get('training', float('nan')):.0f} s | {s.get('scoring', float('nan')):.1f} s |"
        )
    page = REPO / "docs" / "benchmarks" / "replay.md"
    # Sections written by hand below the generated table (their own measurements, with their commands) are kept.
    kept = page.read_text().partition("\n## ") if page.exists() else ("", "", "")
    page.write_text("\n".join(bench) + "\n" + (f"\n## {kept[2]}" if kept[1] else ""))
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, required=True, help="working folder for the data and the replays")
    parser.add_argument("--customers", type=int, default=5000)
    parser.add_argument("--start", default="2024-06-03")
    parser.add_argument("--end", default="2024-11-25")
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--policies", nargs="+", default=list(POLICIES), choices=POLICIES)
    parser.add_argument("--report-only", action="store_true", help="only re-render from the existing timelines")
    parser.add_argument("--write-doc", action="store_true")
    args = parser.parse_args()
    walls = {} if args.report_only else run(args)
    for policy, seconds in walls.items():
        print(f"{policy}: {seconds / 60:.1f} min")
    if args.write_doc:
        write_docs(args, walls)


if __name__ == "__main__":
    main()
