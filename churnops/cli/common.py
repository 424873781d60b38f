"""What every command shares: the Typer app, the console, the `--dataset` option and the set-up step."""

from __future__ import annotations

import datetime as dt
import logging
from typing import Annotated

import typer
from rich.console import Console

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
RunDateOption = Annotated[
    dt.datetime | None,
    typer.Option(
        "--run-date",
        formats=["%Y-%m-%d"],
        help="The date to act as of (the scoring cutoff; it needs events through the day before). "
        "Default: the newest (features: the day after the latest day of data).",
    ),
]


def day(value: dt.datetime | None) -> dt.date | None:
    return value.date() if value is not None else None


def setup(dataset: str | None) -> tuple[Settings, DatasetContract]:
    """Logging, the process's one Settings, and the dataset's contract."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = Settings()
    return settings, load_contract(dataset or settings.dataset, settings)
