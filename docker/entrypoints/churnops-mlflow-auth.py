"""MLflow's basic-auth app, prepared before `mlflow server --app-name basic-auth` starts (compose and native stack).

    python churnops-mlflow-auth.py SECRETS_DIR CONFIG_PATH

Reads three secret files: `mlflow_auth_db_url` (MLflow's user store, a database of its own), `mlflow_admin_password`
and `mlflow_reader_password`. Writes the auth app's configuration to CONFIG_PATH (mode 0600 in a 0700 folder: it
holds the user store's URL, password included), which the server finds through MLFLOW_AUTH_CONFIG_PATH. Then makes
the user store hold exactly these two accounts' current passwords:

- the administrator (`MLFLOW_ADMIN_USERNAME`, default `admin`): people in the UI and the platform's writers (Airflow
  tasks, the CLI), which create experiments, register models and move the `champion` alias;
- the reader (`MLFLOW_READER_USERNAME`, default `churnops-reader`), not an administrator: the API and the exporter,
  which only read. With `default_permission = READ` it reads every experiment and model, and may not register a
  version of an existing model or move its aliases.

An anonymous request gets 401 from every route except the health and static ones. The secret files are the truth:
a changed password is set again at the next start (as postgres-init/ does for the database roles). MLflow's own
bootstrap then finds the administrator already there and needs no password of its own.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

DEFAULT_PERMISSION = "READ"


def read_secret(secrets_dir: Path, name: str) -> str:
    path = secrets_dir / name
    if not path.is_file():
        sys.exit(f"mlflow auth: secret file {path} is missing; run scripts/generate-secrets.sh")
    value = path.read_text().strip()
    if not value:
        sys.exit(f"mlflow auth: secret file {path} is empty; delete it and run scripts/generate-secrets.sh")
    return value


def write_config(config_path: Path, database_uri: str, admin_username: str) -> None:
    """The auth app's ini, private to this user. `%` is configparser's interpolation sign: doubled to stay literal."""
    config_path.parent.mkdir(parents=True, exist_ok=True)
    config_path.parent.chmod(0o700)
    text = (
        "[mlflow]\n"
        f"default_permission = {DEFAULT_PERMISSION}\n"
        f"database_uri = {database_uri.replace('%', '%%')}\n"
        f"admin_username = {admin_username}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        "grant_default_workspace_access = false\n"
    )
    staging = config_path.with_name(config_path.name + ".tmp")
    staging.unlink(missing_ok=True)
    descriptor = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(text)
    staging.replace(config_path)


def ensure_user(store: object, username: str, password: str, *, is_admin: bool) -> str:
    """Create the account, or bring its password and admin flag in line with the secrets. Returns what it did."""
    if not store.has_user(username, use_primary=True):
        store.create_user(username, password, is_admin=is_admin)
        return "created"
    changed = []
    if not store.authenticate_user(username, password, use_primary=True):
        store.update_user(username, password=password)
        changed.append("password")
    if store.get_user(username).is_admin != is_admin:
        store.update_user(username, is_admin=is_admin)
        changed.append("admin flag")
    return f"updated ({', '.join(changed)})" if changed else "up to date"


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        sys.exit(f"usage: {argv[0]} SECRETS_DIR CONFIG_PATH")
    secrets_dir, config_path = Path(argv[1]), Path(argv[2])
    database_uri = read_secret(secrets_dir, "mlflow_auth_db_url")
    admin_password = read_secret(secrets_dir, "mlflow_admin_password")
    reader_password = read_secret(secrets_dir, "mlflow_reader_password")
    admin_username = os.environ.get("MLFLOW_ADMIN_USERNAME", "admin")
    reader_username = os.environ.get("MLFLOW_READER_USERNAME", "churnops-reader")
    if admin_username == reader_username:
        sys.exit("mlflow auth: MLFLOW_ADMIN_USERNAME and MLFLOW_READER_USERNAME must differ")
    write_config(config_path, database_uri, admin_username)
    # mlflow.server.auth reads its configuration when imported: point it at the file just written first.
    os.environ["MLFLOW_AUTH_CONFIG_PATH"] = str(config_path)
    from mlflow.server.auth.sqlalchemy_store import SqlAlchemyStore

    store = SqlAlchemyStore()
    store.init_db(database_uri)  # creates or migrates the user store's tables
    for username, password, is_admin in (
        (admin_username, admin_password, True),
        (reader_username, reader_password, False),
    ):
        print(f"mlflow auth: user {username!r} {ensure_user(store, username, password, is_admin=is_admin)}")  # noqa: T201
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
