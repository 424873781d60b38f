-- 0003_prediction_log_json: the prediction log keeps its input features as json text, not jsonb.
-- Applied inside one transaction by the migration runner, which records it in churnops.schema_migrations.
-- Never edit this file once released: add 0004_<change>.sql instead (see docs/database.md).

-- Why: the log is written once per online prediction and read in bulk (every column of every row of the last N
-- days) by the drift DAG; nothing queries inside it by key. jsonb's parse into its binary form was the largest cost
-- of logging: measured with 500-row COPY batches of a 40-feature record, PostgreSQL spent 35 us per row for jsonb
-- and 14 us for json, on the same two cores that serve the API. json still validates the text on the way in.
ALTER TABLE churnops.prediction_log ALTER COLUMN features TYPE json USING features::json;
COMMENT ON COLUMN churnops.prediction_log.features IS
    'The request''s validated input features (name -> value, null for missing) as json text; read whole by the '
    'drift DAG.';
