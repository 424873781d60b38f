"""scripts/generate-secrets.sh and how the platform's Settings read the secret files it writes."""

from __future__ import annotations

import stat
import subprocess
from pathlib import Path

import pytest

from churnops.config import Settings
from tests.deploy.support import REPO, SECRETS_DIR, compose

SCRIPT = REPO / "scripts" / "generate-secrets.sh"


def generate(secrets_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(SCRIPT), str(secrets_dir)], capture_output=True, text=True, timeout=60)


@pytest.fixture
def generated(tmp_path: Path) -> Path:
    secrets_dir = tmp_path / "secrets"
    result = generate(secrets_dir)
    assert result.returncode == 0, result.stderr
    return secrets_dir


def test_generates_every_secret_the_compose_file_mounts(generated: Path):
    for name, definition in compose()["secrets"].items():
        path = generated / Path(definition["file"]).name
        assert path.is_file() and path.read_text().strip(), f"{name} was not generated"


def test_generates_nothing_that_has_no_committed_example(generated: Path):
    examples = {path.name.removesuffix(".example") for path in SECRETS_DIR.glob("*.example")}
    assert {path.name for path in generated.iterdir()} == examples


def test_secret_files_are_readable_by_container_users_inside_a_private_directory(generated: Path):
    assert stat.S_IMODE(generated.stat().st_mode) == 0o700
    assert {stat.S_IMODE(path.stat().st_mode) for path in generated.iterdir()} == {0o644}


def test_values_are_random_and_differ_between_secrets(generated: Path, tmp_path: Path):
    other = tmp_path / "other"
    assert generate(other).returncode == 0
    values = [path.read_text() for path in generated.iterdir() if not path.name.endswith("url")]
    assert len(set(values)) == len(values)
    assert all(len(value) >= 32 for value in values)
    assert (generated / "postgres_password").read_text() != (other / "postgres_password").read_text()


def test_never_overwrites_an_existing_secret(generated: Path):
    (generated / "grafana_admin_password").write_text("chosen-by-the-operator")
    before = {path.name: path.read_text() for path in generated.iterdir()}
    result = generate(generated)
    assert result.returncode == 0, result.stderr
    assert {path.name: path.read_text() for path in generated.iterdir()} == before


def test_fills_in_only_the_missing_secrets(generated: Path):
    (generated / "airflow_jwt_secret").unlink()
    kept = (generated / "grafana_admin_password").read_text()
    assert generate(generated).returncode == 0
    assert (generated / "airflow_jwt_secret").read_text() and (generated / "grafana_admin_password").read_text() == kept


def test_database_urls_carry_the_role_passwords(generated: Path):
    for url_file, role, database in (
        ("airflow_db_url", "airflow", "airflow"),
        ("mlflow_db_url", "mlflow", "mlflow"),
        ("mlflow_auth_db_url", "mlflow", "mlflow_auth"),
        ("churnops_database_url", "churnops", "churnops"),
        ("churnops_api_database_url", "churnops_api", "churnops"),
        ("churnops_optuna_storage_url", "churnops", "churnops?options=-csearch_path%3Doptuna"),
    ):
        password = (generated / f"{role}_db_password").read_text()
        assert (generated / url_file).read_text().endswith(f"://{role}:{password}@postgres:5432/{database}")


def test_refuses_a_url_that_lost_its_password(generated: Path):
    (generated / "mlflow_db_password").unlink()
    result = generate(generated)
    assert result.returncode != 0 and "mlflow_db_url" in result.stderr


def test_airflow_fernet_key_is_a_valid_fernet_key(generated: Path):
    from cryptography.fernet import Fernet

    Fernet((generated / "airflow_fernet_key").read_text().encode())


def test_settings_read_the_platform_database_url_from_the_secrets_dir(generated: Path, monkeypatch):
    monkeypatch.delenv("CHURNOPS_DATABASE_URL", raising=False)
    settings = Settings(_secrets_dir=generated)
    assert settings.database_url.get_secret_value() == (generated / "churnops_database_url").read_text()


def test_settings_read_the_api_credentials_from_the_secrets_dir(generated: Path, monkeypatch):
    """The files compose mounts for the API must reach Settings.serving; otherwise auth is silently off.

    pydantic-settings' default secrets source reads top-level fields only: `churnops_serving__api_key` is picked
    up once Settings adds `NestedSecretsSettingsSource` (see secrets/README.md).
    """
    for variable in ("CHURNOPS_SERVING__API_KEY", "CHURNOPS_SERVING__ADMIN_TOKEN"):
        monkeypatch.delenv(variable, raising=False)
    serving = Settings(_secrets_dir=generated).serving
    assert serving.api_key is not None, "churnops_serving__api_key was not read: auth would be off in compose"
    assert serving.api_key.get_secret_value() == (generated / "churnops_serving__api_key").read_text()
    assert serving.admin_token.get_secret_value() == (generated / "churnops_serving__admin_token").read_text()


def test_settings_read_the_mlflow_credentials_from_the_secrets_dir(generated: Path, monkeypatch):
    """Each container mounts its MLflow password as `churnops_mlflow_tracking_password`; MLflow's client gets it."""
    for variable in ("CHURNOPS_MLFLOW_TRACKING_USERNAME", "CHURNOPS_MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.delenv(variable, raising=False)
    (generated / "churnops_mlflow_tracking_password").symlink_to(generated / "mlflow_reader_password")
    settings = Settings(_secrets_dir=generated, mlflow_tracking_username="churnops-reader")
    assert settings.mlflow_client_environment() == {
        "MLFLOW_TRACKING_USERNAME": "churnops-reader",
        "MLFLOW_TRACKING_PASSWORD": (generated / "mlflow_reader_password").read_text(),
    }


def test_an_mlflow_username_without_its_password_is_refused_with_the_fix(tmp_path: Path, monkeypatch):
    monkeypatch.delenv("CHURNOPS_MLFLOW_TRACKING_PASSWORD", raising=False)
    with pytest.raises(ValueError, match="churnops_mlflow_tracking_password"):
        Settings(_secrets_dir=tmp_path, mlflow_tracking_username="admin")
