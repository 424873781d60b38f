-- Bootstrap of the migration bookkeeping, run before any versioned migration by both runners
-- (postgres-init/10-databases.sh and churnops.db.migrate). Idempotent: safe on every start.
CREATE SCHEMA IF NOT EXISTS churnops;

CREATE TABLE IF NOT EXISTS churnops.schema_migrations (
    version    text        PRIMARY KEY,
    name       text        NOT NULL,
    -- SHA-256 of the migration file as applied: a file edited after it was applied is refused.
    checksum   text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);

COMMENT ON TABLE churnops.schema_migrations IS
    'One row per applied versioned migration (churnops/migrations/NNNN_name.sql) with the SHA-256 of the file.';
