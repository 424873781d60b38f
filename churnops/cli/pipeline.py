"""The pipeline commands: the main job through the embedded Airflow (`run`), drift and retraining (`drift`), and
drifted copies of a dataset for demos (`inject-drift`)."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import Progress, TextColumn, TimeElapsedColumn

from churnops.cli.common import DatasetOption, RunDateOption, app, console, day, setup
from churnops.cli.stages import generate
from churnops.config import Settings
from churnops.dataset import DatasetContract

PIPELINE_DAGS = ("churnops_features", "churnops_training", "churnops_scoring")


def airflow_command(settings: Settings, *args: str, overrides: Mapping[str, str] | None = None) -> None:
    """Run `airflow ARGS` on the embedded Airflow; exit with its log tail if it fails.

    The child inherits this process's environment (so every `CHURNOPS_*` setting, database and MLflow URL reaches
    the tasks), with the embedded Airflow's settings on top and `overrides` (command-line options) last.
    """
    command = [str(Path(sys.executable).parent / "airflow"), *args]
    env = {**os.environ, **settings.airflow_environment(), **(overrides or {})}
    completed = subprocess.run(command, env=env, capture_output=True, text=True)
    if completed.returncode != 0:
        log_tail = "\n".join((completed.stdout + completed.stderr).splitlines()[-40:])
        console.print(f"[red]`airflow {' '.join(args)}` failed:[/red]\n{log_tail}")
        raise typer.Exit(1)


@app.command()
def run(
    dataset: DatasetOption = None,
    customers: Annotated[int, typer.Option(help="Synthetic customers to generate if the data is missing.")] = 5000,
    trials: Annotated[int | None, typer.Option(help="Optuna trials (default from settings).", min=1)] = None,
) -> None:
    """The main job end to end on the embedded Airflow: data, then the feature, training and scoring DAGs."""
    settings, contract = setup(dataset)
    overrides = {"CHURNOPS_TRAINING__N_TRIALS": str(trials)} if trials is not None else {}
    settings.airflow_home.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    with Progress(TextColumn("{task.description}"), TimeElapsedColumn(), console=console) as progress:
        source = contract.events or contract.entities
        if source is not None and not contract.resolve(source.path).exists():
            step = progress.add_task("generating data")
            started = time.perf_counter()
            generate(dataset=dataset, customers=customers, seed=7)
            timings["generate data"] = time.perf_counter() - started
            progress.update(step, completed=1, total=1, description="data generated")
        step = progress.add_task("airflow db migrate")
        started = time.perf_counter()
        airflow_command(settings, "db", "migrate")
        timings["airflow db migrate"] = time.perf_counter() - started
        progress.update(step, completed=1, total=1)
        for dag_id in PIPELINE_DAGS:
            step = progress.add_task(f"airflow dags test {dag_id}")
            started = time.perf_counter()
            conf = json.dumps({"dataset": dataset or settings.dataset})
            airflow_command(settings, "dags", "test", dag_id, "-c", conf, overrides=overrides)
            timings[dag_id] = time.perf_counter() - started
            progress.update(step, completed=1, total=1)
    _print_summary(settings, contract, timings)


def _print_summary(settings: Settings, contract: DatasetContract, timings: dict[str, float]) -> None:
    from churnops.metrics import evaluation_label
    from churnops.paths import scores_path
    from churnops.registry import configure_mlflow, load_alias
    from churnops.snapshots import latest_snapshot_dir, read_metadata

    configure_mlflow(settings)
    champion = load_alias(contract.model_name)
    metrics = champion.metadata.get("out_of_time_metrics", {})
    snapshot = read_metadata(latest_snapshot_dir(settings, contract.name))
    scoring_cutoff = dt.date.fromisoformat(snapshot.cutoffs["scoring"][0])
    out = Console(soft_wrap=True)
    out.rule("churnops main job finished")
    for stage, seconds in timings.items():
        out.print(f"  {stage:<28} {seconds:6.1f} s")
    validation = champion.metadata.get("validation", "out_of_time")
    evaluated_at = f" at cutoff {champion.metadata.get('out_of_time_cutoff')}" if validation == "out_of_time" else ""
    out.print(
        f"Champion: {champion.name} v{champion.version} — "
        f"{evaluation_label(validation)} ROC AUC {metrics.get('roc_auc', float('nan')):.4f}{evaluated_at} "
        f"(precision at top 10 %: {metrics.get('precision_at_10', float('nan')):.3f})"
    )
    out.print(f"Run date: {snapshot.run_date} (features and scores as of this day; data through the day before)")
    out.print(f"Scores:   {scores_path(settings, contract.name, scoring_cutoff)}")
    out.print(f"MLflow:   {settings.tracking_uri}  (artifacts under {settings.mlflow_dir / 'artifacts'})")
    out.print("Open the UIs:")
    out.print(f"  MLflow   .venv/bin/mlflow ui --backend-store-uri {settings.tracking_uri} --port 5000")
    out.print("  Airflow  make airflow-ui   (api-server on http://127.0.0.1:8080; admin password printed at start)")
    out.print("  API      make serve        (then the curl example in the README)")


@app.command()
def drift(
    dataset: DatasetOption = None,
    run_date: RunDateOption = None,
    force_retrain: Annotated[bool, typer.Option(help="Ask for a `manual` retraining.")] = False,
    trigger_training: Annotated[
        bool,
        typer.Option(
            "--trigger-training/--advisory",
            help="When a trigger fires, run the training DAG on the embedded Airflow (its decision then starts the "
            "cooldown); by default the decision is only recorded as advice and starts nothing.",
        ),
    ] = False,
) -> None:
    """Realized performance, PSI drift of the champion's inputs (Evidently report), and the retraining decision."""
    settings, contract = setup(dataset)
    from churnops.monitoring.drift import NoChampionError, drift_summary, run_drift_check
    from churnops.monitoring.realized import compute_realized_performance
    from churnops.monitoring.retrain import record_decision
    from churnops.monitoring.retrain_run import decide_for_run
    from churnops.monitoring.store import open_store
    from churnops.snapshots import read_metadata, snapshot_dir_for

    snapshot = read_metadata(snapshot_dir_for(settings, contract.name, day(run_date)))
    when = day(run_date) or dt.date.fromisoformat(snapshot.run_date or snapshot.cutoffs["scoring"][0])
    for row in compute_realized_performance(settings, contract, when):
        console.print(
            f"realized {row.logical_date} ({row.list_kind}) v{row.model_version}: ROC AUC {row.roc_auc} "
            f"p@10 {row.precision_at_10}"
        )
    with console.status("measuring drift (Evidently)"):
        try:
            for run in run_drift_check(settings, contract, run_date=when):
                console.print(drift_summary(run))
        except NoChampionError as error:
            console.print(str(error))
    decisions = decide_for_run(
        settings, contract, when, retrain_running=False, manual=force_retrain, advisory=not trigger_training
    )
    for decision in decisions:
        verdict = ("FIRES" if trigger_training else "would fire (advisory)") if decision.fired else "suppressed"
        console.print(f"{decision.trigger}: {verdict} - {decision.reason}")
    if not decisions:
        console.print("no retraining trigger")
    fired = [d for d in decisions if d.fired]
    if fired and trigger_training:
        conf = {
            "dataset": dataset or settings.dataset,
            "run_date": when.isoformat(),
            "retrain_reason": fired[0].trigger,
        }
        with console.status("running the training DAG"):
            airflow_command(settings, "db", "migrate")
            airflow_command(settings, "dags", "test", "churnops_training", "-c", json.dumps(conf))
        record_decision(open_store(settings), fired[0])
        console.print(f"training DAG ran for {when} ({fired[0].trigger})")


@app.command("inject-drift")
def inject_drift(
    out: Annotated[Path, typer.Option(help="Folder for the drifted copy and its contract YAML.")],
    dataset: DatasetOption = None,
    shift: Annotated[
        list[str] | None, typer.Option(help="COLUMN=AMOUNT added to an entity attribute or the event amount.")
    ] = None,
    new_category: Annotated[list[str] | None, typer.Option(help="COLUMN=VALUE given to a share of customers.")] = None,
    category_share: Annotated[float, typer.Option(help="Share of customers given the new category.")] = 0.3,
    silence_share: Annotated[float, typer.Option(help="Share of customers silenced from --since (label rate).")] = 0.0,
    since: Annotated[str | None, typer.Option(help="Date event drift starts (default: first training cutoff).")] = None,
) -> None:
    """Write a drifted copy of a dataset (shifted columns, new categories, changed label rate) for demos and tests."""
    settings, contract = setup(dataset)
    from churnops.jobs.inject_drift import write_drifted_dataset

    def pairs(items: list[str] | None) -> dict[str, str]:
        try:
            return dict(item.split("=", 1) for item in items or [])
        except ValueError as error:
            raise typer.BadParameter(f"expected COLUMN=VALUE, got {items}") from error

    result = write_drifted_dataset(
        contract,
        out,
        shifts={column: float(amount) for column, amount in pairs(shift).items()},
        new_categories=pairs(new_category),
        category_share=category_share,
        silence_share=silence_share,
        since=dt.date.fromisoformat(since) if since else None,
    )
    console.print(
        f"drifted copy at {result.contract_path} ({result.customers_silenced} customers silenced, "
        f"{result.events_removed} events removed); run `churnops features -d {result.contract_path}` then "
        f"`churnops drift -d {result.contract_path}`"
    )
