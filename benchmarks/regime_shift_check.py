"""Evidence for the regime-change scenario, measured through the platform's own jobs but without the replay.

On the `regime_shift` dataset (the seeded generator with its price rise, `churnops.jobs.generate.SCENARIOS`):

1. builds feature snapshots with `run_feature_job` for a few run dates before and after the shift — the bootstrap
   (the first step of a weekly replay), the retraining dates below, and late dates whose training cutoffs hold every
   weekly cohort (a cutoff's rows are point-in-time, so they are the same in any snapshot that holds the cutoff;
   the script checks it on the cutoffs two snapshots share);
2. trains the pre-shift champion on the bootstrap snapshot (`churnops.jobs.training.train`, few Optuna trials), and
   retrains on the snapshots of a few later run dates (each through the real champion gate);
3. scores every weekly cohort with each model that existed by then, and measures its realized ROC AUC from the
   bronze events with the platform's label rule once the horizon has passed (`churnops.monitoring.realized`);
4. measures, week by week, the PSI of each weekly cohort against the pre-shift champion's reference with
   `churnops.monitoring.drift.measure_drift`, with the champion's gain importance, and asks the drift trigger of
   `churnops.monitoring.retrain.drift_candidate` whether it would fire (the champion never retrained, the default
   settings).

    .venv/bin/python benchmarks/regime_shift_check.py [--customers 5000] [--trials 10] [--write-doc]

Prints the tables; `--write-doc` also writes `docs/benchmarks/regime-shift.md`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from churnops.bronze import read_bronze_events
from churnops.config import PACKAGE_DIR, Settings
from churnops.dataset import DatasetContract, load_contract
from churnops.features import CUTOFF, ENTITY_ID, LABEL
from churnops.jobs.features import run_feature_job
from churnops.jobs.generate import SCENARIOS, PriceRise, generate, write_generated
from churnops.jobs.score import score_frame
from churnops.jobs.training import train
from churnops.monitoring.drift import reference_rows, reference_snapshot_dir
from churnops.monitoring.measure import gain_importances, measure_drift
from churnops.monitoring.realized import evaluate_list, realized_outcomes
from churnops.monitoring.retrain import drift_candidate
from churnops.monitoring.store import DriftRun
from churnops.registry import LoadedModel, configure_mlflow, load_model_version
from churnops.snapshots import load_snapshot

DATASET = "regime_shift"
WEEK = dt.timedelta(days=7)
# The first step of the weekly replay the scenario is made for: the pre-shift champion is trained on this date.
BOOTSTRAP = dt.date(2024, 6, 3)
# Retraining run dates, in weeks after the shift: every week from the drift trigger's first firing to the first
# date whose training holds a cutoff after the shift, each gated against the champion of the time (as in a replay).
RETRAIN_WEEKS = (2, 3, 4, 5, 6, 7)
# Late run dates whose training cutoffs cover the weekly cohorts (12 weekly cutoffs each; see the module docstring).
COVERING_RUN_DATES = (dt.date(2024, 10, 14), dt.date(2024, 12, 23))
DRIFT_WEEKS = 6


@dataclass(frozen=True)
class Model:
    label: str
    run_date: dt.date
    loaded: LoadedModel
    promoted: bool
    reason: str


def build_snapshots(settings: Settings, contract: DatasetContract, run_dates: list[dt.date]) -> dict:
    """Run the feature job for each run date; return {run date: (frame, metadata, path)} and the seconds taken."""
    snapshots, seconds = {}, []
    for run_date in sorted(set(run_dates)):
        started = time.perf_counter()
        run = run_feature_job(contract, settings, run_date, app_name="regime-shift-check")
        seconds.append(time.perf_counter() - started)
        frame, metadata = load_snapshot(run.snapshot_dir)
        snapshots[run_date] = (frame, metadata, run.snapshot_dir)
    return snapshots, seconds


def cohorts_by_cutoff(snapshots: dict) -> dict[dt.date, pd.DataFrame]:
    """Every cutoff's rows, from whichever snapshot holds it; cutoffs held twice must agree row for row."""
    cohorts: dict[dt.date, pd.DataFrame] = {}
    for frame, _, _ in snapshots.values():
        for cutoff, rows in frame.groupby(CUTOFF):
            day = pd.Timestamp(cutoff).date()
            rows = rows.drop(columns=[LABEL, "label_available"]).sort_values(ENTITY_ID, ignore_index=True)
            if day in cohorts:
                pd.testing.assert_frame_equal(cohorts[day], rows, check_dtype=False)
            cohorts[day] = rows
    return cohorts


def train_model(
    settings: Settings, contract: DatasetContract, snapshot: Path, run_date: dt.date, label: str, trials: int
) -> Model:
    result = train(settings, contract, snapshot_dir=snapshot, n_trials=trials)
    loaded = load_model_version(contract.model_name, result.model_version)
    return Model(label, run_date, loaded, result.decision.promoted, result.decision.reason)


def realized_table(
    settings: Settings, contract: DatasetContract, cohorts: dict, models: list[Model], shift: dt.date, end: dt.date
) -> pd.DataFrame:
    """Realized ROC AUC per weekly cohort for every model trained by the cohort's date."""
    horizon = dt.timedelta(days=contract.label.horizon_days)
    events = read_bronze_events(settings, contract.name, columns=[ENTITY_ID, "event_day", "event_type"])
    rise = PriceRise()
    rows = []
    for cutoff in sorted(c for c in cohorts if c >= BOOTSTRAP and c + horizon <= end):
        features = cohorts[cutoff]
        outcomes = realized_outcomes(events, contract, features[ENTITY_ID], cutoff)
        in_group = ((features["plan"] == rise.plan) & (features["region"] == rise.region)).to_numpy()
        row = {
            "cohort": cutoff,
            "weeks after shift": (cutoff - shift).days // 7,
            "customers": len(features),
            "churn rate": outcomes.mean(),
            "churn rate in group": outcomes[in_group].mean(),
        }
        for model in models:
            if model.run_date <= cutoff:
                scored = score_frame(model.loaded, features, cutoff, settings.scoring.risk_bands)
                scored = scored.set_index(ENTITY_ID).loc[features[ENTITY_ID]].reset_index()
                row[model.label] = evaluate_list(scored, outcomes, contract, cutoff).roc_auc
        rows.append(row)
    return pd.DataFrame(rows)


def drift_table(
    settings: Settings,
    contract: DatasetContract,
    cohorts: dict,
    champion: Model,
    shift: dt.date,
    weeks: tuple[dt.date, dt.date],
) -> pd.DataFrame:
    """PSI of each weekly cohort from `weeks[0]` to `weeks[1]` against the champion's reference, and what the drift
    trigger would say if the champion stayed in place."""
    monitoring = settings.monitoring
    ref_frame, ref_meta = load_snapshot(reference_snapshot_dir(settings, contract, champion.loaded))
    reference = reference_rows(ref_frame, ref_meta, monitoring.reference_cutoffs)
    numeric, categorical = list(champion.loaded.schema.numeric), list(champion.loaded.schema.categorical)
    importances = gain_importances(champion.loaded)
    runs: list[DriftRun] = []
    rows = []
    week, last = weeks
    while week <= last and week in cohorts:
        measured = measure_drift(reference, cohorts[week], numeric, categorical, importances, monitoring)
        now = dt.datetime.combine(week, dt.time(), tzinfo=dt.UTC)
        runs.insert(
            0,
            DriftRun(
                drift_run_id=f"check-{week}",
                dataset=contract.name,
                model_name=champion.loaded.name,
                model_version=champion.loaded.version,
                started_at=now,
                finished_at=now,
                reference_snapshot=ref_meta.snapshot_id,
                current_snapshot=f"cohort-{week}",
                features=measured.features,
                score_psi=None,
                weighted_drifted_share=measured.weighted_drifted_share,
                warn_threshold=monitoring.psi_warn,
                drift_threshold=monitoring.psi_drift,
                important_drifted=measured.important_drifted,
            ),
        )
        candidate = drift_candidate(runs, monitoring)
        verdict = "-" if candidate is None else ("fires" if candidate.wants_to_fire else "not confirmed")
        drifted = sorted((f for f in measured.features if f.drifted), key=lambda f: -(f.psi or 0))
        support = {f.feature: f for f in measured.features if f.feature.startswith("support_call_count")}
        rows.append(
            {
                "run date": week,
                "weeks after shift": (week - shift).days // 7,
                "support_call_count_30d PSI": support["support_call_count_30d"].psi,
                "support_call_count_90d PSI": support["support_call_count_90d"].psi,
                "drifted features (PSI, importance)": ", ".join(
                    f"{f.feature} ({f.psi:.2f}, {f.importance:.1%})" for f in drifted if f.psi is not None
                )
                or "none",
                "important drifted": ", ".join(measured.important_drifted) or "none",
                "weighted drifted share": measured.weighted_drifted_share,
                "drift trigger": verdict,
            }
        )
        week += WEEK
    return pd.DataFrame(rows)


def first_week_training_sees_the_shift(contract: DatasetContract, shift: dt.date) -> int:
    """Weeks after the shift until a run date's training cutoffs include one after the shift (from the plan)."""
    weeks = 0
    while not any(cutoff > shift for cutoff in contract.plan(shift + weeks * WEEK).train):
        weeks += 1
    return weeks


def summary_lines(realized: pd.DataFrame, drift: pd.DataFrame, models: list[Model]) -> list[str]:
    """Mean realized ROC AUC before and after the shift, each retrained model against the champion, and the first
    week the drift trigger fires."""
    champion = models[0].label
    fired = drift.loc[drift["drift trigger"] == "fires", "weeks after shift"]
    before = realized[realized["weeks after shift"] < 0]
    first = realized[realized["weeks after shift"].between(0, 5)]
    later = realized[realized["weeks after shift"] >= 6]
    lines = [
        f"- {champion}: mean realized ROC AUC {before[champion].mean():.3f} over the {len(before)} cohorts before "
        f"the shift, {first[champion].mean():.3f} over the first six from the shift on (weeks 0-5), "
        f"{later[champion].mean():.3f} over the {len(later)} after those.",
    ]
    if not fired.empty:
        first = int(fired.iloc[0])
        when = f"{first} weeks after the shift" if first >= 0 else f"{-first} weeks before the shift"
        lines.append(f"- With the pre-shift champion in place, the drift trigger first fires {when}.")
    for model in models[1:]:
        both = realized[realized[model.label].notna()]
        gate = "promoted" if model.promoted else "not promoted"
        lines.append(
            f"- {model.label}: mean realized ROC AUC {both[model.label].mean():.3f} against {champion}'s "
            f"{both[champion].mean():.3f} on the same {len(both)} cohorts ({gate} by the gate: {model.reason})."
        )
    return lines


# The features the scenario (and the calendar) move, whose gain decides whether their drift counts.
WATCHED_FEATURES = ("support_call_count_30d", "support_call_count_90d", "days_since_signup", "days_since_first_event")


def importance_table(models: list[Model]) -> pd.DataFrame:
    """Each model's gain share of the watched features, and its three largest."""
    rows = []
    for model in models:
        gains = gain_importances(model.loaded)
        top = sorted(gains.items(), key=lambda item: -item[1])[:3]
        rows.append(
            {
                "model": model.label,
                **{name: f"{gains.get(name, 0.0):.1%}" for name in WATCHED_FEATURES},
                "largest": ", ".join(f"{name} {share:.1%}" for name, share in top),
            }
        )
    return pd.DataFrame(rows)


def markdown(frame: pd.DataFrame) -> str:
    def cell(value: object) -> str:
        if isinstance(value, float):
            return "" if np.isnan(value) else f"{value:.3f}"
        return str(value)

    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


@dataclass(frozen=True)
class Measured:
    settings: Settings
    events: int
    shift: dt.date
    models: list[Model]
    realized: pd.DataFrame
    drift: pd.DataFrame
    drift_after: pd.DataFrame
    lag_weeks: int
    feature_seconds: list[float]
    train_seconds: float


def measure(customers: int, seed: int, trials: int, home: Path) -> Measured:
    """Generate the scenario, build the snapshots, train and retrain, and measure realized AUC and drift."""
    settings = Settings(home=home, training={"n_trials": trials}, spark={"master": "local[2]"})
    configure_mlflow(settings)
    contract = load_contract(DATASET, settings)
    scenario = SCENARIOS[DATASET]
    shift = scenario.shift_at
    assert shift is not None and contract.events is not None and contract.entities is not None
    data = generate(customers, seed=seed, start=scenario.start, end=scenario.end, shift_at=shift)
    write_generated(data, contract.resolve(contract.events.path), contract.resolve(contract.entities.path))

    retrain_dates = [shift + weeks * WEEK for weeks in RETRAIN_WEEKS]
    snapshots, feature_seconds = build_snapshots(settings, contract, [BOOTSTRAP, *retrain_dates, *COVERING_RUN_DATES])
    cohorts = cohorts_by_cutoff(snapshots)
    train_started = time.perf_counter()
    models = [train_model(settings, contract, snapshots[BOOTSTRAP][2], BOOTSTRAP, "pre-shift champion", trials)]
    for weeks, run_date in zip(RETRAIN_WEEKS, retrain_dates, strict=True):
        label = f"retrained at shift+{weeks}w"
        models.append(train_model(settings, contract, snapshots[run_date][2], run_date, label, trials))
    train_seconds = time.perf_counter() - train_started
    recovered = models[-1]
    return Measured(
        settings=settings,
        events=len(data.events),
        shift=shift,
        models=models,
        realized=realized_table(settings, contract, cohorts, models, shift, scenario.end),
        drift=drift_table(
            settings, contract, cohorts, models[0], shift, (BOOTSTRAP + WEEK, shift + DRIFT_WEEKS * WEEK)
        ),
        drift_after=drift_table(
            settings, contract, cohorts, recovered, shift, (recovered.run_date + WEEK, scenario.end)
        ),
        lag_weeks=first_week_training_sees_the_shift(contract, shift),
        feature_seconds=feature_seconds,
        train_seconds=train_seconds,
    )


def render(measured: Measured, customers: int, seed: int, trials: int, seconds: float) -> str:
    """The tables and the summary as Markdown."""
    monitoring, recovered = measured.settings.monitoring, measured.models[-1]
    contract = load_contract(DATASET, measured.settings)
    return "\n".join(
        [
            f"Dataset `{DATASET}`: {customers:,} customers, seed {seed}, {measured.events:,} events; price rise "
            f"{PriceRise()} on {measured.shift}. Horizon {contract.label.horizon_days} days, weekly cutoffs, "
            f"{contract.cutoffs.train_cutoffs} training cutoffs, population active within "
            f"{contract.population.active_within_days} days; {trials} Optuna trials per training.",
            "",
            "### Realized ROC AUC per weekly cohort",
            "",
            markdown(measured.realized),
            "",
            *summary_lines(measured.realized, measured.drift, measured.models),
            f"- A run's training first holds a cutoff after the shift {measured.lag_weeks} weeks after it (the "
            "contract's plan); a retraining before that learns nothing of the new mechanism.",
            "",
            "### Drift of each weekly cohort against the pre-shift champion's reference",
            "",
            f"Reference: the champion's `{monitoring.reference_cutoffs}` rows; a feature drifts at PSI >= "
            f"{monitoring.psi_drift}; it counts for retraining with >= {monitoring.min_feature_importance:.0%} of the "
            "champion's gain. The trigger column is `churnops.monitoring.retrain.drift_candidate` over the weeks so "
            "far (default settings, champion never replaced).",
            "",
            markdown(measured.drift),
            "",
            f"### Drift of the later weekly cohorts against the reference of the model {recovered.label}",
            "",
            "The same measurement with the last retrained model in place of the champion "
            f"({'promoted' if recovered.promoted else 'not promoted'} by the gate), from the week after its run date.",
            "",
            markdown(measured.drift_after),
            "",
            "### Gain shares (of each model's total gain)",
            "",
            markdown(importance_table(measured.models)),
            "",
            f"Run time: {seconds / 60:.1f} min in all; feature jobs "
            f"{', '.join(f'{s:.0f}' for s in measured.feature_seconds)} s (one Spark start each); "
            f"{len(measured.models)} trainings {measured.train_seconds:.0f} s. Machine: {os.cpu_count()} cores, "
            f"{platform.platform()}, shared with other work; run on {dt.date.today()}.",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--home", type=Path, default=None, help="working folder (default: a temporary one)")
    parser.add_argument("--write-doc", action="store_true", help="also write docs/benchmarks/regime-shift.md")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="regime-shift-") as scratch:
        measured = measure(args.customers, args.seed, args.trials, args.home or Path(scratch))
    report = render(measured, args.customers, args.seed, args.trials, time.perf_counter() - started)
    print(report)  # noqa: T201
    if args.write_doc:
        command = "    .venv/bin/python benchmarks/regime_shift_check.py " + " ".join(
            f"--{k} {v}" for k, v in (("customers", args.customers), ("seed", args.seed), ("trials", args.trials))
        )
        page = PACKAGE_DIR.parent / "docs" / "benchmarks" / "regime-shift.md"
        page.write_text(
            "# The regime-change scenario, measured without the replay\n\n"
            "Produced by `benchmarks/regime_shift_check.py` (do not edit the figures by hand). Command:\n\n"
            f"{command} --write-doc\n\n{report}\n"
        )
        print(f"wrote {page}")  # noqa: T201


if __name__ == "__main__":
    main()
