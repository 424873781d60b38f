"""The record writers other stages call: one transaction each, upserts where a task may re-run."""

from __future__ import annotations

import datetime as dt
import uuid

import numpy as np
import psycopg2
import pytest

from churnops import db

UTC = dt.UTC


def fetch(conn: psycopg2.extensions.connection, query: str, params: tuple) -> list[tuple]:
    with conn, conn.cursor() as cur:
        cur.execute(query, params)
        return cur.fetchall()


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def test_prediction_log_appends_a_large_batch_with_numpy_values(conn: psycopg2.extensions.connection) -> None:
    request = unique("req")
    records = [
        {
            "request_id": request,
            "endpoint": "/predict",
            "customer_id": f"C{i}",
            "model_name": "churn_lgbm",
            "model_version": "3",
            "score": np.float32(0.25),
            "decision": np.bool_(i % 2 == 0),
            "latency_seconds": 0.002,
            "features": {"event_count_30d": np.int64(i), "plan": "pro", "amount_mean_30d": None},
        }
        for i in range(2_500)
    ]
    assert db.write_prediction_log(conn, records) == 2_500
    rows = fetch(
        conn,
        "SELECT count(*), sum((features->>'event_count_30d')::int), count(*) FILTER (WHERE decision)"
        " FROM churnops.prediction_log WHERE request_id = %s",
        (request,),
    )
    assert rows == [(2_500, sum(range(2_500)), 1_250)]


def test_model_evaluation_rewrites_its_metrics_on_reevaluation(conn: psycopg2.extensions.connection) -> None:
    model = unique("model")
    cutoff = dt.date(2024, 5, 1)
    db.write_model_evaluation(
        conn, model_name=model, model_version="1", dataset="synthetic", eval_cutoff=cutoff,
        metrics={"roc_auc": 0.8, "brier": 0.1},
    )  # fmt: skip
    db.write_model_evaluation(
        conn, model_name=model, model_version="1", dataset="synthetic", eval_cutoff=cutoff,
        metrics={"roc_auc": 0.81}, mlflow_run_id="abc",
    )  # fmt: skip
    rows = fetch(
        conn,
        "SELECT metric, value, mlflow_run_id FROM churnops.model_evaluations WHERE model_name = %s ORDER BY 1",
        (model,),
    )
    assert rows == [("brier", 0.1, None), ("roc_auc", 0.81, "abc")]


def test_promotion_decision_is_recorded_with_its_reason(conn: psycopg2.extensions.connection) -> None:
    model = unique("model")
    decision_id = db.write_promotion_decision(
        conn, dataset="synthetic", model_name=model, challenger_version="5", champion_version="4",
        promoted=False, reason="roc_auc 0.801 does not beat champion 0.800 by margin 0.002", metric="roc_auc",
        challenger_value=0.801, champion_value=0.800, margin=0.002, eval_cutoff=dt.date(2024, 5, 1),
    )  # fmt: skip
    rows = fetch(
        conn,
        "SELECT id, promoted, champion_version, challenger_version, margin FROM churnops.promotion_decisions"
        " WHERE model_name = %s",
        (model,),
    )
    assert rows == [(decision_id, False, "4", "5", 0.002)]


def ingestion_report(run: str, **overrides: object) -> db.IngestionReport:
    fields = {
        "source": "day=2024-05-01/part-0.csv",
        "run_id": run,
        "rows_read": 100,
        "rows_accepted": 97,
        "rows_quarantined": 3,
        "quarantine_reasons": {"negative_amount": 2, "future_timestamp": 1},
        "first_event_day": dt.date(2024, 5, 1),
        "last_event_day": dt.date(2024, 5, 2),
        "reported_at": dt.datetime(2024, 5, 3, 6, 0, tzinfo=UTC),
    }
    return db.IngestionReport(**(fields | overrides))


def test_ingestion_report_must_reconcile(conn: psycopg2.extensions.connection) -> None:
    run = unique("run")
    db.write_ingestion_reports(conn, dataset="cdnow", reports=[ingestion_report(run)])
    rows = fetch(
        conn,
        "SELECT rows_read, quarantine_reasons, first_event_day, last_event_day FROM churnops.ingestion_reports "
        "WHERE run_id = %s",
        (run,),
    )
    assert rows == [(100, {"negative_amount": 2, "future_timestamp": 1}, dt.date(2024, 5, 1), dt.date(2024, 5, 2))]
    with pytest.raises(psycopg2.errors.CheckViolation):
        db.write_ingestion_reports(conn, dataset="cdnow", reports=[ingestion_report(unique("run"), rows_quarantined=2)])


def test_recording_the_same_file_versions_again_changes_nothing(conn: psycopg2.extensions.connection) -> None:
    first, second = unique("run"), unique("run")
    reports = [ingestion_report(first), ingestion_report(second, source="day=2024-05-02/part-0.csv")]
    query = "SELECT * FROM churnops.ingestion_reports WHERE run_id IN (%s, %s) ORDER BY run_id"
    db.write_ingestion_reports(conn, dataset="cdnow", reports=reports)
    before = fetch(conn, query, (first, second))
    db.write_ingestion_reports(conn, dataset="cdnow", reports=reports)
    assert fetch(conn, query, (first, second)) == before and len(before) == 2


def test_an_ingestion_report_refuses_event_days_out_of_order(conn: psycopg2.extensions.connection) -> None:
    with pytest.raises(psycopg2.errors.CheckViolation):
        db.write_ingestion_reports(
            conn,
            dataset="cdnow",
            reports=[
                ingestion_report(unique("run"), first_event_day=dt.date(2024, 5, 2), last_event_day=dt.date(2024, 5, 1))
            ],
        )


def test_dag_run_record_is_updated_at_the_end_and_keeps_its_start(conn: psycopg2.extensions.connection) -> None:
    run = unique("manual")
    start = dt.datetime(2024, 5, 1, 2, 0, tzinfo=UTC)
    db.record_dag_run(conn, dag_id="churnops_scoring", run_id=run, state="running", start_date=start)
    db.record_dag_run(
        conn, dag_id="churnops_scoring", run_id=run, state="success", end_date=start + dt.timedelta(seconds=95)
    )
    rows = fetch(
        conn,
        "SELECT state, start_date, duration_seconds FROM churnops.dag_runs WHERE run_id = %s",
        (run,),
    )
    assert rows == [("success", start, 95.0)]
    with pytest.raises(psycopg2.errors.CheckViolation):
        db.record_dag_run(conn, dag_id="churnops_scoring", run_id=run, state="succeeded")


def test_drift_run_rerun_replaces_its_feature_rows(conn: psycopg2.extensions.connection) -> None:
    run = unique("drift")
    features = [
        {"feature": "event_count_30d", "psi": 0.31, "missing_share": 0.0, "threshold": 0.2, "drifted": True},
        {"feature": "amount_sum_30d", "psi": 0.02, "missing_share": 0.1, "threshold": 0.2, "drifted": False},
    ]
    for _ in range(2):
        db.write_drift_run(
            conn, drift_run_id=run, dataset="synthetic", model_name="churn_lgbm", model_version="3",
            features=features, warn_threshold=0.1, drift_threshold=0.2, score_psi=0.05,
        )  # fmt: skip
    assert fetch(
        conn,
        "SELECT features_checked, features_drifted, drifted_share FROM churnops.drift_runs WHERE drift_run_id = %s",
        (run,),
    ) == [(2, 1, 0.5)]
    assert fetch(conn, "SELECT count(*) FROM churnops.drift_metrics WHERE drift_run_id = %s", (run,)) == [(2,)]


def test_retrain_decision_records_suppressed_triggers_and_refuses_unknown_ones(
    conn: psycopg2.extensions.connection,
) -> None:
    dataset = unique("ds")
    db.write_retrain_decision(
        conn, dataset=dataset, trigger="drift_detected", fired=False, reason="cooldown until 2024-05-03",
        details={"psi": {"event_count_30d": 0.31}},
    )  # fmt: skip
    rows = fetch(conn, "SELECT trigger, fired, reason FROM churnops.retrain_decisions WHERE dataset = %s", (dataset,))
    assert rows == [("drift_detected", False, "cooldown until 2024-05-03")]
    with pytest.raises(psycopg2.errors.CheckViolation):
        db.write_retrain_decision(conn, dataset=dataset, trigger="because", fired=True, reason="x")


def test_realized_performance_is_upserted_per_scoring_date(conn: psycopg2.extensions.connection) -> None:
    dataset = unique("ds")
    for auc in (0.70, 0.72):
        db.write_realized_performance(
            conn, dataset=dataset, logical_date=dt.date(2024, 3, 1), model_name="churn_lgbm", model_version="3",
            horizon_days=30, n_scored=1000, n_positive=120, roc_auc=auc, precision_at_10=0.4,
            mean_score=0.13, observed_rate=0.12, calibration_error=0.01,
        )  # fmt: skip
    rows = fetch(conn, "SELECT roc_auc FROM churnops.realized_performance WHERE dataset = %s", (dataset,))
    assert rows == [(0.72,)]


def test_realized_outcomes_of_a_list_are_replaced_not_appended_when_it_is_evaluated_again(
    conn: psycopg2.extensions.connection,
) -> None:
    dataset = unique("ds")
    key = {"dataset": dataset, "logical_date": dt.date(2024, 3, 1), "list_kind": "regular", "model_version": "3"}
    # Ids with the characters COPY's text format treats specially arrive unchanged.
    ids = ["C1", "tab\there", "back\\slash", "line\nbreak"]
    db.replace_realized_outcomes(conn, **key, customer_ids=ids, outcomes=[True, False, True, False])
    written = db.replace_realized_outcomes(conn, **key, customer_ids=ids[:2], outcomes=[False, True])

    rows = fetch(
        conn,
        "SELECT customer_id, outcome FROM churnops.realized_outcomes WHERE dataset = %s ORDER BY customer_id",
        (dataset,),
    )
    assert written == 2 and rows == [("C1", False), ("tab\there", True)]


def test_realized_outcomes_of_other_lists_are_left_alone(conn: psycopg2.extensions.connection) -> None:
    dataset = unique("ds")
    for day in (1, 2):
        db.replace_realized_outcomes(
            conn, dataset=dataset, logical_date=dt.date(2024, 3, day), list_kind="regular", model_version="3",
            customer_ids=["C1"], outcomes=[day == 1],
        )  # fmt: skip
    rows = fetch(
        conn,
        "SELECT logical_date, outcome FROM churnops.realized_outcomes WHERE dataset = %s ORDER BY 1",
        (dataset,),
    )
    assert rows == [(dt.date(2024, 3, 1), True), (dt.date(2024, 3, 2), False)]
