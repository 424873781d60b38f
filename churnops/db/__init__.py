"""The platform's PostgreSQL store: connection, versioned migrations, idempotent score lists, record writers.

Everything lives in the `churnops` schema (docs/database.md). The schema is the versioned SQL in
`churnops/migrations/` (`NNNN_name.sql`), applied by `migrate` here and by
`postgres-init/10-churnops-databases.sh` in the docker-compose deployment with the same protocol, so either
runner finds the other's work already done.

Every writer runs in its own transaction (`with conn:` commits on success, rolls back on error) and uses
parameterized SQL only; bulk rows go through COPY or `execute_values`, never one INSERT per row. This package's
surface is what the other rooms use: `from churnops import db`, then `db.connect`, `db.write_scores`, ...
"""

from churnops.db.connection import (
    BOOTSTRAP_FILE,
    CONNECT_TIMEOUT_SECONDS,
    MIGRATIONS_DIR,
    SCHEMA,
    Migration,
    MigrationError,
    applied_migrations,
    connect,
    discover_migrations,
    migrate,
)
from churnops.db.list_columns import latest_list_rows_of, latest_survival_of, newest_list_has_model_columns
from churnops.db.monitoring_writers import (
    replace_realized_outcomes,
    write_drift_run,
    write_realized_performance,
    write_replay_step,
    write_retrain_decision,
)
from churnops.db.parallel_scores import (
    StagedList,
    abandon_staged_list,
    copy_staged_rows,
    list_record,
    publish_staged_list,
    stage_list,
)
from churnops.db.prediction_log import write_prediction_log
from churnops.db.rows import copy_text
from churnops.db.scores import LIST_KINDS, latest_scores, write_scores
from churnops.db.writers import (
    PROMOTION_STATISTICS,
    IngestionReport,
    record_dag_run,
    write_ingestion_reports,
    write_model_evaluation,
    write_promotion_decision,
)

__all__ = [
    "BOOTSTRAP_FILE",
    "CONNECT_TIMEOUT_SECONDS",
    "LIST_KINDS",
    "MIGRATIONS_DIR",
    "PROMOTION_STATISTICS",
    "SCHEMA",
    "StagedList",
    "IngestionReport",
    "Migration",
    "MigrationError",
    "abandon_staged_list",
    "applied_migrations",
    "connect",
    "copy_staged_rows",
    "copy_text",
    "discover_migrations",
    "latest_scores",
    "latest_list_rows_of",
    "latest_survival_of",
    "newest_list_has_model_columns",
    "list_record",
    "migrate",
    "publish_staged_list",
    "record_dag_run",
    "replace_realized_outcomes",
    "stage_list",
    "write_drift_run",
    "write_ingestion_reports",
    "write_model_evaluation",
    "write_prediction_log",
    "write_promotion_decision",
    "write_realized_performance",
    "write_replay_step",
    "write_retrain_decision",
    "write_scores",
]
