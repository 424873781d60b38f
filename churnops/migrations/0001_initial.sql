-- 0001_initial: the platform schema of churnops (scores, prediction log, drift, realized performance, model
-- evaluations, promotions, ingestion reports, DAG runs).
-- Applied inside one transaction by the migration runner, which records it in churnops.schema_migrations.
-- Never edit this file once released: add 0002_<change>.sql instead (see docs/database.md).

-- ---------------------------------------------------------------------------------------------------------------
-- Batch scores: one complete list per (dataset, logical date), replaced as a whole on a re-run.
-- ---------------------------------------------------------------------------------------------------------------
CREATE TABLE churnops.score_runs (
    dataset       text        NOT NULL,
    logical_date  date        NOT NULL,
    run_id        text        NOT NULL,
    model_name    text        NOT NULL,
    model_version text        NOT NULL,
    cutoff        date        NOT NULL,
    row_count     bigint      NOT NULL CHECK (row_count >= 0),
    written_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (dataset, logical_date)
);
COMMENT ON TABLE churnops.score_runs IS
    'One row per complete scoring list: which run wrote the list of a (dataset, logical_date), with which model, '
    'how many rows. Written in the same transaction as the rows of churnops.scores.';

CREATE TABLE churnops.scores (
    dataset       text             NOT NULL,
    logical_date  date             NOT NULL,
    customer_id   text             NOT NULL,
    run_id        text             NOT NULL,
    cutoff        date             NOT NULL,
    score         double precision NOT NULL CHECK (score >= 0 AND score <= 1),
    decision      boolean          NOT NULL,
    risk_decile   smallint         NOT NULL CHECK (risk_decile BETWEEN 1 AND 10),
    risk_band     text             NOT NULL,
    model_name    text             NOT NULL,
    model_version text             NOT NULL,
    scored_at     timestamptz      NOT NULL DEFAULT now(),
    -- No foreign key to score_runs: its per-row check doubled the time of a 1M-row COPY; write_scores writes
    -- both tables in one transaction instead.
    PRIMARY KEY (dataset, logical_date, customer_id)
);
COMMENT ON TABLE churnops.scores IS
    'Batch churn/propensity scores: every active customer of a dataset at a logical date, with the decision at '
    'the model threshold, the risk decile (1 = highest risk) and the named risk band. A re-run of the same '
    'logical date replaces its rows in one transaction (churnops.db.write_scores).';
-- Top-K campaign lists and score-distribution panels: the highest scores of one list first.
CREATE INDEX scores_list_by_score_idx ON churnops.scores (dataset, logical_date, score DESC);
-- A customer's score history (API look-ups, call-centre screens).
CREATE INDEX scores_customer_idx ON churnops.scores (customer_id, dataset, logical_date DESC);

-- ---------------------------------------------------------------------------------------------------------------
-- Online prediction log (append-only, written in batches by the API).
-- ---------------------------------------------------------------------------------------------------------------
CREATE TABLE churnops.prediction_log (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    logged_at       timestamptz      NOT NULL DEFAULT now(),
    request_id      text,
    endpoint        text             NOT NULL,
    customer_id     text,
    model_name      text             NOT NULL,
    model_version   text             NOT NULL,
    score           double precision NOT NULL CHECK (score >= 0 AND score <= 1),
    decision        boolean,
    risk_band       text,
    latency_seconds double precision CHECK (latency_seconds >= 0),
    features        jsonb            NOT NULL
);
COMMENT ON TABLE churnops.prediction_log IS
    'Every online prediction: the input features (jsonb), score, decision and model version, appended '
    'asynchronously in batches by the API; the drift DAG reads the last N days of it.';
-- Append-only by time: a BRIN index keeps "last N days" scans cheap at a few pages of index.
CREATE INDEX prediction_log_logged_at_brin ON churnops.prediction_log USING brin (logged_at);
CREATE INDEX prediction_log_version_time_idx ON churnops.prediction_log (model_version, logged_at);

-- ---------------------------------------------------------------------------------------------------------------
-- Drift monitoring and retraining control.
-- ---------------------------------------------------------------------------------------------------------------
CREATE TABLE churnops.drift_runs (
    drift_run_id           text             PRIMARY KEY,
    dataset                text             NOT NULL,
    model_name             text             NOT NULL,
    model_version          text             NOT NULL,
    reference_snapshot     text,
    current_snapshot       text,
    started_at             timestamptz      NOT NULL DEFAULT now(),
    finished_at            timestamptz,
    features_checked       integer          NOT NULL CHECK (features_checked >= 0),
    features_drifted       integer          NOT NULL CHECK (features_drifted >= 0),
    drifted_share          double precision NOT NULL CHECK (drifted_share BETWEEN 0 AND 1),
    weighted_drifted_share double precision CHECK (weighted_drifted_share BETWEEN 0 AND 1),
    score_psi              double precision CHECK (score_psi >= 0),
    warn_threshold         double precision NOT NULL,
    drift_threshold        double precision NOT NULL,
    report_path            text
);
COMMENT ON TABLE churnops.drift_runs IS
    'One row per run of the drift DAG: reference and current snapshots, share of drifted features (plain and '
    'importance-weighted), PSI of the predicted-score distribution, thresholds used, path of the HTML report.';
CREATE INDEX drift_runs_dataset_time_idx ON churnops.drift_runs (dataset, started_at DESC);

CREATE TABLE churnops.drift_metrics (
    drift_run_id            text             NOT NULL REFERENCES churnops.drift_runs ON DELETE CASCADE,
    feature                 text             NOT NULL,
    psi                     double precision CHECK (psi >= 0),
    missing_share           double precision NOT NULL CHECK (missing_share BETWEEN 0 AND 1),
    missing_share_reference double precision CHECK (missing_share_reference BETWEEN 0 AND 1),
    importance              double precision CHECK (importance >= 0),
    threshold               double precision NOT NULL,
    drifted                 boolean          NOT NULL,
    PRIMARY KEY (drift_run_id, feature)
);
COMMENT ON TABLE churnops.drift_metrics IS
    'Per feature and drift run: PSI (Evidently, on non-missing values), share of missing values in the current '
    'data (and in the reference), the champion''s importance of the feature, the threshold and the drift flag.';
-- "PSI of feature X over time" panels.
CREATE INDEX drift_metrics_feature_idx ON churnops.drift_metrics (feature, drift_run_id);

CREATE TABLE churnops.retrain_decisions (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    decided_at       timestamptz NOT NULL DEFAULT now(),
    dataset          text        NOT NULL,
    trigger          text        NOT NULL
        CHECK (trigger IN ('drift_detected', 'performance_drop', 'scheduled', 'manual')),
    fired            boolean     NOT NULL,
    reason           text        NOT NULL,
    drift_run_id     text        REFERENCES churnops.drift_runs ON DELETE SET NULL,
    training_run_id  text,
    details          jsonb       NOT NULL DEFAULT '{}'::jsonb
);
COMMENT ON TABLE churnops.retrain_decisions IS
    'Every retraining trigger considered, fired or suppressed, with its cause (drift_detected, performance_drop, '
    'scheduled, manual) and the reason (e.g. "confirmed over 2 runs", "cooldown until ...", "retrain running").';
CREATE INDEX retrain_decisions_dataset_time_idx ON churnops.retrain_decisions (dataset, decided_at DESC);

CREATE TABLE churnops.realized_performance (
    dataset           text             NOT NULL,
    logical_date      date             NOT NULL,
    model_name        text             NOT NULL,
    model_version     text             NOT NULL,
    horizon_days      integer          NOT NULL CHECK (horizon_days > 0),
    n_scored          bigint           NOT NULL CHECK (n_scored >= 0),
    n_positive        bigint           NOT NULL CHECK (n_positive >= 0),
    roc_auc           double precision CHECK (roc_auc BETWEEN 0 AND 1),
    precision_at_10   double precision CHECK (precision_at_10 BETWEEN 0 AND 1),
    mean_score        double precision CHECK (mean_score BETWEEN 0 AND 1),
    observed_rate     double precision CHECK (observed_rate BETWEEN 0 AND 1),
    calibration_error double precision CHECK (calibration_error >= 0),
    computed_at       timestamptz      NOT NULL DEFAULT now(),
    PRIMARY KEY (dataset, logical_date, model_version)
);
COMMENT ON TABLE churnops.realized_performance IS
    'Realized performance of a past scoring list once its horizon has passed: ROC AUC, precision in the top 10 %, '
    'calibration (mean score vs observed rate, expected calibration error) per scoring date and model version.';

-- ---------------------------------------------------------------------------------------------------------------
-- Model selection.
-- ---------------------------------------------------------------------------------------------------------------
CREATE TABLE churnops.model_evaluations (
    model_name    text             NOT NULL,
    model_version text             NOT NULL,
    dataset       text             NOT NULL,
    eval_cutoff   date             NOT NULL,
    metric        text             NOT NULL,
    value         double precision NOT NULL,
    mlflow_run_id text,
    evaluated_at  timestamptz      NOT NULL DEFAULT now(),
    PRIMARY KEY (model_name, model_version, dataset, eval_cutoff, metric)
);
COMMENT ON TABLE churnops.model_evaluations IS
    'Evaluation metrics (one row per metric: roc_auc, gini, pr_auc, brier, precision_at_10, ...) of a model '
    'version on the evaluation data of one cutoff (out of time, or the holdout for entity-only data).';
-- "Metric over cutoffs" (retro-test stability) and "metric by version" panels.
CREATE INDEX model_evaluations_metric_idx ON churnops.model_evaluations (dataset, metric, eval_cutoff);

CREATE TABLE churnops.promotion_decisions (
    id                 bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    decided_at         timestamptz      NOT NULL DEFAULT now(),
    dataset            text             NOT NULL,
    model_name         text             NOT NULL,
    challenger_version text             NOT NULL,
    champion_version   text,
    promoted           boolean          NOT NULL,
    reason             text             NOT NULL,
    metric             text             NOT NULL,
    challenger_value   double precision,
    champion_value     double precision,
    margin             double precision NOT NULL,
    eval_cutoff        date,
    mlflow_run_id      text
);
COMMENT ON TABLE churnops.promotion_decisions IS
    'Every champion/challenger gate decision: promoted or not and why, the versions compared, the metric on the '
    'same evaluation data for both, and the required margin. Mirrors the MLflow tags of the challenger.';
CREATE INDEX promotion_decisions_model_time_idx ON churnops.promotion_decisions (model_name, decided_at DESC);

-- ---------------------------------------------------------------------------------------------------------------
-- Pipelines: data quality and DAG runs.
-- ---------------------------------------------------------------------------------------------------------------
CREATE TABLE churnops.ingestion_reports (
    dataset            text        NOT NULL,
    source             text        NOT NULL,
    run_id             text        NOT NULL,
    rows_read          bigint      NOT NULL CHECK (rows_read >= 0),
    rows_accepted      bigint      NOT NULL CHECK (rows_accepted >= 0),
    rows_quarantined   bigint      NOT NULL CHECK (rows_quarantined >= 0),
    quarantine_reasons jsonb       NOT NULL DEFAULT '{}'::jsonb,
    reported_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (dataset, source, run_id),
    -- Counts must reconcile: a row read is either accepted or quarantined.
    CHECK (rows_read = rows_accepted + rows_quarantined)
);
COMMENT ON TABLE churnops.ingestion_reports IS
    'Validated ingestion per source and run: rows read, accepted into bronze, quarantined (with counts per '
    'reason). rows_read = rows_accepted + rows_quarantined is enforced.';
CREATE INDEX ingestion_reports_time_idx ON churnops.ingestion_reports (reported_at DESC);

CREATE TABLE churnops.dag_runs (
    dag_id           text        NOT NULL,
    run_id           text        NOT NULL,
    run_type         text,
    logical_date     timestamptz,
    state            text        NOT NULL CHECK (state IN ('queued', 'running', 'success', 'failed')),
    start_date       timestamptz,
    end_date         timestamptz,
    duration_seconds double precision GENERATED ALWAYS AS (extract(epoch FROM end_date - start_date)) STORED,
    recorded_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (dag_id, run_id),
    CHECK (end_date IS NULL OR start_date IS NULL OR end_date >= start_date)
);
COMMENT ON TABLE churnops.dag_runs IS
    'DAG-level run records written by the DAGs themselves (last task / on_*_callback): state, start, end and '
    'duration, for the Pipelines dashboard without reading Airflow''s own metadata database.';
CREATE INDEX dag_runs_dag_time_idx ON churnops.dag_runs (dag_id, start_date DESC);
