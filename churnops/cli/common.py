"""What every command shares: the Typer app, the console, the `--dataset` option and the set-up step."""

from __future__ import annotations

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


def setup(dataset: str | None) -> tuple[Settings, DatasetContract]:
    """Logging, the process's one Settings, and the dataset's contract."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = Settings()
    return settings, load_contract(dataset or settings.dataset, settings)
