"""Batch scoring: every customer in the population at a run date's scoring cutoff, scored by the champion, ranked
and banded.

A run scores the snapshot of its run date (the newest snapshot when no date is given). The list is written as
Parquet (one file per dataset, list kind and date, replaced atomically) and, when a platform database is
configured, into PostgreSQL in one transaction per (dataset, date, list kind), so a re-run replaces instead of
duplicating and a crash leaves the previous complete list visible.

List kinds: `regular` is the list a run writes for its own date; `backfill` is a list written later for a past
date (an Airflow backfill run) or a past cutoff of the snapshot (a backtest). A backfill never replaces the regular
list of the same date, so realized performance can judge what was really sent.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from churnops.banding import build_score_frame
from churnops.config import Settings
from churnops.dataset import DatasetContract
from churnops.features import ENTITY_ID
from churnops.jobs.survival.scoring import with_survival_columns
from churnops.jobs.value.pipeline import add_value_columns
from churnops.paths import scores_path
from churnops.registry import LoadedModel, configure_mlflow, load_alias
from churnops.snapshots import SnapshotMetadata, load_snapshot, read_metadata, snapshot_dir_for
from churnops.storage import write_parquet_atomically

log = logging.getLogger(__name__)


class UnknownCutoffError(ValueError):
    """A backfill asked for a cutoff the latest snapshot does not hold."""


@dataclass(frozen=True)
class ScoringRun:
    path: Path
    rows: int
    cutoff: dt.date
    model_version: str
    rows_in_database: int | None
    list_date: dt.date | None = None
    list_kind: str = "regular"


def score_frame(
    model: LoadedModel, features: pd.DataFrame, cutoff: dt.date, risk_bands: dict[str, float]
) -> pd.DataFrame:
    """Score, rank and band one cutoff's feature rows, highest risk first."""
    scores = model.predict_matrix(model.schema.encode_frame(features))
    # Ranked as arrays (ties keep the snapshot's order), so the frame is built in its final order, not copied again.
    ranked = np.argsort(-scores, kind="stable")
    return build_score_frame(
        customer_ids=features[ENTITY_ID].to_numpy()[ranked],
        scores=scores[ranked],
        cutoff=cutoff,
        threshold=model.threshold,
        model_name=model.name,
        model_version=model.version,
        bands=risk_bands,
    )


def with_model_columns(
    settings: Settings,
    contract: DatasetContract,
    scored: pd.DataFrame,
    cutoff: dt.date,
    snapshot_dir: Path | None,
    features: pd.DataFrame | None = None,
    purchases: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """A scored list (in its order) with the value model's columns (a dataset with a `value` section) and the
    survival model's (one with `survival:`), each group only once its model has a champion. Every list gets them
    here: the snapshot's (pandas or Spark) and a scored file's, which passes its own rows as `features` and its
    purchases (`churnops.jobs.value.pipeline.purchases_of`) instead of a snapshot and the bronze layer."""
    scored = add_value_columns(settings, contract, scored, cutoff, purchases)
    return with_survival_columns(contract, scored, snapshot_dir, cutoff, features)


def store_list(
    settings: Settings,
    scored: pd.DataFrame,
    dataset: str,
    run_id: str,
    cutoff: dt.date,
    list_kind: str,
    list_name: str = "",
) -> int | None:
    """Write a scored list to the platform database when one is configured (rows written; None without one).
    `list_name` tells apart the `adhoc` lists of one date (churnops.db.write_scores)."""
    if settings.database_url is None:
        return None
    from churnops import db

    with contextlib.closing(db.connect(settings)) as conn:
        db.migrate(conn)
        return db.write_scores(
            conn, scored, dataset=dataset, run_id=run_id, logical_date=cutoff, list_kind=list_kind, list_name=list_name
        )


def resolve_list_cutoff(
    model: LoadedModel, metadata: SnapshotMetadata, dataset: str, cutoff: dt.date | None, list_kind: str
) -> tuple[dt.date, str]:
    """The cutoff a run scores and the kind of its list: the snapshot's scoring cutoff, or a past `cutoff` it holds
    (always a `backfill` list)."""
    if cutoff is None:
        return dt.date.fromisoformat(metadata.cutoffs["scoring"][0]), list_kind
    available = sorted(dt.date.fromisoformat(day) for day in metadata.rows_per_cutoff)
    if cutoff not in available:
        raise UnknownCutoffError(
            f"cannot backfill cutoff {cutoff}: snapshot {metadata.snapshot_id} of dataset {dataset!r} "
            f"holds the cutoffs {', '.join(c.isoformat() for c in available)}; pick one of them, or re-cut the "
            "snapshot with `churnops features`"
        )
    evaluated_at = model.metadata.get("out_of_time_cutoff")
    if evaluated_at and cutoff < dt.date.fromisoformat(evaluated_at):
        log.warning(
            "backfill of %s: %s v%s learned from the cutoffs before %s, so this backtest is in-sample",
            cutoff,
            model.name,
            model.version,
            evaluated_at,
        )
    return cutoff, "backfill"


def planned_engine(
    settings: Settings, contract: DatasetContract, run_date: dt.date | None = None, cutoff: dt.date | None = None
) -> Literal["pandas", "spark"]:
    """The engine `score` would choose for this list, from the snapshot's metadata (no Spark, no model): lets the
    scoring DAG spark-submit the Spark path instead of running it inside its worker."""
    metadata = read_metadata(snapshot_dir_for(settings, contract.name, run_date))
    day = cutoff or dt.date.fromisoformat(metadata.cutoffs["scoring"][0])
    return settings.scoring.engine_for(metadata.rows_per_cutoff.get(day.isoformat(), 0))


def score(
    settings: Settings,
    contract: DatasetContract,
    run_id: str = "manual",
    run_date: dt.date | None = None,
    cutoff: dt.date | None = None,
    list_kind: str = "regular",
    engine: Literal["pandas", "spark"] | None = None,
) -> ScoringRun:
    """Score the scoring cutoff of the run date's snapshot — or, for a backtest, its past `cutoff` — with the
    champion and publish the list.

    The list is dated by the cutoff it scored and keyed by `list_kind`; a backtest of a past cutoff is always a
    `backfill` list. `engine` overrides `settings.scoring.engine` (the Spark path: churnops.jobs.score_spark).
    """
    configure_mlflow(settings)
    model = load_alias(contract.model_name)
    snapshot_dir = snapshot_dir_for(settings, contract.name, run_date)
    metadata = read_metadata(snapshot_dir)
    cutoff, list_kind = resolve_list_cutoff(model, metadata, contract.name, cutoff, list_kind)
    engine = engine or settings.scoring.engine_for(metadata.rows_per_cutoff.get(cutoff.isoformat(), 0))
    if engine == "spark":
        from churnops.jobs.score_spark import score_in_spark

        return score_in_spark(settings, contract, model, snapshot_dir, cutoff, list_kind, run_id)
    # Only the scored cutoff's rows and the model's columns are read (and verified against their own digests).
    features, metadata = load_snapshot(snapshot_dir, cutoffs=[cutoff], columns=model.schema.columns)
    if features.empty:
        raise ValueError(f"snapshot {metadata.snapshot_id} has no rows at the scoring cutoff {cutoff}")
    scored = score_frame(model, features, cutoff, settings.scoring.risk_bands)
    scored = with_model_columns(settings, contract, scored, cutoff, snapshot_dir, features)
    path = scores_path(settings, contract.name, cutoff, list_kind)
    # The Parquet file is written (Arrow, outside the GIL) while PostgreSQL loads the list: neither waits for the
    # other. Each is replaced atomically on its own, as before; a failure of either fails the run, and a re-run
    # replaces both.
    with ThreadPoolExecutor(max_workers=1) as pool:
        parquet = pool.submit(write_parquet_atomically, scored, path)
        in_database = store_list(settings, scored, contract.name, run_id, cutoff, list_kind)
        parquet.result()
    log.info("scored %s customers at %s with %s v%s -> %s", len(scored), cutoff, model.name, model.version, path)
    return ScoringRun(
        path=path,
        rows=len(scored),
        cutoff=cutoff,
        model_version=model.version,
        rows_in_database=in_database,
        list_date=cutoff,
        list_kind=list_kind,
    )
