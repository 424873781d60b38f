"""Batch scoring: every customer in the population at the latest cutoff, scored by the champion, ranked and banded.

The list is written as Parquet (one file per dataset and cutoff, replaced atomically) and, when a platform
database is configured, into PostgreSQL in one transaction per logical date, so a re-run replaces instead of
duplicating and a crash leaves the previous complete list visible.

A backfill scores a past cutoff of the same snapshot instead (a backtest): its list is dated by that cutoff, so
once the cutoff's label horizon has passed, realized performance (monitoring/realized.py) can evaluate it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from churnops.banding import build_score_frame
from churnops.config import Settings
from churnops.dataset import DatasetContract
from churnops.features import CUTOFF, ENTITY_ID
from churnops.registry import LoadedModel, configure_mlflow, load_alias
from churnops.snapshots import latest_snapshot_dir, load_snapshot
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


def scores_path(settings: Settings, dataset: str, cutoff: dt.date) -> Path:
    return settings.scores_dir / dataset / f"scores_{cutoff.isoformat()}.parquet"


def score_frame(
    model: LoadedModel, features: pd.DataFrame, cutoff: dt.date, risk_bands: dict[str, float]
) -> pd.DataFrame:
    """Score, rank and band one cutoff's feature rows, highest risk first."""
    scores = model.predict_matrix(model.schema.encode_frame(features))
    frame = build_score_frame(
        customer_ids=features[ENTITY_ID].to_numpy(),
        scores=scores,
        cutoff=cutoff,
        threshold=model.threshold,
        model_name=model.name,
        model_version=model.version,
        bands=risk_bands,
    )
    return frame.sort_values("score", ascending=False, kind="stable", ignore_index=True)


def score(
    settings: Settings,
    contract: DatasetContract,
    run_id: str = "manual",
    logical_date: dt.date | None = None,
    cutoff: dt.date | None = None,
) -> ScoringRun:
    """Score the scoring cutoff of the latest snapshot — or, for a backfill, its past `cutoff` — with the champion
    and publish the list.

    The database keys a regular list by `logical_date` (default: the scoring cutoff). A backfill's list is keyed
    by the cutoff it scored, whatever run produced it: re-running the backfill replaces it, and realized
    performance dates it by that cutoff.
    """
    configure_mlflow(settings)
    model = load_alias(contract.model_name)
    frame, metadata = load_snapshot(latest_snapshot_dir(settings, contract.name))
    if cutoff is None:
        cutoff = dt.date.fromisoformat(metadata.cutoffs["scoring"][0])
        list_date = logical_date or cutoff
    else:
        available = sorted(pd.Timestamp(c).date() for c in frame[CUTOFF].unique())
        if cutoff not in available:
            raise UnknownCutoffError(
                f"cannot backfill cutoff {cutoff}: snapshot {metadata.snapshot_id} of dataset {contract.name!r} "
                f"holds the cutoffs {', '.join(c.isoformat() for c in available)}; pick one of them, or re-cut the "
                "snapshot with `churnops features`"
            )
        list_date = cutoff
        evaluated_at = model.metadata.get("out_of_time_cutoff")
        if evaluated_at and cutoff < dt.date.fromisoformat(evaluated_at):
            log.warning(
                "backfill of %s: %s v%s learned from the cutoffs before %s, so this backtest is in-sample",
                cutoff,
                model.name,
                model.version,
                evaluated_at,
            )
    features = frame[frame[CUTOFF] == pd.Timestamp(cutoff)]
    if features.empty:
        raise ValueError(f"snapshot {metadata.snapshot_id} has no rows at the scoring cutoff {cutoff}")
    scored = score_frame(model, features, cutoff, settings.scoring.risk_bands)
    path = scores_path(settings, contract.name, cutoff)
    write_parquet_atomically(scored, path)
    in_database = None
    if settings.database_url is not None:
        from churnops import db

        with contextlib.closing(db.connect(settings)) as conn:
            db.migrate(conn)
            in_database = db.write_scores(conn, scored, dataset=contract.name, run_id=run_id, logical_date=list_date)
    log.info("scored %s customers at %s with %s v%s -> %s", len(scored), cutoff, model.name, model.version, path)
    return ScoringRun(
        path=path, rows=len(scored), cutoff=cutoff, model_version=model.version, rows_in_database=in_database
    )
