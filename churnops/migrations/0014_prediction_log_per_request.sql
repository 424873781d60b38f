-- 0014_prediction_log_per_request: the prediction log stores one row per request, by column; readers keep the
-- per-prediction shape through the view churnops.prediction_log.
-- Applied inside one transaction by the migration runner, which records it in churnops.schema_migrations.
-- Never edit this file once released: add 0015_<change>.sql instead (see docs/database.md).

-- Why: with one row per prediction PostgreSQL spent 17-19 us of backend CPU per logged prediction (a heap tuple, two
-- index entries, a json parse), on the same two cores that serve the API, and that capped /batch_predict. A request
-- row holds its predictions as arrays and its features as one column-wise json text, so those costs are paid once
-- per request.
--
-- The old table is renamed, not converted: the rename is instant (no rewrite of a possibly large log), its rows stay
-- readable under the old name through the view, and it can be dropped once it is older than any window a reader
-- uses (drift reads the last prediction_log_days). The name churnops.prediction_log keeps meaning "one row per
-- prediction" for every reader (drift, Grafana, ad-hoc SQL).
ALTER TABLE churnops.prediction_log RENAME TO prediction_log_per_prediction;
ALTER INDEX churnops.prediction_log_pkey RENAME TO prediction_log_per_prediction_pkey;
ALTER INDEX churnops.prediction_log_logged_at_brin RENAME TO prediction_log_per_prediction_logged_at_brin;
ALTER INDEX churnops.prediction_log_version_time_idx RENAME TO prediction_log_per_prediction_version_time_idx;
COMMENT ON TABLE churnops.prediction_log_per_prediction IS
    'The prediction log as written before migration 0014 (one row per prediction); read through the view '
    'churnops.prediction_log, written no more.';

CREATE TABLE churnops.prediction_log_requests (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    logged_at       timestamptz        NOT NULL DEFAULT now(),
    request_id      text,
    endpoint        text               NOT NULL,
    model_name      text               NOT NULL,
    model_version   text               NOT NULL,
    latency_seconds double precision   CHECK (latency_seconds >= 0),
    n_rows          integer            NOT NULL CHECK (n_rows >= 1),
    -- Position i of every array is the request's i-th prediction (1-based, in the order of the request).
    customer_ids    text[]             NOT NULL,
    scores          double precision[] NOT NULL,
    decisions       boolean[]          NOT NULL,
    risk_bands      text[]             NOT NULL,
    -- {"feature": [value of prediction 1, value of prediction 2, ...], ...}: one json text per request.
    features        json               NOT NULL,
    CHECK (cardinality(customer_ids) = n_rows AND cardinality(scores) = n_rows
           AND cardinality(decisions) = n_rows AND cardinality(risk_bands) = n_rows),
    CHECK (array_position(scores, NULL) IS NULL AND 0 <= ALL (scores) AND 1 >= ALL (scores))
);
COMMENT ON TABLE churnops.prediction_log_requests IS
    'The prediction log, one row per online request: its predictions as arrays (customer_ids, scores, decisions, '
    'risk_bands) and its input features as one column-wise json text, appended asynchronously by the API; read '
    'per prediction through the view churnops.prediction_log, or per request by the drift DAG.';
COMMENT ON COLUMN churnops.prediction_log_requests.features IS
    'The request''s validated input features by column: feature name -> array of values (null for missing), in '
    'the order of the predictions.';
-- A request's features are 30-40 kB of json text (100 predictions of 40 features), always stored out of line:
-- compressing them with the default pglz took PostgreSQL more CPU than everything else of the insert (12.5 us
-- per prediction with pglz, 5.5 with lz4, measured by benchmarks/prediction_log_cost.py). lz4 where the server has
-- it (the default build since PostgreSQL 14), otherwise no compression.
DO $$
BEGIN
    ALTER TABLE churnops.prediction_log_requests ALTER COLUMN features SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported THEN
    ALTER TABLE churnops.prediction_log_requests ALTER COLUMN features SET STORAGE EXTERNAL;
END
$$;
-- As the old table: BRIN for "last N days" (append-only by time), and by model version and time.
CREATE INDEX prediction_log_requests_logged_at_brin ON churnops.prediction_log_requests USING brin (logged_at);
CREATE INDEX prediction_log_requests_version_time_idx ON churnops.prediction_log_requests (model_version, logged_at);

-- Whoever could append to the old table (the API's role, granted by postgres-init) appends to the new one instead,
-- so an API already running keeps logging after this migration; nothing appends to the old table any more.
DO $$
DECLARE
    grantee text;
BEGIN
    FOR grantee IN
        SELECT DISTINCT g.grantee FROM information_schema.role_table_grants AS g
        WHERE g.table_schema = 'churnops' AND g.table_name = 'prediction_log_per_prediction'
          AND g.privilege_type = 'INSERT' AND g.grantee <> current_user
    LOOP
        EXECUTE format('GRANT INSERT ON churnops.prediction_log_requests TO %I', grantee);
        EXECUTE format('REVOKE INSERT ON churnops.prediction_log_per_prediction FROM %I', grantee);
    END LOOP;
END
$$;

-- One row per prediction, old and new alike. log_id is the id of the stored row (the request's, or the old
-- per-prediction row's) and position the prediction's place in its request (1 for the old rows), so
-- ORDER BY logged_at, log_id, position is the order the predictions were made in.
CREATE VIEW churnops.prediction_log AS
SELECT old.id AS log_id, 1::bigint AS position, old.logged_at, old.request_id, old.endpoint, old.customer_id,
       old.model_name, old.model_version, old.score, old.decision, old.risk_band, old.latency_seconds, old.features
FROM churnops.prediction_log_per_prediction AS old
UNION ALL
SELECT r.id, p.position, r.logged_at, r.request_id, r.endpoint, p.customer_id, r.model_name, r.model_version,
       p.score, p.decision, p.risk_band, r.latency_seconds, p.features
FROM churnops.prediction_log_requests AS r
CROSS JOIN LATERAL (
    -- The features are taken apart once per request (not once per prediction), then matched by position.
    SELECT u.position, u.customer_id, u.score, u.decision, u.risk_band, coalesce(f.features, '{}'::json) AS features
    FROM unnest(r.customer_ids, r.scores, r.decisions, r.risk_bands)
         WITH ORDINALITY AS u(customer_id, score, decision, risk_band, position)
    LEFT JOIN (
        SELECT v.position, json_object_agg(e.key, v.value ORDER BY e.feature_position) AS features
        FROM json_each(r.features) WITH ORDINALITY AS e(key, value, feature_position)
        CROSS JOIN LATERAL json_array_elements(e.value) WITH ORDINALITY AS v(value, position)
        GROUP BY v.position
    ) AS f ON f.position = u.position
) AS p;
COMMENT ON VIEW churnops.prediction_log IS
    'Every online prediction, one row each: the input features (json object), score, decision and model version; '
    'the rows of churnops.prediction_log_requests taken apart, after those logged before migration 0014.';
