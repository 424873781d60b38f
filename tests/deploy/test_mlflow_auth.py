"""The registry no stranger can move: the full deployment's MLflow server, started by its real entrypoint
(docker/entrypoints/churnops-mlflow-entrypoint.sh, the one compose and the native stack run) with MLflow's basic-auth
app, on a free port, with SQLite stores and secrets from scripts/generate-secrets.sh. Clients are platform processes
(tests/deploy/mlflow_probe.py): Settings from their secrets folder, churnops.registry.configure_mlflow, MLflow."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.deploy.support import REPO, native_stack

ENTRYPOINTS = REPO / "docker" / "entrypoints"
pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class MlflowServer:
    url: str
    root: Path
    stack: object  # scripts/native_stack.py's StackPaths of this server's secrets

    def client_environment(self, view: str | None) -> dict[str, str]:
        """A platform process's environment: the secrets folder of `view` (None = a stranger, no credentials)."""
        inherited = {k: v for k, v in os.environ.items() if not k.startswith(("CHURNOPS_", "MLFLOW_"))}
        env = {**inherited, "CHURNOPS_MLFLOW_TRACKING_URI": self.url, "OMP_NUM_THREADS": "1"}
        stack = native_stack()
        if view is not None:
            env["CHURNOPS_SECRETS_DIR"] = str(self.stack.secret_view(view))
            env["CHURNOPS_MLFLOW_TRACKING_USERNAME"] = (
                stack.MLFLOW_ADMIN_USERNAME if view == "platform" else stack.MLFLOW_READER_USERNAME
            )
        return env


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _generate_secrets(stack: object, root: Path) -> None:
    generated = subprocess.run(
        ["bash", str(REPO / "scripts" / "generate-secrets.sh"), str(stack.secrets)], capture_output=True, text=True
    )
    assert generated.returncode == 0, generated.stderr
    # SQLite stores instead of PostgreSQL: the server, not the database, is under test here.
    (stack.secrets / "mlflow_db_url").write_text(f"sqlite:///{root / 'mlflow.db'}")
    (stack.secrets / "mlflow_auth_db_url").write_text(f"sqlite:///{root / 'auth.db'}")
    native_stack().make_secret_views(stack)


def _wait_until_the_reader_is_answered(server: MlflowServer, process: subprocess.Popen, log: Path) -> None:
    """Up to ten minutes (a loaded two-core machine took two to start MLflow): until an authenticated call works."""
    password = (server.stack.secrets / "mlflow_reader_password").read_text()
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        assert process.poll() is None, f"the MLflow entrypoint exited:\n{log.read_text()[-4000:]}"
        try:
            answer = httpx.get(
                f"{server.url}/api/2.0/mlflow/experiments/search",
                params={"max_results": 1},
                auth=(native_stack().MLFLOW_READER_USERNAME, password),
                timeout=10,
            )
            if answer.status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(2)
    raise AssertionError(f"MLflow did not answer within 10 minutes:\n{log.read_text()[-4000:]}")


@pytest.fixture(scope="module")
def mlflow_server() -> Iterator[MlflowServer]:
    root = Path(tempfile.mkdtemp(prefix="churnops-mlflow-auth-"))
    stack = native_stack().StackPaths(root)
    _generate_secrets(stack, root)
    port = _free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("CHURNOPS_", "MLFLOW_"))},
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "CHURNOPS_SECRETS_DIR": str(stack.secrets),
        "MLFLOW_HOST": "127.0.0.1",
        "MLFLOW_PORT": str(port),
        "MLFLOW_WORKERS": "1",
        "MLFLOW_ARTIFACTS_DESTINATION": str(root / "artifacts"),
        "MLFLOW_AUTH_CONFIG_DIR": str(root / "auth"),
    }
    log = root / "mlflow.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [str(ENTRYPOINTS / "churnops-mlflow-entrypoint.sh")],
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = MlflowServer(f"http://127.0.0.1:{port}", root, stack)
    try:
        _wait_until_the_reader_is_answered(server, process, log)
        yield server
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
        shutil.rmtree(root, ignore_errors=True)


def _probe(server: MlflowServer, view: str | None, action: str, model_name: str) -> dict[str, str]:
    completed = subprocess.run(
        [sys.executable, "-m", "tests.deploy.mlflow_probe", action, model_name],
        env=server.client_environment(view),
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=600,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    return json.loads(completed.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def champion(mlflow_server: MlflowServer) -> str:
    """A model registered and promoted by the platform's writer (a DAG task's settings: the administrator)."""
    name = f"churnops-probe-{secrets.token_hex(3)}"
    assert _probe(mlflow_server, "platform", "promote", name)["promote"] == "ok"
    return name


def test_a_stranger_can_neither_read_nor_move_champion_nor_register_anything(mlflow_server, champion) -> None:
    assert _probe(mlflow_server, None, "try", champion) == {
        "read champion": "401",
        "move champion": "401",
        "delete champion": "401",
        "register a version": "401",
        "register a model": "401",
    }


def test_the_apis_read_only_account_loads_champion_and_cannot_move_it(mlflow_server, champion) -> None:
    outcomes = _probe(mlflow_server, "api", "try", champion)
    assert {action: outcomes[action] for action in outcomes if action != "register a model"} == {
        "read champion": "ok",
        "move champion": "403",
        "delete champion": "403",
        "register a version": "403",
    }


def test_the_platforms_writer_may_do_everything(mlflow_server) -> None:
    name = f"churnops-probe-{secrets.token_hex(3)}"  # its own model: deleting its champion must not touch others'
    outcomes = _probe(mlflow_server, "platform", "promote-and-try", name)
    outcomes.pop("version")
    assert outcomes == dict.fromkeys(outcomes, "ok") and len(outcomes) == 6


def test_the_ui_and_the_sign_up_page_refuse_anonymous_callers(mlflow_server) -> None:
    for path in ("/api/2.0/mlflow/registered-models/search", "/signup", "/api/2.0/mlflow/users/create"):
        answer = httpx.get(f"{mlflow_server.url}{path}", timeout=30)
        assert answer.status_code == 401, (path, answer.status_code)


def test_the_entrypoint_refuses_to_start_without_its_secrets(tmp_path: Path) -> None:
    env = {**os.environ, "CHURNOPS_SECRETS_DIR": str(tmp_path)}
    completed = subprocess.run(
        [str(ENTRYPOINTS / "churnops-mlflow-entrypoint.sh")], env=env, capture_output=True, text=True, timeout=60
    )
    assert completed.returncode != 0
    assert f"{tmp_path}/mlflow_db_url is missing or empty; run scripts/generate-secrets.sh" in completed.stderr


def test_the_accounts_follow_their_secret_files(tmp_path: Path) -> None:
    """A rotated password file is the new password at the next start; the reader never becomes an administrator."""
    (tmp_path / "mlflow_auth_db_url").write_text(f"sqlite:///{tmp_path / 'auth.db'}")
    (tmp_path / "mlflow_admin_password").write_text("first-admin-password")
    (tmp_path / "mlflow_reader_password").write_text("first-reader-password")
    config = tmp_path / "auth" / "basic_auth.ini"

    def prepare() -> str:
        completed = subprocess.run(
            [sys.executable, str(ENTRYPOINTS / "churnops-mlflow-auth.py"), str(tmp_path), str(config)],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert completed.returncode == 0, completed.stderr[-3000:]
        return completed.stdout

    assert "user 'admin' created" in prepare() and oct(config.stat().st_mode & 0o777) == "0o600"
    (tmp_path / "mlflow_reader_password").write_text("second-reader-password")
    second = prepare()
    assert "user 'admin' up to date" in second and "user 'churnops-reader' updated (password)" in second
    check = subprocess.run(
        [
            sys.executable,
            "-c",
            "import os, sys; os.environ['MLFLOW_AUTH_CONFIG_PATH'] = sys.argv[1]\n"
            "from mlflow.server.auth.sqlalchemy_store import SqlAlchemyStore\n"
            "store = SqlAlchemyStore(); store.init_db(sys.argv[2])\n"
            "print(store.authenticate_user('churnops-reader', 'second-reader-password'),"
            " store.authenticate_user('churnops-reader', 'first-reader-password'),"
            " store.get_user('churnops-reader').is_admin, store.get_user('admin').is_admin)",
            str(config),
            f"sqlite:///{tmp_path / 'auth.db'}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert check.stdout.split()[-4:] == ["True", "False", "False", "True"], check.stderr[-2000:]
