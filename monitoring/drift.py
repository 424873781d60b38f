"""Feature and score drift of the champion's inputs: PSI on reference-quantile bins, reported with Evidently.

reference = rows of the champion's own training snapshot (found by the `snapshot_hash` stored with the model);
current = the scoring cutoff of the run date's feature snapshot and, when the prediction log has enough rows, a
sample of the online traffic of the last N days drawn in SQL (a second comparison). Per feature: PSI
(`churnops.monitoring.psi`, missing values dropped), the share of missing values on each side (its own drift signal),
the champion's gain importance; plus the PSI of the champion's score distribution and the plain and importance-weighted
share of drifted features. The Evidently HTML report (the two distributions of every column) is written to disk and
logged as an artifact of the champion's training run in MLflow.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from churnops.config import MonitoringSettings, Settings
from churnops.dataset import DatasetContract
from churnops.features import CALENDAR_AGED_FEATURES, CUTOFF
from churnops.monitoring.measure import SCORE_COLUMN, DriftMeasurement, gain_importances, measure_drift
from churnops.monitoring.store import DriftRun, MonitoringStore, monitoring_dir, open_store
from churnops.registry import LoadedModel
from churnops.snapshot_files import role_cutoffs
from churnops.snapshots import SnapshotMetadata, dataset_dir, load_snapshot, read_metadata, snapshot_dir_for

log = logging.getLogger(__name__)

SAMPLE_SEED = 17


class NoChampionError(LookupError):
    """The dataset has no `champion` model yet, so there is nothing to compare against."""


def reference_snapshot_dir(settings: Settings, contract: DatasetContract, model: LoadedModel) -> Path:
    """The champion's training snapshot, by the content hash recorded in the model's metadata."""
    snapshot_hash = model.metadata.get("snapshot_hash")
    if not snapshot_hash:
        raise ValueError(f"{model.name} v{model.version} records no snapshot_hash; it was not trained by churnops")
    path = dataset_dir(settings, contract.name) / snapshot_hash[:16]
    if not path.exists():
        raise FileNotFoundError(
            f"the training snapshot {snapshot_hash[:16]} of {model.name} v{model.version} is gone from {path.parent}; "
            "drift needs the champion's reference data: rebuild it or retrain the champion"
        )
    return path


REFERENCE_ROLES = {"out_of_time": ["out_of_time"], "train": ["train"], "all": ["train", "out_of_time"]}


def reference_rows(frame: pd.DataFrame, metadata: SnapshotMetadata, which: str) -> pd.DataFrame:
    """The rows of a training snapshot that stand for what the champion learned from (see MonitoringSettings)."""
    roles = REFERENCE_ROLES[which]
    cutoffs = [pd.Timestamp(d) for role in roles for d in metadata.cutoffs.get(role, [])]
    return frame[frame[CUTOFF].isin(cutoffs)]


def aged_to(reference: pd.DataFrame, cutoff: pd.Timestamp) -> pd.DataFrame:
    """The reference with its calendar-aged features (days since a fixed past moment) moved forward to `cutoff`:
    a customer who stays is that many days older, so only a real change in the mix shows as drift."""
    aged = [c for c in CALENDAR_AGED_FEATURES if c in reference.columns]
    if not aged:
        return reference
    gap = (cutoff - pd.to_datetime(reference[CUTOFF])).dt.days.astype("float64")
    return reference.assign(**{c: reference[c] + gap for c in aged})


def scoring_rows(frame: pd.DataFrame, metadata: SnapshotMetadata) -> pd.DataFrame:
    cutoffs = [pd.Timestamp(d) for d in metadata.cutoffs.get("scoring", [])]
    return frame[frame[CUTOFF].isin(cutoffs)]


def _sample(frame: pd.DataFrame, max_rows: int) -> pd.DataFrame:
    return frame.sample(n=max_rows, random_state=SAMPLE_SEED) if len(frame) > max_rows else frame


# Stored rows drawn at random (seeded) until they hold `max_rows` predictions: the draw and the bound are the
# database's, on stored rows, so only the sample crosses the network and is taken apart. Three kinds are drawn
# alongside, each returned as (id, features, scores, feature names): batches (one row per flush of an API worker's
# writer, since migration 0016), requests (migration 0014) and predictions logged one row each before 0014. Their ids
# stay distinct: requests keep theirs (positive, below 2^62), batches are 2^62 + id, old per-prediction rows -id. A
# batch's features are its predictions' value arrays in the order of its feature names, the others' are column-wise
# (names NULL): `stored_by_column` turns the former into the latter. The last row drawn may overshoot `max_rows` by
# all but one of its predictions (a batch can hold thousands): the caller cuts the frame to `max_rows`.
_PREDICTION_LOG_SAMPLE = """
WITH candidates AS (
    SELECT 'batch' AS kind, id, n_rows, random() AS draw FROM churnops.prediction_log_batches
    WHERE model_name = %(model)s AND last_logged_at >= %(since)s
    UNION ALL
    SELECT 'request', id, n_rows, random() FROM churnops.prediction_log_requests
    WHERE model_name = %(model)s AND logged_at >= %(since)s
    UNION ALL
    SELECT 'prediction', id, 1, random() FROM churnops.prediction_log_per_prediction
    WHERE model_name = %(model)s AND logged_at >= %(since)s
), drawn AS (
    SELECT kind, id FROM (
        SELECT kind, id, sum(n_rows) OVER (ORDER BY draw ROWS UNBOUNDED PRECEDING) - n_rows AS before
        FROM candidates
    ) AS ranked
    WHERE before < %(max_rows)s
)
SELECT (1::bigint << 62) + b.id, b.features::json, b.scores, b.feature_names
FROM churnops.prediction_log_batches AS b
JOIN drawn ON drawn.kind = 'batch' AND drawn.id = b.id
UNION ALL
SELECT r.id, r.features::json, r.scores, NULL FROM churnops.prediction_log_requests AS r
JOIN drawn ON drawn.kind = 'request' AND drawn.id = r.id
UNION ALL
SELECT -old.id,
       coalesce((SELECT json_object_agg(e.key, json_build_array(e.value)) FROM json_each(old.features) AS e), '{}'),
       ARRAY[old.score], NULL
FROM churnops.prediction_log_per_prediction AS old
JOIN drawn ON drawn.kind = 'prediction' AND drawn.id = old.id
ORDER BY 1
"""


def stored_by_column(
    stored: tuple[int, Any, list[float], list[str] | None],
) -> tuple[int, dict[str, list[Any]], list[float]]:
    """A sampled row as (id, column-wise features, scores): a batch's value arrays transposed to its feature names."""
    log_id, features, scores, names = stored
    if names is None:
        return log_id, features, scores
    try:
        by_column = dict(zip(names, map(list, zip(*features, strict=True)), strict=True))
    except ValueError:
        raise ValueError(
            f"prediction log row {log_id}: its value arrays do not match its {len(names)} features"
        ) from None
    return log_id, by_column, scores


def prediction_log_frame(requests: list[tuple[int, dict[str, list[Any]], list[float]]]) -> pd.DataFrame:
    """Logged rows (id, column-wise features, scores: a batch's, a request's or an old prediction's) as one frame: a
    row per prediction, a column per feature and the score; a feature a logged row lacks is missing there."""
    columns: dict[str, list[Any]] = {}
    scores: list[float] = []
    for log_id, features, request_scores in requests:
        n_rows = len(request_scores)
        for name, values in features.items():
            if len(values) != n_rows:
                raise ValueError(
                    f"prediction log row {log_id}: feature {name!r} holds {len(values)} values for {n_rows} scores"
                )
            columns.setdefault(name, [None] * len(scores))
        for name, values in columns.items():
            values.extend(features.get(name, [None] * n_rows))
        scores.extend(request_scores)
    frame = pd.DataFrame(columns, index=pd.RangeIndex(len(scores)))
    frame[SCORE_COLUMN] = scores
    return frame


def load_prediction_log(
    settings: Settings, model_name: str, days: int, now: dt.datetime, max_rows: int
) -> pd.DataFrame:
    """A seeded random sample of at most `max_rows` logged online inputs (one column per feature) and scores of the
    last `days` days: whole stored rows (batches, requests) drawn by the database, then at most `max_rows` of their
    predictions; empty without a database."""
    if settings.database_url is None:
        return pd.DataFrame()
    from churnops import db

    conn = db.connect(settings, application_name="churnops-drift")
    try:
        with conn, conn.cursor() as cur:
            cur.execute("SELECT setseed(%s)", (SAMPLE_SEED / 100,))
            since = now - dt.timedelta(days=days)
            cur.execute(_PREDICTION_LOG_SAMPLE, {"model": model_name, "since": since, "max_rows": max_rows})
            requests = cur.fetchall()
    finally:
        conn.close()
    if not requests:
        return pd.DataFrame()
    return _sample(prediction_log_frame(list(map(stored_by_column, requests))), max_rows).reset_index(drop=True)


def _log_report_to_mlflow(model: LoadedModel, report_path: Path, drift_run_id: str) -> str | None:
    """Attach the report to the champion's training run (its lineage); returns the run id, None if impossible."""
    from mlflow import MlflowClient

    run_id = model.metadata.get("training_run_id")
    if not run_id:
        return None
    client = MlflowClient()
    client.log_artifact(run_id, str(report_path), artifact_path=f"drift/{drift_run_id}")
    client.set_tag(run_id, "churnops.last_drift_run", drift_run_id)
    return run_id


def _drift_run(
    drift_run_id: str,
    contract: DatasetContract,
    model: LoadedModel,
    started_at: dt.datetime,
    measurement: DriftMeasurement,
    monitoring: MonitoringSettings,
    reference_snapshot: str,
    current_snapshot: str,
    report_path: Path,
    rows: tuple[int, int],
    source: str,
    run_date: dt.date | None,
) -> DriftRun:
    return DriftRun(
        drift_run_id=drift_run_id,
        dataset=contract.name,
        model_name=model.name,
        model_version=model.version,
        started_at=started_at,
        finished_at=dt.datetime.now(dt.UTC),
        reference_snapshot=reference_snapshot,
        current_snapshot=current_snapshot,
        features=measurement.features,
        score_psi=measurement.score_psi,
        weighted_drifted_share=measurement.weighted_drifted_share,
        warn_threshold=monitoring.psi_warn,
        drift_threshold=monitoring.psi_drift,
        report_path=str(report_path),
        important_drifted=measurement.important_drifted,
        rows_reference=rows[0],
        rows_current=rows[1],
        current_source=source,
        run_date=run_date.isoformat() if run_date else None,
    )


def run_drift_check(
    settings: Settings,
    contract: DatasetContract,
    *,
    monitoring: MonitoringSettings | None = None,
    store: MonitoringStore | None = None,
    drift_run_id: str | None = None,
    now: dt.datetime | None = None,
    run_date: dt.date | None = None,
) -> list[DriftRun]:
    """Compare the champion's reference data with the snapshot of `run_date` (the newest when None) and the
    prediction log; record the runs.

    Returns the snapshot comparison first, then the prediction-log comparison when there was enough traffic.
    Raises NoChampionError when the dataset has no champion yet.
    """
    from churnops.registry import champion_or_none, configure_mlflow, load_model_version

    monitoring = monitoring or settings.monitoring
    store = store or open_store(settings)
    started_at = now or dt.datetime.now(dt.UTC)
    # A run date's drift run keeps one id, so re-running that date replaces it instead of adding another.
    drift_run_id = drift_run_id or (
        f"{contract.name}-{run_date.isoformat()}"
        if run_date is not None
        else f"{contract.name}-{started_at:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"
    )
    configure_mlflow(settings)
    champion = champion_or_none(contract.model_name)
    if champion is None:
        raise NoChampionError(f"{contract.model_name} has no champion yet")
    model = load_model_version(contract.model_name, str(champion.version))

    # Only the cutoffs compared are read: the reference's (MonitoringSettings.reference_cutoffs) and the scoring one.
    ref_dir, cur_dir = (
        reference_snapshot_dir(settings, contract, model),
        snapshot_dir_for(settings, contract.name, run_date),
    )
    ref_roles = REFERENCE_ROLES[monitoring.reference_cutoffs]
    ref_frame, ref_meta = load_snapshot(ref_dir, cutoffs=role_cutoffs(read_metadata(ref_dir), ref_roles))
    cur_frame, cur_meta = load_snapshot(cur_dir, cutoffs=role_cutoffs(read_metadata(cur_dir), ["scoring"]))
    current = _sample(scoring_rows(cur_frame, cur_meta), monitoring.max_rows)
    reference = _sample(reference_rows(ref_frame, ref_meta, monitoring.reference_cutoffs), monitoring.max_rows)
    reference = aged_to(reference, pd.Timestamp(cur_meta.cutoffs["scoring"][0]))
    if reference.empty or current.empty:
        raise ValueError(
            f"nothing to compare: {len(reference)} reference rows in snapshot {ref_meta.snapshot_id}, "
            f"{len(current)} scoring rows in snapshot {cur_meta.snapshot_id}"
        )
    numeric, categorical = list(model.schema.numeric), list(model.schema.categorical)
    importances = gain_importances(model)
    reference_scores = model.predict_matrix(model.schema.encode_frame(reference))
    current_scores = model.predict_matrix(model.schema.encode_frame(_with_columns(current, model)))
    reports = monitoring_dir(settings) / contract.name / "reports"

    runs = []
    report_path = reports / f"{drift_run_id}.html"
    measurement = measure_drift(
        reference,
        current,
        numeric,
        categorical,
        importances,
        monitoring,
        report_path,
        reference_scores,
        current_scores,
    )
    runs.append(
        _drift_run(
            drift_run_id,
            contract,
            model,
            started_at,
            measurement,
            monitoring,
            ref_meta.snapshot_id,
            cur_meta.snapshot_id,
            report_path,
            (len(reference), len(current)),
            "snapshot",
            run_date,
        )
    )
    online = load_prediction_log(settings, model.name, monitoring.prediction_log_days, started_at, monitoring.max_rows)
    if len(online) >= monitoring.prediction_log_min_rows:
        online_id, online_path = f"{drift_run_id}-online", reports / f"{drift_run_id}-online.html"
        measurement = measure_drift(
            reference,
            online,
            numeric,
            categorical,
            importances,
            monitoring,
            online_path,
            reference_scores,
            online[SCORE_COLUMN].to_numpy(dtype=np.float64),
        )
        runs.append(
            _drift_run(
                online_id,
                contract,
                model,
                started_at,
                measurement,
                monitoring,
                ref_meta.snapshot_id,
                f"prediction_log:{monitoring.prediction_log_days}d",
                online_path,
                (len(reference), len(online)),
                "prediction_log",
                run_date,
            )
        )
    for run in runs:
        store.record_drift_run(run)
        try:
            _log_report_to_mlflow(model, Path(run.report_path), run.drift_run_id)
        except Exception as error:  # the report stays on disk; a tracking hiccup must not lose the drift run
            log.warning("could not log drift report %s to MLflow: %s", run.report_path, error)
        log.info(
            "drift run %s (%s): %d/%d features drifted (weighted %.3f), score PSI %s, report %s",
            run.drift_run_id,
            run.current_source,
            len(run.drifted_features),
            len(run.features),
            run.weighted_drifted_share,
            run.score_psi,
            run.report_path,
        )
    return runs


def _with_columns(frame: pd.DataFrame, model: LoadedModel) -> pd.DataFrame:
    """`frame` with any model input it lacks added as missing, so the champion can still score it."""
    missing = [c for c in model.schema.columns if c not in frame]
    return frame.assign(**dict.fromkeys(missing, np.nan)) if missing else frame


def drift_summary(run: DriftRun) -> dict[str, Any]:
    """A small JSON-able view of a drift run (XCom, CLI output)."""
    return {
        "drift_run_id": run.drift_run_id,
        "dataset": run.dataset,
        "model_version": run.model_version,
        "source": run.current_source,
        "drifted_features": run.drifted_features,
        "important_drifted": run.important_drifted,
        "drifted_share": round(run.drifted_share, 4),
        "weighted_drifted_share": round(run.weighted_drifted_share, 4),
        "score_psi": None if run.score_psi is None else round(run.score_psi, 4),
        "report_path": run.report_path,
    }
