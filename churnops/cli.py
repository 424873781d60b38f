"""`churnops`: one subcommand per stage, and `run` for the whole main job through Airflow.

This is an edge of the system, like the DAG files: it builds the Settings, then calls the same functions the
DAG tasks call. Heavy libraries are imported inside each command so `churnops --help` is instant.
"""

from __future__ import annotations

import datetime as dt
import logging
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from churnops.config import Settings
from churnops.dataset import DatasetContract, load_contract

app = typer.Typer(
    help="churnops: churn and propensity models kept trained, served and watched.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
console = Console(stderr=True)

DatasetOption = Annotated[
    str | None,
    typer.Option("--dataset", "-d", help="Built-in dataset (synthetic, cdnow) or a dataset contract YAML path."),
]
PIPELINE_DAGS = ("churnops_features", "churnops_training", "churnops_scoring")
# Datasets whose source files come from a preparer rather than the synthetic generator.
REAL_DATA_PREPARERS = {"cdnow": "jobs.cdnow:prepare_cdnow", "crm_example": "jobs.crm_example:prepare_crm_example"}


def _setup(dataset: str | None) -> tuple[Settings, DatasetContract]:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = Settings()
    return settings, load_contract(dataset or settings.dataset, settings)


def _trial_progress(progress: Progress) -> tuple[object, object]:
    task_id = progress.add_task("Optuna trials", total=None)

    def on_trial(done: int, total: int, value: float | None) -> None:
        label = f"Optuna trials (last CV ROC AUC {value:.4f})" if value is not None else "Optuna trials (pruned)"
        progress.update(task_id, completed=done, total=total, description=label)

    return task_id, on_trial


@app.command()
def generate(
    dataset: DatasetOption = None,
    customers: Annotated[int, typer.Option(help="Number of synthetic customers.", min=10)] = 5000,
    seed: Annotated[int, typer.Option(help="Random seed; the same seed gives the same files.")] = 7,
) -> None:
    """Write a dataset's source files: the seeded synthetic generator, or the real CDNOW log."""
    settings, contract = _setup(dataset)
    if contract.name in REAL_DATA_PREPARERS:
        import importlib

        module, function = REAL_DATA_PREPARERS[contract.name].split(":")
        path = getattr(importlib.import_module(module), function)(settings)
        console.print(f"{contract.name} source written to {path}")
        return
    from jobs.generate import generate as generate_data
    from jobs.generate import write_generated

    if contract.events is None or contract.entities is None:
        raise typer.BadParameter(f"dataset {contract.name!r} has no generator; its files come from elsewhere")
    with console.status(f"generating {customers:,} customers"):
        data = generate_data(customers, seed=seed)
        write_generated(data, contract.resolve(contract.events.path), contract.resolve(contract.entities.path))
    console.print(
        f"{len(data.customers):,} customers and {len(data.events):,} events written to "
        f"{contract.resolve(contract.events.path).parent}"
    )


@app.command()
def features(dataset: DatasetOption = None) -> None:
    """Compute point-in-time features and labels with Spark and publish a hashed snapshot."""
    settings, contract = _setup(dataset)
    from jobs.features import build_feature_snapshot
    from jobs.spark import spark_session

    with console.status("starting Spark"):
        spark = spark_session(settings, f"churnops-features-{contract.name}")
    try:
        with console.status("computing features"):
            run = build_feature_snapshot(spark, contract, settings)
    finally:
        spark.stop()
    console.print(
        f"snapshot {run.metadata.snapshot_id}: {sum(run.metadata.rows_per_cutoff.values()):,} rows "
        f"over {len(run.metadata.rows_per_cutoff)} cutoffs at {run.snapshot_dir}"
    )


@app.command()
def train(
    dataset: DatasetOption = None,
    trials: Annotated[int | None, typer.Option(help="Optuna trials (default from settings).", min=1)] = None,
) -> None:
    """Tune LightGBM with Optuna (trials tracked in MLflow), evaluate out of time, register, gate the champion."""
    settings, contract = _setup(dataset)
    from jobs.train import train as train_model

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        _, on_trial = _trial_progress(progress)
        result = train_model(settings, contract, n_trials=trials, on_trial=on_trial)
    console.print(
        f"{result.model_name} v{result.model_version}: out-of-time ROC AUC "
        f"{result.out_of_time_metrics['roc_auc']:.4f}; promoted={result.decision.promoted} "
        f"({result.decision.reason})"
    )
    if result.evaluation_path is not None:
        console.print(f"evaluation report: {result.evaluation_path}")


@app.command()
def score(
    dataset: DatasetOption = None,
    cutoff: Annotated[
        dt.datetime | None,
        typer.Option(
            formats=["%Y-%m-%d"],
            help="Backfill: score this past cutoff of the latest snapshot instead of the scoring cutoff.",
        ),
    ] = None,
) -> None:
    """Score every customer at the latest cutoff with the champion (or at a past cutoff, as a backtest)."""
    settings, contract = _setup(dataset)
    from jobs.score import UnknownCutoffError
    from jobs.score import score as score_customers

    try:
        run = score_customers(settings, contract, cutoff=cutoff.date() if cutoff else None)
    except UnknownCutoffError as error:
        raise typer.BadParameter(str(error), param_hint="--cutoff") from error
    console.print(f"{run.rows:,} customers scored at {run.cutoff} by v{run.model_version} -> {run.path}")


@app.command()
def export(
    dataset: DatasetOption = None,
    top_k: Annotated[int | None, typer.Option("--top-k", help="Customers to export (default from settings).")] = None,
    out: Annotated[Path | None, typer.Option(help="Output folder (default .churnops/exports).")] = None,
) -> None:
    """Export the top-K customers of the latest scoring list for a campaign (CSV and Parquet)."""
    import contextlib

    settings, contract = _setup(dataset)
    if settings.database_url is None:
        raise typer.BadParameter(
            "the campaign export reads the scoring list from PostgreSQL: set CHURNOPS_DATABASE_URL"
        )
    from churnops import db
    from jobs.export import export_top_k

    with contextlib.closing(db.connect(settings)) as conn:
        result = export_top_k(
            conn,
            dataset=contract.name,
            top_k=top_k or settings.scoring.export_top_k,
            out_dir=out or settings.exports_dir,
        )
    for fmt, path in result.paths.items():
        console.print(f"{result.rows:,} customers ({fmt}) -> {path}")


@app.command()
def serve(
    dataset: DatasetOption = None,
    host: Annotated[str | None, typer.Option(help="Bind address (default from settings).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default from settings).")] = None,
    workers: Annotated[int, typer.Option(help="uvicorn worker processes.", min=1)] = 1,
) -> None:
    """Serve the champion over HTTP (uvicorn)."""
    import os
    import shutil
    import tempfile

    settings, contract = _setup(dataset)
    env = {**os.environ, "CHURNOPS_DATASET": contract.name, "OMP_NUM_THREADS": "1"}
    if workers > 1:
        # Each worker writes its metrics here and /metrics adds them up; it must be empty at start.
        metrics_dir = Path(env.get("PROMETHEUS_MULTIPROC_DIR") or tempfile.mkdtemp(prefix="churnops-metrics-"))
        shutil.rmtree(metrics_dir, ignore_errors=True)
        metrics_dir.mkdir(parents=True)
        env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "serving.app:app",
        "--host",
        host or settings.serving.host,
        "--port",
        str(port or settings.serving.port),
        "--workers",
        str(workers),
        "--no-access-log",
    ]
    raise typer.Exit(subprocess.call(command, env=env))


def _airflow(settings: Settings, *args: str) -> None:
    command = [str(Path(sys.executable).parent / "airflow"), *args]
    completed = subprocess.run(command, env=settings.airflow_environment(), capture_output=True, text=True)
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
    import json
    import os

    settings, contract = _setup(dataset)
    if trials is not None:
        os.environ["CHURNOPS_TRAINING__N_TRIALS"] = str(trials)
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
        _airflow(settings, "db", "migrate")
        timings["airflow db migrate"] = time.perf_counter() - started
        progress.update(step, completed=1, total=1)
        for dag_id in PIPELINE_DAGS:
            step = progress.add_task(f"airflow dags test {dag_id}")
            started = time.perf_counter()
            _airflow(settings, "dags", "test", dag_id, "-c", json.dumps({"dataset": dataset or settings.dataset}))
            timings[dag_id] = time.perf_counter() - started
            progress.update(step, completed=1, total=1)
    _print_summary(settings, contract, timings)


def _print_summary(settings: Settings, contract: DatasetContract, timings: dict[str, float]) -> None:
    from churnops.registry import configure_mlflow, load_alias
    from jobs.score import scores_path

    configure_mlflow(settings)
    champion = load_alias(contract.model_name)
    metrics = champion.metadata.get("out_of_time_metrics", {})
    plan = contract.plan()
    out = Console(soft_wrap=True)
    out.rule("churnops main job finished")
    for stage, seconds in timings.items():
        out.print(f"  {stage:<28} {seconds:6.1f} s")
    out.print(
        f"Champion: {champion.name} v{champion.version} — "
        f"out-of-time ROC AUC {metrics.get('roc_auc', float('nan')):.4f} "
        f"at cutoff {champion.metadata.get('out_of_time_cutoff')} "
        f"(precision at top 10 %: {metrics.get('precision_at_10', float('nan')):.3f})"
    )
    out.print(f"Scores:   {scores_path(settings, contract.name, plan.scoring)}")
    out.print(f"MLflow:   {settings.tracking_uri}  (artifacts under {settings.mlflow_dir / 'artifacts'})")
    out.print("Open the UIs:")
    out.print(f"  MLflow   .venv/bin/mlflow ui --backend-store-uri {settings.tracking_uri} --port 5000")
    out.print("  Airflow  make airflow-ui   (api-server on http://127.0.0.1:8080; admin password printed at start)")
    out.print("  API      make serve        (then the curl example in the README)")


@app.command()
def drift(
    dataset: DatasetOption = None,
    force_retrain: Annotated[bool, typer.Option(help="Record a `manual` retraining request.")] = False,
) -> None:
    """Realized performance, PSI drift of the champion's inputs (Evidently report), and the retraining decision."""
    settings, contract = _setup(dataset)
    from churnops.registry import configure_mlflow
    from monitoring.drift import NoChampionError, drift_summary, run_drift_check
    from monitoring.realized import compute_realized_performance
    from monitoring.retrain import champion_state, decide_and_record
    from monitoring.store import open_store

    for row in compute_realized_performance(settings, contract):
        console.print(
            f"realized {row.logical_date} v{row.model_version}: ROC AUC {row.roc_auc} p@10 {row.precision_at_10}"
        )
    with console.status("measuring drift (Evidently)"):
        try:
            for run in run_drift_check(settings, contract):
                console.print(drift_summary(run))
        except NoChampionError as error:
            console.print(str(error))
    configure_mlflow(settings)
    decisions = decide_and_record(
        open_store(settings),
        dataset=contract.name,
        champion=champion_state(contract.model_name),
        now=dt.datetime.now(dt.UTC),
        retrain_running=False,
        manual=force_retrain,
    )
    for decision in decisions or []:
        verdict = "FIRED" if decision.fired else "suppressed"
        console.print(f"{decision.trigger}: {verdict} - {decision.reason}")
    if not decisions:
        console.print("no retraining trigger")


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
    settings, contract = _setup(dataset)
    from jobs.inject_drift import write_drifted_dataset

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


def main() -> None:
    app()


if __name__ == "__main__":
    main()
