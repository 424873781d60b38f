#!/usr/bin/env bash
# Creates the roles and databases of the full deployment and applies the churnops platform schema.
#
# Run by the official postgres image from /docker-entrypoint-initdb.d on the first start (empty data directory),
# as the superuser $POSTGRES_USER over the local socket. Also runnable by hand against any server: the connection
# comes from the usual libpq variables (PGHOST, PGPORT, ...), and the script is idempotent (existing roles get
# their password reset from the secret file, existing databases are kept, applied migrations are skipped).
#
# Passwords come from Docker secret files, never from the environment or this repository:
#   $SECRETS_DIR/airflow_db_password, $SECRETS_DIR/mlflow_db_password, $SECRETS_DIR/churnops_db_password,
#   $SECRETS_DIR/churnops_api_db_password (the API's least-privilege role on the churnops database),
#   $SECRETS_DIR/grafana_db_password (Grafana's read-only role on the churnops database)
# The mlflow role also owns MLflow's user store (database $MLFLOW_AUTH_DB), read by its basic-auth app.
# Only each database's owner (and the roles granted below) may connect: CONNECT and TEMPORARY are revoked from
# PUBLIC, so a role of one service cannot even open another service's database.
# The platform schema is the versioned SQL in churnops/migrations (the same files churnops.db.migrate applies),
# mounted into the container at $CHURNOPS_MIGRATIONS_DIR.
set -euo pipefail

SECRETS_DIR="${SECRETS_DIR:-/run/secrets}"
CHURNOPS_MIGRATIONS_DIR="${CHURNOPS_MIGRATIONS_DIR:-/churnops-migrations}"
# Role and database names (one role owning one database each); overridable so tests can run side by side.
AIRFLOW_DB="${AIRFLOW_DB:-airflow}"
MLFLOW_DB="${MLFLOW_DB:-mlflow}"
MLFLOW_AUTH_DB="${MLFLOW_AUTH_DB:-mlflow_auth}"
CHURNOPS_DB="${CHURNOPS_DB:-churnops}"
API_DB_ROLE="${API_DB_ROLE:-churnops_api}"
GRAFANA_DB_ROLE="${GRAFANA_DB_ROLE:-grafana_reader}"
ADMIN_USER="${POSTGRES_USER:-postgres}"
ADMIN_DB="${POSTGRES_DB:-$ADMIN_USER}"

fail() {
    echo "postgres-init: $*" >&2
    exit 1
}

read_secret() {
    local file="$SECRETS_DIR/$1"
    [[ -r "$file" ]] || fail "secret file $file is missing or unreadable (generate the secrets first, see README)"
    local value
    value="$(<"$file")"
    [[ -n "$value" ]] || fail "secret file $file is empty"
    printf '%s' "$value"
}

[[ -d "$CHURNOPS_MIGRATIONS_DIR" ]] ||
    fail "migrations folder $CHURNOPS_MIGRATIONS_DIR not found (mount ./churnops/migrations there)"
[[ -f "$CHURNOPS_MIGRATIONS_DIR/bootstrap.sql" ]] || fail "$CHURNOPS_MIGRATIONS_DIR/bootstrap.sql not found"

psql_admin() {
    psql -X -q -v ON_ERROR_STOP=1 --username "$ADMIN_USER" "$@"
}

# One role + database (the database named after the role unless a third argument names it). The password reaches
# psql through its environment (\getenv), so it never appears on a command line (visible in `ps`) nor needs shell
# quoting; format(%L) quotes it as an SQL literal.
create_role_and_database() {
    local name="$1" password="$2" database="${3:-$1}"
    ROLE_NAME="$name" ROLE_PASSWORD="$password" DATABASE_NAME="$database" psql_admin --dbname "$ADMIN_DB" <<'SQL'
\getenv role_name ROLE_NAME
\getenv role_password ROLE_PASSWORD
\getenv database_name DATABASE_NAME
SELECT format('CREATE ROLE %I LOGIN PASSWORD %L', :'role_name', :'role_password')
WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'role_name') \gexec
SELECT format('ALTER ROLE %I LOGIN PASSWORD %L', :'role_name', :'role_password') \gexec
SELECT format('CREATE DATABASE %I OWNER %I', :'database_name', :'role_name')
WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = :'database_name') \gexec
SELECT format('REVOKE CONNECT, TEMPORARY ON DATABASE %I FROM PUBLIC', :'database_name') \gexec
SQL
    echo "postgres-init: role '$name' and database '$database' ready"
}

# Read every secret before creating anything: a missing one fails the script with nothing half-made. (Plain
# assignments, so that `set -e` sees a failing read; inside an argument list it would not.)
airflow_password="$(read_secret airflow_db_password)"
mlflow_password="$(read_secret mlflow_db_password)"
churnops_password="$(read_secret churnops_db_password)"
api_password="$(read_secret churnops_api_db_password)"
grafana_password="$(read_secret grafana_db_password)"

create_role_and_database "$AIRFLOW_DB" "$airflow_password"
create_role_and_database "$MLFLOW_DB" "$mlflow_password"
create_role_and_database "$MLFLOW_DB" "$mlflow_password" "$MLFLOW_AUTH_DB"
create_role_and_database "$CHURNOPS_DB" "$churnops_password"

# Apply the platform schema as the churnops role (SET ROLE), so that it owns what it creates. Same protocol as
# churnops.db.migrate: one transaction, an advisory lock against concurrent runners, the bootstrap, then every
# NNNN_name.sql not yet in churnops.schema_migrations, each recorded with the file's SHA-256. A recorded
# migration whose file changed since is refused.
apply_migrations() {
    local script file base version name checksum
    script="BEGIN;
SET LOCAL ROLE \"$CHURNOPS_DB\";
SET LOCAL client_min_messages = warning;
SELECT pg_advisory_xact_lock(hashtext('churnops.schema_migrations')) \\gset lock_
\\i $CHURNOPS_MIGRATIONS_DIR/bootstrap.sql
"
    for file in "$CHURNOPS_MIGRATIONS_DIR"/[0-9][0-9][0-9][0-9]_*.sql; do
        [[ -e "$file" ]] || continue
        base="$(basename "$file" .sql)"
        version="${base%%_*}"
        name="${base#*_}"
        checksum="$(sha256sum "$file" | cut -d' ' -f1)"
        script+="
SELECT count(*) = 0 AS pending,
       coalesce(bool_or(checksum <> '$checksum'), false) AS changed
FROM churnops.schema_migrations WHERE version = '$version' \\gset
\\if :changed
\\echo 'postgres-init: migration $version was applied with a different checksum: never edit an applied migration'
SELECT 1/0 AS refused;
\\endif
\\if :pending
\\i $file
INSERT INTO churnops.schema_migrations (version, name, checksum) VALUES ('$version', '$name', '$checksum');
\\echo 'postgres-init: applied migration $version ($name)'
\\endif
"
    done
    script+="COMMIT;"
    printf '%s\n' "$script" | psql_admin --dbname "$CHURNOPS_DB"
}

apply_migrations
echo "postgres-init: churnops schema up to date in database '$CHURNOPS_DB'"

# A login role on the churnops database that may connect and use its schema, and nothing else until the grants
# given on standard input (psql statements reading :'role_name' and :'owner_name'). Re-running updates its password.
ensure_schema_login_role() {
    local name=$1 password=$2
    {
        cat <<'SQL'
\getenv role_name ROLE_NAME
\getenv role_password ROLE_PASSWORD
\getenv owner_name OWNER_NAME
SELECT format('CREATE ROLE %I LOGIN PASSWORD %L', :'role_name', :'role_password')
WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'role_name') \gexec
SELECT format('ALTER ROLE %I LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD %L', :'role_name', :'role_password') \gexec
SELECT format('GRANT CONNECT ON DATABASE %I TO %I', :'owner_name', :'role_name') \gexec
SELECT format('GRANT USAGE ON SCHEMA churnops TO %I', :'role_name') \gexec
SQL
        cat
    } | ROLE_NAME="$name" ROLE_PASSWORD="$password" OWNER_NAME="$CHURNOPS_DB" psql_admin --dbname "$CHURNOPS_DB"
}

# Grafana's dashboards only read: SELECT on the platform schema. The default privileges cover tables that later
# migrations create (they run as the churnops role, from here or from churnops.db.migrate).
ensure_schema_login_role "$GRAFANA_DB_ROLE" "$grafana_password" <<'SQL'
SELECT format('ALTER ROLE %I SET default_transaction_read_only = on', :'role_name') \gexec
SELECT format('GRANT SELECT ON ALL TABLES IN SCHEMA churnops TO %I', :'role_name') \gexec
SELECT format('ALTER DEFAULT PRIVILEGES FOR ROLE %I IN SCHEMA churnops GRANT SELECT ON TABLES TO %I',
              :'owner_name', :'role_name') \gexec
SQL
echo "postgres-init: read-only role '$GRAFANA_DB_ROLE' on database '$CHURNOPS_DB' ready"

# The API's role: it appends to the prediction log (churnops.prediction_log_batches, one row per flush of a worker's
# writer, serving/prediction_log.py; and churnops.prediction_log_requests, one row per request, which an API of the
# release before migration 0016 writes, so a rolling upgrade keeps logging), reads the online features
# (serving/online.py via churnops.online_store.lookup_many), and its pages (serving/pages/store.py) read the lists,
# their history and the monitoring records; it writes nothing else. No default privileges: a table a later
# migration adds stays closed to it until a grant here says otherwise. Identity columns need no sequence grant.
ensure_schema_login_role "$API_DB_ROLE" "$api_password" <<'SQL'
SELECT format('GRANT INSERT ON churnops.prediction_log_requests TO %I', :'role_name') \gexec
SELECT format('GRANT INSERT ON churnops.prediction_log_batches TO %I', :'role_name') \gexec
SELECT format('GRANT SELECT ON churnops.online_features TO %I', :'role_name') \gexec
SELECT format('GRANT SELECT ON churnops.%I TO %I', page_table, :'role_name')
FROM unnest(ARRAY['scores', 'score_runs', 'online_feature_sets', 'realized_performance', 'model_evaluations',
                  'promotion_decisions', 'drift_runs', 'drift_metrics', 'retrain_decisions',
                  'replay_timeline', 'realized_outcomes']) AS page_table \gexec
SQL
echo "postgres-init: API role '$API_DB_ROLE' on database '$CHURNOPS_DB' ready (insert prediction_log_batches and prediction_log_requests, read online_features and the pages' tables)"
