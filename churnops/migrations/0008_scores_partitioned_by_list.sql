-- 0008_scores_partitioned_by_list: churnops.scores becomes a table partitioned by list, one partition per
-- (dataset, logical_date, list_kind), so replacing a list swaps a partition instead of deleting and re-inserting
-- rows one by one.
-- Applied inside one transaction by the migration runner, which records it in churnops.schema_migrations.
-- Never edit this file once released: add 0009_<change>.sql instead (see docs/database.md).

-- Why: a 1M-row list was replaced by deleting the old million rows and COPYing the new ones into a table whose
-- three indexes were maintained row by row, and the dead rows stayed until autovacuum. Now the writer COPYs into a
-- fresh table without indexes, builds them in bulk, and in the same transaction drops the list's old partition and
-- attaches the new one (churnops.db.write_scores): readers still see the old complete list until the commit.
ALTER TABLE churnops.scores RENAME TO scores_before_0008;
ALTER TABLE churnops.scores_before_0008 RENAME CONSTRAINT scores_pkey TO scores_before_0008_pkey;
ALTER INDEX churnops.scores_list_by_score_idx RENAME TO scores_before_0008_list_by_score_idx;
ALTER INDEX churnops.scores_customer_idx RENAME TO scores_before_0008_customer_idx;

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
    list_kind     text             NOT NULL DEFAULT 'regular'
                  CONSTRAINT scores_list_kind_check CHECK (list_kind IN ('regular', 'backfill', 'adhoc')),
    -- '<dataset>/<logical_date>/<list_kind>': the partition key (PostgreSQL partitions by one list column).
    list_key      text             NOT NULL,
    PRIMARY KEY (list_key, customer_id)
) PARTITION BY LIST (list_key);
COMMENT ON TABLE churnops.scores IS
    'Batch churn/propensity scores, one partition per list (dataset, logical_date, list_kind): every customer '
    'scored, with the decision at the model threshold, the risk decile (1 = highest risk) and the named risk band. '
    'A re-run replaces its list by swapping its partition in one transaction (churnops.db.write_scores).';
COMMENT ON COLUMN churnops.scores.list_key IS
    'dataset/logical_date/list_kind of the row''s list: the partition key, set by the writer.';
-- Top-K campaign lists and score-distribution panels: the highest scores of one list first.
CREATE INDEX scores_list_by_score_idx ON churnops.scores (dataset, logical_date, list_kind, score DESC);
-- A customer's score history (API look-ups, call-centre screens, the list page's customer card).
CREATE INDEX scores_customer_idx ON churnops.scores (customer_id, dataset, logical_date DESC);

ALTER TABLE churnops.score_runs ADD COLUMN partition_name text;
COMMENT ON COLUMN churnops.score_runs.partition_name IS
    'The partition of churnops.scores that holds this list''s rows (replaced as a whole on a re-run).';

-- The lists written before this migration move into their own partitions.
DO $$
DECLARE
    list record;
    key text;
    part text;
BEGIN
    FOR list IN SELECT DISTINCT dataset, logical_date, list_kind FROM churnops.scores_before_0008 LOOP
        key := list.dataset || '/' || to_char(list.logical_date, 'YYYY-MM-DD') || '/' || list.list_kind;
        part := 'scores_' || left(md5(key), 12) || '_0008';
        EXECUTE format('CREATE TABLE churnops.%I PARTITION OF churnops.scores FOR VALUES IN (%L)', part, key);
        EXECUTE format(
            'INSERT INTO churnops.%I (dataset, logical_date, customer_id, run_id, cutoff, score, decision, '
            'risk_decile, risk_band, model_name, model_version, scored_at, list_kind, list_key) '
            'SELECT dataset, logical_date, customer_id, run_id, cutoff, score, decision, risk_decile, risk_band, '
            'model_name, model_version, scored_at, list_kind, %L FROM churnops.scores_before_0008 '
            'WHERE dataset = %L AND logical_date = %L AND list_kind = %L',
            part, key, list.dataset, list.logical_date, list.list_kind
        );
        UPDATE churnops.score_runs SET partition_name = part
        WHERE dataset = list.dataset AND logical_date = list.logical_date AND list_kind = list.list_kind;
    END LOOP;
END
$$;
DROP TABLE churnops.scores_before_0008;
