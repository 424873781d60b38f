-- 0010_optuna_schema: a schema for Optuna's study storage in the platform database.
-- Applied inside one transaction by the migration runner, which records it in churnops.schema_migrations.
-- Never edit this file once released: add 0011_<change>.sql instead (see docs/database.md).

-- Why: in the full deployment training tasks may run on any Airflow worker, and a retried task must resume the
-- study the killed one started (docs/model-selection.md). A SQLite file under one worker's working folder cannot be
-- shared, so the deployment's `churnops_optuna_storage_url` points Optuna at this database with
-- `options=-csearch_path=optuna`. Optuna creates and migrates its own tables here (its alembic history included);
-- they are Optuna's, never read by the platform's SQL, and kept apart from the `churnops` schema so that the
-- read-only and API roles, which are granted that schema, see nothing of them.
CREATE SCHEMA IF NOT EXISTS optuna;
COMMENT ON SCHEMA optuna IS
    'Optuna''s study storage (RDBStorage tables, created by Optuna) for training in the full deployment.';
