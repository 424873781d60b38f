-- 0015_prediction_log_features_text: the per-request prediction log keeps its features as text, not json.
-- Applied inside one transaction by the migration runner, which records it in churnops.schema_migrations.
-- Never edit this file once released: add 0016_<change>.sql instead (see docs/database.md).

-- Why: json's input function parses the whole text to validate it, and a 100-prediction request's features are
-- 30-40 kB of it: about 650 us of PostgreSQL's CPU per request (serving_bench.py's CPU by role, the log's backend),
-- on the same two cores that serve the API, for a text nothing reads by key. The only writer is the API's own
-- (churnops.db.prediction_log: orjson output, always valid json); readers cast it back where they read it (the view
-- below, the drift DAG's sample), so the json is parsed when read, not on every write.
--
-- The column changes type in place: json and text have the same stored form, but PostgreSQL has no binary cast
-- between them, so the table is rewritten once, under its lock (the API's COPY meanwhile waits, times out and
-- spools; the spool is replayed after, nothing is lost). The table holds one row per request, compressed, since
-- migration 0014.

-- The view reads the column: it is redefined first without it (CREATE OR REPLACE keeps the view's grants), the
-- column changes, then the view is redefined to read it through a cast. All in this migration's transaction.
CREATE OR REPLACE VIEW churnops.prediction_log AS
SELECT old.id AS log_id, 1::bigint AS position, old.logged_at, old.request_id, old.endpoint, old.customer_id,
       old.model_name, old.model_version, old.score, old.decision, old.risk_band, old.latency_seconds, old.features
FROM churnops.prediction_log_per_prediction AS old
UNION ALL
SELECT r.id, u.position, r.logged_at, r.request_id, r.endpoint, u.customer_id, r.model_name, r.model_version,
       u.score, u.decision, u.risk_band, r.latency_seconds, '{}'::json
FROM churnops.prediction_log_requests AS r
CROSS JOIN LATERAL unnest(r.customer_ids, r.scores, r.decisions, r.risk_bands)
     WITH ORDINALITY AS u(customer_id, score, decision, risk_band, position);

ALTER TABLE churnops.prediction_log_requests ALTER COLUMN features TYPE text USING features::text;
-- The type change resets the column's storage to text's default: compression as 0014 chose it (lz4 where the
-- server has it, otherwise none).
DO $$
BEGIN
    ALTER TABLE churnops.prediction_log_requests ALTER COLUMN features SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported THEN
    ALTER TABLE churnops.prediction_log_requests ALTER COLUMN features SET STORAGE EXTERNAL;
END
$$;
COMMENT ON COLUMN churnops.prediction_log_requests.features IS
    'The request''s validated input features by column, as json text (type text: not parsed on write; read it as '
    'features::json): feature name -> array of values (null for missing), in the order of the predictions.';

-- As migration 0014's view, the features read through a cast.
CREATE OR REPLACE VIEW churnops.prediction_log AS
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
        FROM json_each(r.features::json) WITH ORDINALITY AS e(key, value, feature_position)
        CROSS JOIN LATERAL json_array_elements(e.value) WITH ORDINALITY AS v(value, position)
        GROUP BY v.position
    ) AS f ON f.position = u.position
) AS p;
