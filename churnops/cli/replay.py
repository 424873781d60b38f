"""`churnops replay` and `churnops timeline`: history replayed through the real DAGs, and what it showed.

A replay gets a folder of its own (`<home>/replays/<name>/`: working folder, embedded Airflow and MLflow, landing
folder, timeline) and a copy of the dataset's contract whose events come from the landing folder and whose dates are
not pinned. For each run date, a feeder releases the events up to the day before, as a source system would, and the
feature, drift, (training, when the drift DAG asked for it) and scoring DAGs run for that date in this process
through `dag.test()`, which is what `airflow dags test` (the path `make run` takes) runs. The timeline gets one row
per run date; a killed replay resumes at the first run date without one.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import time
from pathlib import Path
from typing import Annotated, Any

import pandas as pd
import typer
import yaml
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from churnops.cli.common import DatasetOption, app, console, setup
from churnops.cli.pipeline import airflow_command
from churnops.config import Settings
from churnops.dataset import DatasetContract, load_contract

DateOption = Annotated[dt.datetime, typer.Option(formats=["%Y-%m-%d"])]
REPLAY_FILE = "replay.json"


def _every_days(text: str) -> int:
    match = re.fullmatch(r"([1-9][0-9]*)d", text)
    if match is None:
        raise typer.BadParameter(f"expected a number of days such as 7d, got {text!r}", param_hint="--every")
    return int(match.group(1))


def replay_dates(start: dt.date, end: dt.date, every_days: int) -> list[dt.date]:
    """The run dates of a replay: `start`, then every `every_days` days, up to and including `end`."""
    return [start + dt.timedelta(days=i) for i in range(0, (end - start).days + 1, every_days)]


def _replay_contract(source: DatasetContract, name: str, landing: Path, folder: Path) -> Path:
    """The dataset's contract for the replay: its own name, events from the landing folder, no pinned dates."""
    assert source.events is not None
    raw: dict[str, Any] = source.model_dump(mode="json", exclude={"base_dir"}, exclude_none=True)
    raw["name"] = name
    raw["events"] = {**raw["events"], "path": str(landing), "format": "parquet"}
    if source.entities is not None:
        raw["entities"] = {**raw["entities"], "path": str(source.resolve(source.entities.path))}
    raw["cutoffs"] = {k: v for k, v in raw["cutoffs"].items() if k not in ("as_of", "out_of_time")}
    path = folder / "contract.yaml"
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def _remember(folder: Path, parameters: dict[str, Any]) -> None:
    """Refuse to resume a replay folder with other parameters; record them on the first run."""
    record = folder / REPLAY_FILE
    if record.exists():
        before = json.loads(record.read_text())
        if before != parameters:
            raise typer.BadParameter(
                f"replay {folder.name!r} already ran with {before}; resume it with the same options or pick another "
                "--name"
            )
        return
    folder.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps(parameters, indent=2))


@app.command()
def replay(
    start: Annotated[dt.datetime, typer.Option(formats=["%Y-%m-%d"], help="First run date.")],
    end: Annotated[dt.datetime, typer.Option(formats=["%Y-%m-%d"], help="Last run date (included).")],
    dataset: DatasetOption = None,
    every: Annotated[str, typer.Option(help="Days between run dates, e.g. 7d.")] = "7d",
    policy: Annotated[str, typer.Option(help="Retraining policy: drift, never or schedule:<N>d.")] = "drift",
    trials: Annotated[int | None, typer.Option(help="Optuna trials per training.", min=1)] = None,
    name: Annotated[
        str | None, typer.Option(help="Replay name (folder and model name); default from the options.")
    ] = None,
) -> None:
    """Replay a dataset's history through the real DAGs, one run date at a time, and record the timeline."""
    from churnops.monitoring.retrain import RetrainPolicy

    settings, source = setup(dataset)
    try:
        RetrainPolicy.parse(policy)
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--policy") from error
    dates = replay_dates(start.date(), end.date(), _every_days(every))
    name = name or f"{source.name}-replay-{policy.replace(':', '-')}"
    folder = settings.home / "replays" / name
    _remember(
        folder,
        {
            "dataset": dataset or settings.dataset,
            "start": dates[0].isoformat(),
            "end": end.date().isoformat(),
            "every": every,
            "policy": policy,
            "trials": trials,
        },
    )
    replay_settings = Settings(home=folder / "home", spark=settings.spark)
    contract_path = _replay_contract(source, name, folder / "landing", folder)
    contract = load_contract(str(contract_path), replay_settings)
    overrides = {"CHURNOPS_MONITORING__RETRAIN_POLICY": policy, "CHURNOPS_DATASET": str(contract_path)}
    if trials is not None:
        overrides["CHURNOPS_TRAINING__N_TRIALS"] = str(trials)
    run_replay(replay_settings, source, contract, contract_path, folder, dates, policy, overrides)


class EmbeddedAirflow:
    """The replay's embedded Airflow, in this process: one `dag.test()` per DAG run — what `airflow dags test` runs —
    without paying Airflow's start-up and a DAG parse for every run of every step."""

    def __init__(self, settings: Settings, overrides: dict[str, str]) -> None:
        import os
        import sys

        # Before Airflow is imported: its configuration, and every task's Settings, come from this environment.
        os.environ.update({**settings.airflow_environment(), **overrides})
        sys.path.insert(0, str(settings.airflow_dags_folder))  # the DAG files import their shared `common`
        from airflow.dag_processing.dagbag import DagBag

        self.bag = DagBag(dag_folder=str(settings.airflow_dags_folder))
        if self.bag.import_errors:
            raise RuntimeError(f"the DAG files do not import: {self.bag.import_errors}")

    def run(self, dag_id: str, run_date: dt.date, conf: dict[str, Any]) -> float:
        """Run `dag_id` for `run_date` with `conf`; return its seconds, raise when the run did not succeed."""
        started = time.perf_counter()
        logical_date = dt.datetime.combine(run_date, dt.time(), tzinfo=dt.UTC)
        dag_run = self.bag.get_dag(dag_id).test(logical_date=logical_date, run_conf=conf)
        if str(dag_run.state) != "success":
            raise RuntimeError(f"{dag_id} for {run_date} ended {dag_run.state}; see {Path('logs')} of its home")
        return time.perf_counter() - started


def run_replay(
    settings: Settings,
    source: DatasetContract,
    contract: DatasetContract,
    contract_path: Path,
    folder: Path,
    dates: list[dt.date],
    policy: str,
    overrides: dict[str, str],
) -> None:
    from churnops.cli.replay_steps import mature_remaining_lists, untrainable_reason
    from churnops.jobs.feeder import EventFeeder
    from churnops.monitoring.timeline import (
        append_step,
        observe_step,
        read_timeline,
        realized_cohorts,
        skipped_step,
        write_cohorts,
    )
    from churnops.registry import configure_mlflow

    settings.airflow_home.mkdir(parents=True, exist_ok=True)
    feeder = EventFeeder.for_contract(source, folder / "landing")
    feeder.release_history(dates[0] - dt.timedelta(days=1))
    done = set(read_timeline(folder).get("run_date", []))
    airflow_command(settings, "db", "migrate", overrides=overrides)
    airflow = EmbeddedAirflow(settings, overrides)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        task = progress.add_task(f"replay {contract.name}", total=len(dates), completed=len(done))
        for step, run_date in enumerate(dates):
            if run_date in done:
                continue
            progress.update(task, description=f"replay {contract.name}: {run_date}")
            feeder.release_until(run_date)
            identity = {"replay_id": folder.name, "policy": policy, "step": step, "run_date": run_date}
            # Until a first model can be trained the feature DAG would refuse the plan: recorded, not run.
            too_early = untrainable_reason(
                contract, run_date, settings.training.cv_folds, feeder.last_day(before=run_date)
            )
            configure_mlflow(settings)
            if too_early is not None:
                row = skipped_step(settings, contract, **identity, why=too_early)
            else:
                seconds, scored = _run_step(airflow, settings, contract, contract_path, run_date)
                configure_mlflow(settings)
                row = observe_step(settings, contract, **identity, seconds=seconds, scored_rows=scored)
            append_step(settings, folder, row)
            write_cohorts(folder, realized_cohorts(settings, contract, dates[-1]))
            progress.advance(task)
            console.print(_step_line(row))
    # The lists of the last run dates mature after them: the rest of the log is released and they are evaluated.
    maturity = mature_remaining_lists(settings, contract, feeder)
    if maturity is not None:
        console.print(
            f"after the last run date: log released up to {maturity.released_until}; lists evaluated: "
            f"{len(maturity.evaluated)}; lists whose horizon ends after the log: {len(maturity.beyond_the_log)}"
        )
    write_cohorts(folder, realized_cohorts(settings, contract, dates[-1]))
    console.print(f"timeline: {folder / 'timeline.parquet'}  (churnops timeline --replay {folder})")


def _run_step(
    airflow: EmbeddedAirflow, settings: Settings, contract: DatasetContract, contract_path: Path, run_date: dt.date
) -> tuple[dict[str, float], int | None]:
    """The DAGs of one run date: features, drift, training if the drift DAG asked for it, scoring."""
    from churnops.monitoring.store import open_store
    from churnops.paths import scores_path

    conf = {"dataset": str(contract_path), "run_date": run_date.isoformat()}
    seconds = {"features": airflow.run("churnops_features", run_date, conf)}
    seconds["drift"] = airflow.run("churnops_drift", run_date, conf)
    requested = [
        d
        for d in open_store(settings).retrain_decisions(contract.name)
        if d.run_date == run_date.isoformat() and d.fired and not d.advisory
    ]
    if requested:
        training_conf = {**conf, "retrain_reason": requested[0].trigger}
        seconds["training"] = airflow.run("churnops_training", run_date, training_conf)
    # Without a champion yet the scoring DAG skips its task: there is no list.
    seconds["scoring"] = airflow.run("churnops_scoring", run_date, conf)
    listed = scores_path(settings, contract.name, run_date)
    return seconds, len(pd.read_parquet(listed, columns=["customer_id"])) if listed.exists() else None


def _step_line(row: Any) -> str:
    from churnops.monitoring.timeline import NOT_RUN

    if row.decision_reason.startswith(NOT_RUN):
        return f"{row.run_date}: {row.decision_reason}"
    realized = (
        f"realized AUC {row.realized_roc_auc:.3f} (cohort {row.realized_cohort}, v{row.realized_model_version})"
        if row.realized_roc_auc is not None
        else "no matured list yet"
    )
    training = f"training {row.training_outcome} v{row.trained_version}" if row.training_outcome else "no training"
    drift = f"drift {row.weighted_drifted_share:.2f}" if row.weighted_drifted_share is not None else "no drift check"
    took = sum(row.seconds.values())
    return f"{row.run_date}: champion v{row.champion_version} | {drift} | {training} | {realized} | {took:.0f} s"


@app.command()
def timeline(
    replay_dirs: Annotated[list[Path], typer.Option("--replay", help="A replay folder (repeat to compare).")],
    out: Annotated[Path | None, typer.Option(help="PNG to draw (default: timeline.png in the first replay).")] = None,
    mark: Annotated[list[str] | None, typer.Option(help="NAME=YYYY-MM-DD lines on the plot.")] = None,
) -> None:
    """Print a replay's timeline and draw it as a PNG (realized ROC AUC and drift over time, trainings marked)."""
    from churnops.monitoring.timeline import read_cohorts, read_timeline
    from churnops.monitoring.timeline_plot import plot_timelines

    frames = {}
    for folder in replay_dirs:
        frame = read_timeline(folder)
        if frame.empty:
            raise typer.BadParameter(f"no timeline in {folder}: run `churnops replay` first", param_hint="--replay")
        frames[folder.name] = frame
        shown = frame[
            [
                "run_date",
                "champion_version",
                "weighted_drifted_share",
                "decision_trigger",
                "training_outcome",
                "trained_version",
                "realized_cohort",
                "realized_roc_auc",
            ]
        ]
        console.print(f"[bold]{folder.name}[/bold]")
        console.print(shown.to_string(index=False))
        cohorts = read_cohorts(folder)
        if not cohorts.empty:
            console.print("every evaluated list (one per cohort):")
            console.print(cohorts.drop(columns=["horizon_days"]).to_string(index=False))
    marks = {k: dt.date.fromisoformat(v) for k, v in (m.split("=", 1) for m in mark or [])}
    path = plot_timelines(frames, out or replay_dirs[0] / "timeline.png", ", ".join(frames), marks)
    console.print(f"drawn: {path}")
