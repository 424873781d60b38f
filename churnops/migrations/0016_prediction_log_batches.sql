-- 0016_prediction_log_batches: the prediction log stores one row per flush of an API worker's writer (many requests),
-- by column; readers keep the per-prediction shape through the view churnops.prediction_log.
-- Applied inside one transaction by the migration runner, which records it in churnops.schema_migrations.
-- Never edit this file once released: add 0017_<change>.sql instead (see docs/database.md).

-- Why: with one row per request (0014), single-row /predict still paid a heap tuple, two index entries and the
-- CHECKs in PostgreSQL, and a row's formatting in the API, for every request, on the same two cores that serve the
-- API. A batch row holds every request its writer thread flushed at once: the per-request fields (logged_at,
-- request_id, endpoint, latency) as arrays in the order the requests were answered, the per-prediction fields as
-- arrays in request order, and the features as one json text of every prediction's values (the model's input
-- column names once per row, in feature_names), so those costs are paid once per flush. The API serialises each
-- request's values as they come (orjson, in the handler) and the writer only joins the texts: re-serialising a
-- whole flush by column in the writer thread held the GIL against the event loop and cost twice as much.
--
-- churnops.prediction_log_requests stays as it is, readable through the view and still writable: during a rolling
-- upgrade an API of the previous release keeps appending to it. It can be dropped once no API writes it and its rows
-- are older than any reader's window (drift reads the last prediction_log_days).

-- A CHECK cannot hold a subquery: the sum of request_rows (one element per request) through a function. PL/pgSQL,
-- not SQL: a SQL function is planned again in every statement that calls it, and every flush is its own COPY
-- (measured by a scratch loop of single-row INSERTs: roughly 50 us more each with a SQL function, within noise with
-- this one).
CREATE FUNCTION churnops.integer_array_sum(elements integer[]) RETURNS bigint
    LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
AS $$
DECLARE
    total   bigint := 0;
    element integer;
BEGIN
    FOREACH element IN ARRAY elements LOOP
        total := total + element;
    END LOOP;
    RETURN total;
END
$$;
COMMENT ON FUNCTION churnops.integer_array_sum(integer[]) IS
    'The sum of an integer array''s elements (0 for an empty array; null if an element is null); used by '
    'prediction_log_batches'' CHECK.';

CREATE TABLE churnops.prediction_log_batches (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    first_logged_at timestamptz        NOT NULL,
    last_logged_at  timestamptz        NOT NULL,
    model_name      text               NOT NULL,
    model_version   text               NOT NULL,
    n_requests      integer            NOT NULL CHECK (n_requests >= 1),
    n_rows          integer            NOT NULL CHECK (n_rows >= 1),
    -- Position i of these arrays is the batch's i-th request, in the order the requests were answered.
    logged_at       timestamptz[]      NOT NULL,
    request_ids     text[]             NOT NULL,
    endpoints       text[]             NOT NULL,
    latency_seconds double precision[] NOT NULL,
    request_rows    integer[]          NOT NULL,
    -- Position i of these arrays is the batch's i-th prediction: the requests' predictions one request after the
    -- other, each request's in its own order.
    customer_ids    text[]             NOT NULL,
    scores          double precision[] NOT NULL,
    decisions       boolean[]          NOT NULL,
    risk_bands      text[]             NOT NULL,
    feature_names   text[]             NOT NULL,
    -- [[values of prediction 1, in feature_names' order], ..., [values of prediction n_rows]] json text (null = missing)
    features        text               NOT NULL,
    -- Every CHECK runs once per batch row: cardinality() reads an array's header only, the others read an array of
    -- n_requests or n_rows elements once, as 0014's.
    CONSTRAINT prediction_log_batches_time_range CHECK (first_logged_at <= last_logged_at),
    CONSTRAINT prediction_log_batches_one_per_request CHECK (
        cardinality(logged_at) = n_requests AND cardinality(request_ids) = n_requests
        AND cardinality(endpoints) = n_requests AND cardinality(latency_seconds) = n_requests
        AND cardinality(request_rows) = n_requests),
    CONSTRAINT prediction_log_batches_one_per_prediction CHECK (
        cardinality(customer_ids) = n_rows AND cardinality(scores) = n_rows
        AND cardinality(decisions) = n_rows AND cardinality(risk_bands) = n_rows),
    -- The view finds each prediction's request by adding up request_rows: they must count every prediction once.
    CONSTRAINT prediction_log_batches_request_rows CHECK (
        array_position(request_rows, NULL) IS NULL AND 1 <= ALL (request_rows)
        AND churnops.integer_array_sum(request_rows) = n_rows),
    CONSTRAINT prediction_log_batches_scores_are_probabilities CHECK (
        array_position(scores, NULL) IS NULL AND 0 <= ALL (scores) AND 1 >= ALL (scores))
);
COMMENT ON TABLE churnops.prediction_log_batches IS
    'The prediction log, one row per flush of an API worker''s writer (one or more online requests of one model '
    'version): the requests'' fields (logged_at, request_ids, endpoints, latency_seconds, request_rows) and the '
    'predictions'' (customer_ids, scores, decisions, risk_bands) as arrays, the input features as one json '
    'text of value arrays; read per prediction through the view churnops.prediction_log, or per batch by the drift DAG.';
COMMENT ON COLUMN churnops.prediction_log_batches.first_logged_at IS
    'The earliest of logged_at: with last_logged_at, the batch''s time range, which the indexes and readers use.';
COMMENT ON COLUMN churnops.prediction_log_batches.last_logged_at IS 'The latest of logged_at.';
COMMENT ON COLUMN churnops.prediction_log_batches.request_ids IS
    'Each request''s X-Request-ID (null where the request had none).';
COMMENT ON COLUMN churnops.prediction_log_batches.latency_seconds IS
    'Each request''s latency as the API measured it (null where unknown).';
COMMENT ON COLUMN churnops.prediction_log_batches.request_rows IS
    'How many predictions each request made (each >= 1, summing to n_rows): request i''s predictions follow '
    'those of requests 1 .. i-1 in the per-prediction arrays.';
COMMENT ON COLUMN churnops.prediction_log_batches.feature_names IS
    'The model''s input columns, in order: the keys of every prediction''s features.';
COMMENT ON COLUMN churnops.prediction_log_batches.features IS
    'The batch''s validated input features as json text (type text: not parsed on write, see migration 0015; read '
    'it as features::json): an array of n_rows arrays, the i-th prediction''s values in the order of feature_names '
    '(null for missing)';
-- The features text of a flush is tens of kB or more, always stored out of line: lz4 where the server has it (the
-- default build since PostgreSQL 14; pglz cost more CPU than the rest of the insert, see 0014), otherwise none.
DO $$
BEGIN
    ALTER TABLE churnops.prediction_log_batches ALTER COLUMN features SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported THEN
    ALTER TABLE churnops.prediction_log_batches ALTER COLUMN features SET STORAGE EXTERNAL;
END
$$;
-- As the older log tables: BRIN for "the last N days" (rows are appended in time order, so block ranges of
-- first_logged_at are tight and the index is a few pages), and btree by model version and time for one version's
-- traffic. On first_logged_at: a batch spans the seconds of one flush, so a window on it misses at most the batch
-- straddling the window's start.
CREATE INDEX prediction_log_batches_first_logged_at_brin
    ON churnops.prediction_log_batches USING brin (first_logged_at);
CREATE INDEX prediction_log_batches_version_time_idx
    ON churnops.prediction_log_batches (model_version, first_logged_at);

-- Whoever may append to the per-request table (the API's role, granted by postgres-init) may append batches too.
-- The per-request grant stays: during a rolling upgrade an API of the previous release keeps logging requests.
DO $$
DECLARE
    grantee text;
BEGIN
    FOR grantee IN
        SELECT DISTINCT g.grantee FROM information_schema.role_table_grants AS g
        WHERE g.table_schema = 'churnops' AND g.table_name = 'prediction_log_requests'
          AND g.privilege_type = 'INSERT' AND g.grantee <> current_user
    LOOP
        EXECUTE format('GRANT INSERT ON churnops.prediction_log_batches TO %I', grantee);
    END LOOP;
END
$$;

-- One row per prediction, old and new alike: 0015's view (same columns, types and order; CREATE OR REPLACE keeps its
-- grants) and a third branch for the batches. log_id is the id of the stored row (for a batch the batch's), position
-- the prediction's place in its request (1-based, 1 for the old per-prediction rows); logged_at, request_id,
-- endpoint and latency_seconds are the prediction's request's.
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
) AS p
UNION ALL
SELECT b.id, p.position, p.logged_at, p.request_id, p.endpoint, p.customer_id, b.model_name, b.model_version,
       p.score, p.decision, p.risk_band, p.latency_seconds, p.features
FROM churnops.prediction_log_batches AS b
CROSS JOIN LATERAL (
    -- Each array is unnested once (no subscripting: reaching element i of an array of text or with nulls walks it
    -- from the start) and the three parts are joined on the prediction's index in the batch: the predictions, their
    -- requests (request k's predictions are the indexes after the request_rows of requests 1 .. k-1), and the
    -- features, taken apart once per batch (json nulls stay json null, keys in feature_names' order).
    SELECT q.position, q.logged_at, q.request_id, q.endpoint, q.latency_seconds,
           u.customer_id, u.score, u.decision, u.risk_band, coalesce(f.features, '{}'::json) AS features
    FROM unnest(b.customer_ids, b.scores, b.decisions, b.risk_bands)
         WITH ORDINALITY AS u(customer_id, score, decision, risk_band, prediction_index)
    JOIN (
        SELECT k.logged_at, k.request_id, k.endpoint, k.latency_seconds, n.position::bigint AS position,
               k.rows_before + n.position AS prediction_index
        FROM (
            SELECT rq.*, sum(rq.request_rows) OVER (ORDER BY rq.request_index) - rq.request_rows AS rows_before
            FROM unnest(b.logged_at, b.request_ids, b.endpoints, b.latency_seconds, b.request_rows)
                 WITH ORDINALITY AS rq(logged_at, request_id, endpoint, latency_seconds, request_rows, request_index)
        ) AS k
        CROSS JOIN LATERAL generate_series(1, k.request_rows) AS n(position)
    ) AS q ON q.prediction_index = u.prediction_index
    LEFT JOIN (
        SELECT v.prediction_index,
               (SELECT json_object_agg(n.name, x.value ORDER BY n.feature_position)
                FROM unnest(b.feature_names) WITH ORDINALITY AS n(name, feature_position)
                JOIN json_array_elements(v.value) WITH ORDINALITY AS x(value, feature_position)
                  ON x.feature_position = n.feature_position) AS features
        FROM json_array_elements(b.features::json) WITH ORDINALITY AS v(value, prediction_index)
    ) AS f ON f.prediction_index = u.prediction_index
) AS p;
COMMENT ON VIEW churnops.prediction_log IS
    'Every online prediction, one row each: the input features (json object), score, decision and model version; '
    'those logged before migration 0014, the rows of churnops.prediction_log_requests and of '
    'churnops.prediction_log_batches taken apart.';
