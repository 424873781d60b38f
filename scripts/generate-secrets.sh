#!/usr/bin/env bash
# Creates the secret files of the full deployment (docker-compose.yml, the native stack) from random bytes.
#
#   scripts/generate-secrets.sh [SECRETS_DIR]      # default: ./secrets beside this repository's compose file
#
# Never overwrites: a file that already exists is kept, so re-running only fills in what is missing (delete a
# file to rotate it; delete a password and its URL together). The connection URLs are built from the password
# files, and a URL that no longer carries its password is reported as an error instead of being left to fail later.
# Values are hex or URL-safe base64, so they need no quoting in URLs, JSON or shell.
#
# Files are readable by every user (0644) inside a directory only the owner can enter (0700): compose bind-mounts
# each file into containers whose processes run as other uids (postgres, grafana 472, churnops 50000), and the
# directory's mode is what keeps other users of this machine out.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
secrets_dir="${1:-$repo_root/secrets}"
postgres_host="${CHURNOPS_POSTGRES_HOST:-postgres}"
postgres_port="${CHURNOPS_POSTGRES_PORT:-5432}"

mkdir -p "$secrets_dir"
chmod 0700 "$secrets_dir"

created=()
kept=()

random_hex() { # $1 = number of random bytes
    head -c "$1" /dev/urandom | od -An -v -tx1 | tr -d ' \n'
}

random_urlsafe_base64() { # $1 = number of random bytes; Fernet keys are exactly this for 32 bytes
    head -c "$1" /dev/urandom | base64 -w0 | tr '+/' '-_'
}

write_secret() { # $1 = name, $2 = value; keeps an existing file
    local path="$secrets_dir/$1"
    if [[ -e "$path" ]]; then
        kept+=("$1")
        return
    fi
    # Written to a temporary file and renamed, so an interrupted run never leaves a half-written secret.
    printf '%s' "$2" >"$path.tmp.$$"
    chmod 0644 "$path.tmp.$$"
    mv -n "$path.tmp.$$" "$path"
    rm -f "$path.tmp.$$"
    created+=("$1")
}

read_secret() {
    local value
    value="$(<"$secrets_dir/$1")"
    if [[ -z "$value" ]]; then
        echo "generate-secrets: $secrets_dir/$1 is empty; delete it and run again" >&2
        exit 1
    fi
    printf '%s' "$value"
}

# Database role passwords (read by postgres-init when the data directory is first created). churnops_api is the
# API's least-privilege role (insert the prediction log, read the online features).
for name in postgres_password airflow_db_password mlflow_db_password churnops_db_password churnops_api_db_password \
    grafana_db_password; do
    write_secret "$name" "$(random_hex 24)"
done

# Connection URLs, one per role/database, built from the passwords above. The role/database names default to
# airflow, mlflow, mlflow_auth (MLflow's user store, owned by the mlflow role), churnops and churnops_api (the
# API's role on the churnops database); AIRFLOW_DB, MLFLOW_DB, MLFLOW_AUTH_DB, CHURNOPS_DB and API_DB_ROLE (the
# same variables postgres-init/ reads) rename them, so several stacks can share one server.
db_url() { # $1 = scheme, $2 = which password file's role, $3 = role name, $4 = database name (default: the role's)
    printf '%s://%s:%s@%s:%s/%s' "$1" "$3" "$(read_secret "$2_db_password")" "$postgres_host" "$postgres_port" \
        "${4:-$3}"
}
write_secret airflow_db_url "$(db_url postgresql+psycopg2 airflow "${AIRFLOW_DB:-airflow}")"
write_secret mlflow_db_url "$(db_url postgresql+psycopg2 mlflow "${MLFLOW_DB:-mlflow}")"
write_secret mlflow_auth_db_url \
    "$(db_url postgresql+psycopg2 mlflow "${MLFLOW_DB:-mlflow}" "${MLFLOW_AUTH_DB:-mlflow_auth}")"
write_secret churnops_database_url "$(db_url postgresql churnops "${CHURNOPS_DB:-churnops}")"
write_secret churnops_api_database_url \
    "$(db_url postgresql churnops_api "${API_DB_ROLE:-churnops_api}" "${CHURNOPS_DB:-churnops}")"
# Optuna's study storage (SQLAlchemy URL): the platform database's `optuna` schema (migration 0010), as the owner.
write_secret churnops_optuna_storage_url \
    "$(db_url postgresql+psycopg2 churnops "${CHURNOPS_DB:-churnops}")?options=-csearch_path%3Doptuna"

for pair in airflow_db_url:airflow mlflow_db_url:mlflow mlflow_auth_db_url:mlflow churnops_database_url:churnops \
    churnops_api_database_url:churnops_api churnops_optuna_storage_url:churnops; do
    url_name="${pair%%:*}" role="${pair##*:}"
    if [[ "$(read_secret "$url_name")" != *":$(read_secret "${role}_db_password")@"* ]]; then
        echo "generate-secrets: $url_name does not contain the password in ${role}_db_password;" \
            "delete both files and run again" >&2
        exit 1
    fi
done

# Airflow: Fernet key (encrypts connections/variables), JWT secret shared by every component, api secret key,
# admin password of the SimpleAuthManager user `admin`.
write_secret airflow_fernet_key "$(random_urlsafe_base64 32)"
write_secret airflow_jwt_secret "$(random_hex 32)"
write_secret airflow_api_secret_key "$(random_hex 32)"
write_secret airflow_admin_password "$(random_hex 16)"

write_secret grafana_admin_password "$(random_hex 16)"

# MLflow's basic-auth app: the administrator (people in the UI, and the platform's writers: Airflow tasks, the CLI),
# the read-only account of the API and the exporter, and the Flask secret key its CSRF protection needs.
write_secret mlflow_admin_password "$(random_hex 24)"
write_secret mlflow_reader_password "$(random_hex 24)"
write_secret mlflow_flask_secret_key "$(random_hex 32)"

# The churnops API: X-API-Key of callers and the admin token of POST /admin/reload.
write_secret churnops_serving__api_key "$(random_hex 24)"
write_secret churnops_serving__admin_token "$(random_hex 24)"

echo "generate-secrets: $secrets_dir: created ${#created[@]} (${created[*]:-none}), kept ${#kept[@]} existing"
