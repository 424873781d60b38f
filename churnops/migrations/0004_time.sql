-- 0004_time: the platform lives in time. A scoring list is keyed by its kind as well as its date, so a backfill
-- of a past date never replaces the list the regular run of that date wrote (nor the other way round); drift runs
-- and retraining decisions carry the run date they belong to.
-- Applied inside one transaction by the migration runner, which records it in churnops.schema_migrations.
-- Never edit this file once released: add 0005_<change>.sql instead (see docs/database.md).

ALTER TABLE churnops.score_runs
    ADD COLUMN list_kind text NOT NULL DEFAULT 'regular' CHECK (list_kind IN ('regular', 'backfill'));
ALTER TABLE churnops.score_runs DROP CONSTRAINT score_runs_pkey;
ALTER TABLE churnops.score_runs ADD PRIMARY KEY (dataset, logical_date, list_kind);
COMMENT ON COLUMN churnops.score_runs.list_kind IS
    '`regular`: the list a run wrote for its own date; `backfill`: a list written later for a past date or '
    'cutoff (an Airflow backfill, a backtest). Each kind of a date is replaced only by the same kind.';

ALTER TABLE churnops.scores
    ADD COLUMN list_kind text NOT NULL DEFAULT 'regular' CHECK (list_kind IN ('regular', 'backfill'));
ALTER TABLE churnops.scores DROP CONSTRAINT scores_pkey;
ALTER TABLE churnops.scores ADD PRIMARY KEY (dataset, logical_date, list_kind, customer_id);
DROP INDEX churnops.scores_list_by_score_idx;
CREATE INDEX scores_list_by_score_idx ON churnops.scores (dataset, logical_date, list_kind, score DESC);

ALTER TABLE churnops.realized_performance
    ADD COLUMN list_kind text NOT NULL DEFAULT 'regular' CHECK (list_kind IN ('regular', 'backfill'));
ALTER TABLE churnops.realized_performance DROP CONSTRAINT realized_performance_pkey;
ALTER TABLE churnops.realized_performance ADD PRIMARY KEY (dataset, logical_date, list_kind, model_version);

-- Drift runs say which data they compared (the feature snapshot or the online prediction log) and for which run
-- date, so dashboards and the retraining control can tell the two comparisons apart.
ALTER TABLE churnops.drift_runs
    ADD COLUMN current_source text NOT NULL DEFAULT 'snapshot' CHECK (current_source IN ('snapshot', 'prediction_log')),
    ADD COLUMN run_date date;

-- Retraining decisions belong to a run date; a re-run of that date replaces them instead of adding more. An
-- advisory decision (the CLI without --trigger-training) is recorded but starts no cooldown.
ALTER TABLE churnops.retrain_decisions
    ADD COLUMN run_date date,
    ADD COLUMN advisory boolean NOT NULL DEFAULT false;
CREATE UNIQUE INDEX retrain_decisions_per_run_idx
    ON churnops.retrain_decisions (dataset, run_date, trigger, advisory) WHERE run_date IS NOT NULL;

-- ---------------------------------------------------------------------------------------------------------------
-- Replays: what the platform did at each replayed run date (churnops replay; monitoring/timeline.py).
-- ---------------------------------------------------------------------------------------------------------------
CREATE TABLE churnops.replay_timeline (
    replay_id                text             NOT NULL,
    run_date                 date             NOT NULL,
    dataset                  text             NOT NULL,
    policy                   text             NOT NULL,
    step                     integer          NOT NULL CHECK (step >= 0),
    watermark                date,
    snapshot_id              text,
    champion_version         text,
    decision_trigger         text,
    decision_reason          text             NOT NULL,
    training_outcome         text CHECK (training_outcome IN ('registered', 'promoted', 'skipped')),
    trained_version          text,
    training_reason          text,
    weighted_drifted_share   double precision,
    important_drifted        text[]           NOT NULL DEFAULT '{}',
    psi                      jsonb            NOT NULL DEFAULT '{}'::jsonb,
    realized_cohort          date,
    realized_roc_auc         double precision CHECK (realized_roc_auc BETWEEN 0 AND 1),
    realized_precision_at_10 double precision CHECK (realized_precision_at_10 BETWEEN 0 AND 1),
    realized_model_version   text,
    scored_rows              bigint,
    seconds                  jsonb            NOT NULL DEFAULT '{}'::jsonb,
    recorded_at              timestamptz      NOT NULL DEFAULT now(),
    PRIMARY KEY (replay_id, run_date)
);
COMMENT ON TABLE churnops.replay_timeline IS
    'One row per replayed run date: watermark, snapshot, champion, the retraining decision and the training it '
    'started, drift, the realized performance of the newest matured list, and each DAG''s seconds. Re-running a '
    'step replaces its row.';
