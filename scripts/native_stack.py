"""The full deployment without Docker: the same services as docker-compose.yml, started natively on one machine.

    python scripts/native_stack.py up       # start everything, wait until each service is healthy
    python scripts/native_stack.py status   # what is running
    python scripts/native_stack.py down     # stop everything (reverse order), keep data
    python scripts/native_stack.py env      # print the environment a shell needs to talk to the stack

Services (compose name → native process): postgres → the machine's own PostgreSQL (roles, databases and schema
from postgres-init/), spark-master / spark-worker → Spark standalone via Spark's own `spark-daemon.sh` (shipped in
the pyspark package), mlflow → `mlflow server` on PostgreSQL, airflow-apiserver / -scheduler / -dag-processor /
-triggerer → Airflow 3 on PostgreSQL with the LocalExecutor, api → uvicorn with 2 workers, monitoring-exporter →
`python -m monitoring.exporter`, prometheus → Debian's Prometheus with monitoring/prometheus.native.yml. As in
compose, the feature job is submitted to the Spark master and every credential comes from secret files
(generated once by scripts/generate-secrets.sh into the stack's own secrets folder).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
PYSPARK_HOME = Path(__import__("pyspark").__file__).parent

PORTS = {
    "spark-master": 7077,
    "spark-master-ui": 8081,
    "spark-worker-ui": 8082,
    "mlflow": 5000,
    "airflow-apiserver": 8080,
    "airflow-scheduler-health": 8974,
    "api": 8000,
    "monitoring-exporter": 9108,
    "prometheus": 9090,
}


# Caller settings that do pass through: the stack test's database suffix and its faster training/reload.
PASSED_THROUGH = (
    "CHURNOPS_STACK_DB_SUFFIX",
    "CHURNOPS_TRAINING__N_TRIALS",
    "CHURNOPS_SERVING__RELOAD_INTERVAL_SECONDS",
)


@dataclass(frozen=True)
class StackPaths:
    root: Path

    @property
    def home(self) -> Path:  # CHURNOPS_HOME of every platform process
        return self.root / "home"

    @property
    def secrets(self) -> Path:
        return self.root / "secrets"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def pids(self) -> Path:
        return self.root / "pids"

    @property
    def airflow_home(self) -> Path:
        return self.root / "airflow"

    def secret(self, name: str) -> str:
        return (self.secrets / name).read_text().strip()


def default_root() -> Path:
    return Path(os.environ.get("CHURNOPS_STACK_DIR", REPO / ".churnops" / "stack"))


def stack_environment(paths: StackPaths) -> dict[str, str]:
    """The environment every platform process of the stack shares (the native twin of compose's x-common env)."""
    secret_cmd = f"cat {paths.secrets}"
    # Inherit the caller's environment but none of its Airflow or churnops settings: the stack's own come below,
    # and a stray AIRFLOW__DATABASE__SQL_ALCHEMY_CONN would silently win over the *_CMD secret.
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW__", "AIRFLOW_CONN_", "CHURNOPS_"))}
    inherited.update({k: v for k, v in os.environ.items() if k in PASSED_THROUGH})
    return {
        **inherited,
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "CHURNOPS_HOME": str(paths.home),
        "CHURNOPS_SECRETS_DIR": str(paths.secrets),
        "CHURNOPS_MLFLOW_TRACKING_URI": f"http://127.0.0.1:{PORTS['mlflow']}",
        "CHURNOPS_SPARK__MASTER": f"spark://127.0.0.1:{PORTS['spark-master']}",
        "CHURNOPS_SERVING__RELOAD_INTERVAL_SECONDS": os.environ.get("CHURNOPS_SERVING__RELOAD_INTERVAL_SECONDS", "5"),
        "PYSPARK_PYTHON": sys.executable,
        "PYSPARK_DRIVER_PYTHON": sys.executable,
        "SPARK_HOME": str(PYSPARK_HOME),
        "AIRFLOW_HOME": str(paths.airflow_home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "airflow" / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": "4",
        # As in production: new DAGs wait paused until someone (the UI, the REST API) switches them on.
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_CMD": f"{secret_cmd}/airflow_db_url",
        "AIRFLOW__CORE__FERNET_KEY_CMD": f"{secret_cmd}/airflow_fernet_key",
        "AIRFLOW__API_AUTH__JWT_SECRET_CMD": f"{secret_cmd}/airflow_jwt_secret",
        "AIRFLOW__API__SECRET_KEY_CMD": f"{secret_cmd}/airflow_api_secret_key",
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{PORTS['airflow-apiserver']}",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{PORTS['airflow-apiserver']}/execution/",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(paths.airflow_home / "passwords.json"),
        "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "True",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "10",
        "AIRFLOW_CONN_SPARK_DEFAULT": json.dumps(
            {"conn_type": "spark", "host": "spark://127.0.0.1", "port": PORTS["spark-master"]}
        ),
        "OMP_NUM_THREADS": "1",
    }


def _http_ok(url: str, headers: dict[str, str] | None = None) -> bool:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=3) as response:
            return 200 <= response.status < 300
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _spark_worker_alive() -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{PORTS['spark-master-ui']}/json/", timeout=3) as response:
            return any(w.get("state") == "ALIVE" for w in json.load(response).get("workers", []))
    except (urllib.error.URLError, OSError, ValueError):
        return False


@dataclass
class Service:
    name: str
    command: list[str]
    healthy: Callable[[], bool]
    timeout_s: float = 120
    daemonizes: bool = False  # started by a script that forks (Spark's spark-daemon.sh) and stopped by `stop`
    stop: list[str] = field(default_factory=list)
    extra_env: dict[str, str] = field(default_factory=dict)
    # False for services with no port of their own (their health check cannot tell ours from a stranger).
    listens: bool = True


def services(paths: StackPaths) -> list[Service]:
    daemon = str(PYSPARK_HOME / "sbin" / "spark-daemon.sh")
    master_class, worker_class = "org.apache.spark.deploy.master.Master", "org.apache.spark.deploy.worker.Worker"
    api_port = PORTS["api"]
    return [
        Service(
            "spark-master",
            [
                daemon,
                "start",
                master_class,
                "1",
                "--host",
                "127.0.0.1",
                "--port",
                str(PORTS["spark-master"]),
                "--webui-port",
                str(PORTS["spark-master-ui"]),
            ],
            lambda: _http_ok(f"http://127.0.0.1:{PORTS['spark-master-ui']}/json/"),
            daemonizes=True,
            stop=[daemon, "stop", master_class, "1"],
        ),
        Service(
            "spark-worker",
            [
                daemon,
                "start",
                worker_class,
                "1",
                f"spark://127.0.0.1:{PORTS['spark-master']}",
                "--cores",
                "2",
                "--memory",
                "4g",
                "--webui-port",
                str(PORTS["spark-worker-ui"]),
            ],
            _spark_worker_alive,
            daemonizes=True,
            stop=[daemon, "stop", worker_class, "1"],
        ),
        Service(
            "mlflow",
            [
                "sh",
                "-c",
                # The URI (it holds the password) goes through the environment, never onto a command line `ps` shows.
                f"MLFLOW_BACKEND_STORE_URI=$(cat {paths.secrets}/mlflow_db_url) exec mlflow server "
                f"--artifacts-destination {paths.root / 'mlflow-artifacts'} --host 127.0.0.1 --port {PORTS['mlflow']} "
                "--workers 1 --allowed-hosts 'localhost:*,127.0.0.1:*'",
            ],
            lambda: _http_ok(f"http://127.0.0.1:{PORTS['mlflow']}/api/2.0/mlflow/experiments/search?max_results=1"),
        ),
        Service(
            "airflow-apiserver",
            ["airflow", "api-server", "--port", str(PORTS["airflow-apiserver"])],
            lambda: _http_ok(f"http://127.0.0.1:{PORTS['airflow-apiserver']}/api/v2/monitor/health"),
        ),
        Service(
            "airflow-scheduler",
            ["airflow", "scheduler"],
            lambda: _http_ok(f"http://127.0.0.1:{PORTS['airflow-scheduler-health']}/health"),
        ),
        Service("airflow-dag-processor", ["airflow", "dag-processor"], lambda: True, listens=False),
        Service("airflow-triggerer", ["airflow", "triggerer"], lambda: True, listens=False),
        Service(
            "api",
            [
                sys.executable,
                "-m",
                "churnops.cli",
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(api_port),
                "--workers",
                "2",
            ],
            lambda: _http_ok(f"http://127.0.0.1:{api_port}/health"),
            # Only the API runs several workers; the exporter must keep prometheus-client's normal registry.
            extra_env={"PROMETHEUS_MULTIPROC_DIR": str(paths.root / "api-metrics")},
        ),
        Service(
            "monitoring-exporter",
            [sys.executable, "-m", "monitoring.exporter"],
            lambda: _http_ok(f"http://127.0.0.1:{PORTS['monitoring-exporter']}/metrics"),
        ),
        Service(
            "prometheus",
            [
                _prometheus_binary(),
                f"--config.file={REPO / 'monitoring' / 'prometheus.native.yml'}",
                f"--storage.tsdb.path={paths.root / 'prometheus-data'}",
                f"--web.listen-address=127.0.0.1:{PORTS['prometheus']}",
            ],
            lambda: _http_ok(f"http://127.0.0.1:{PORTS['prometheus']}/-/ready"),
        ),
    ]


def _prometheus_binary() -> str:
    return shutil.which("prometheus") or "/usr/bin/prometheus"


def _run(command: list[str], env: dict[str, str], what: str) -> None:
    completed = subprocess.run(command, env=env, capture_output=True, text=True)
    if completed.returncode != 0:
        raise SystemExit(f"native stack: {what} failed ({shlex.join(command)}):\n{completed.stdout}{completed.stderr}")


def database_names() -> dict[str, str]:
    """Role = database names on the machine's server (compose's names by default); CHURNOPS_STACK_DB_SUFFIX keeps
    a second stack, such as the stack test's, apart from a developer's."""
    suffix = os.environ.get("CHURNOPS_STACK_DB_SUFFIX", "")
    return {
        "AIRFLOW_DB": f"airflow{suffix}",
        "MLFLOW_DB": f"mlflow{suffix}",
        "CHURNOPS_DB": f"churnops{suffix}",
        "GRAFANA_DB_ROLE": f"grafana_reader{suffix}",
    }


def prepare(paths: StackPaths, env: dict[str, str]) -> None:
    """Secrets, PostgreSQL roles/databases/schema (postgres-init/), Airflow metadata and its admin user."""
    for folder in (paths.root, paths.home, paths.logs, paths.pids, paths.airflow_home):
        folder.mkdir(parents=True, exist_ok=True)
    names = database_names()
    _run(
        ["bash", str(REPO / "scripts" / "generate-secrets.sh"), str(paths.secrets)],
        {**env, **names, "CHURNOPS_POSTGRES_HOST": "127.0.0.1", "CHURNOPS_POSTGRES_PORT": "5432"},
        "generating secrets",
    )
    _run(
        ["bash", str(REPO / "postgres-init" / "10-churnops-databases.sh")],
        {
            **env,
            **names,
            "SECRETS_DIR": str(paths.secrets),
            "CHURNOPS_MIGRATIONS_DIR": str(REPO / "churnops" / "migrations"),
            "PGHOST": "127.0.0.1",
            "PGPORT": "5432",
            "POSTGRES_USER": "postgres",
            "POSTGRES_DB": "postgres",
        },
        "initialising PostgreSQL from postgres-init/",
    )
    (paths.airflow_home / "passwords.json").write_text(json.dumps({"admin": paths.secret("airflow_admin_password")}))
    _run(["airflow", "db", "migrate"], env, "airflow db migrate")


def _pid_file(paths: StackPaths, name: str) -> Path:
    return paths.pids / f"{name}.pid"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _running_pid(paths: StackPaths, name: str) -> int | None:
    pid_file = _pid_file(paths, name)
    if not pid_file.exists():
        return None
    pid = int(pid_file.read_text())
    return pid if _alive(pid) else None


def up(paths: StackPaths) -> None:
    env = stack_environment(paths)
    env["SPARK_PID_DIR"], env["SPARK_LOG_DIR"] = str(paths.pids), str(paths.logs)
    prepare(paths, env)
    for service in services(paths):
        if service.healthy() and (service.listens or _running_pid(paths, service.name)):
            if service.daemonizes or _running_pid(paths, service.name):
                print(f"{service.name:<24} already running")  # noqa: T201
                continue
            # Something else answers on this service's port (another stack, a stray process): starting ours would
            # fail to bind while the health check passed against the stranger.
            raise SystemExit(
                f"native stack: {service.name}'s port is already answered by a process this stack did not start; "
                f"stop it (e.g. `scripts/native_stack.py down --dir <its folder>`) and run `up` again"
            )
        log = (paths.logs / f"{service.name}.log").open("ab")
        if service.daemonizes:
            _run(service.command, env, f"starting {service.name}")
        else:
            process = subprocess.Popen(
                service.command,
                env={**env, **service.extra_env},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=REPO,
            )
            _pid_file(paths, service.name).write_text(str(process.pid))
        started = time.monotonic()
        while not service.healthy():
            if not service.daemonizes and not _running_pid(paths, service.name):
                raise SystemExit(f"native stack: {service.name} exited; see {paths.logs / service.name}.log")
            if time.monotonic() - started > service.timeout_s:
                raise SystemExit(
                    f"native stack: {service.name} not healthy after {service.timeout_s:.0f} s; see {paths.logs}"
                )
            time.sleep(1)
        print(f"{service.name:<24} healthy after {time.monotonic() - started:5.1f} s")  # noqa: T201
    print(  # noqa: T201
        f"Airflow http://127.0.0.1:{PORTS['airflow-apiserver']} (admin / {paths.secrets}/airflow_admin_password), "
        f"MLflow http://127.0.0.1:{PORTS['mlflow']}, API http://127.0.0.1:{PORTS['api']}, "
        f"Prometheus http://127.0.0.1:{PORTS['prometheus']}, Spark http://127.0.0.1:{PORTS['spark-master-ui']}"
    )


def down(paths: StackPaths) -> None:
    env = stack_environment(paths)
    env["SPARK_PID_DIR"], env["SPARK_LOG_DIR"] = str(paths.pids), str(paths.logs)
    for service in reversed(services(paths)):
        if service.daemonizes:
            subprocess.run(service.stop, env=env, capture_output=True)
            continue
        pid = _running_pid(paths, service.name)
        if pid is not None:
            os.killpg(pid, signal.SIGTERM)
            deadline = time.monotonic() + 20
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.3)
            if _alive(pid):
                os.killpg(pid, signal.SIGKILL)
        _pid_file(paths, service.name).unlink(missing_ok=True)
        print(f"{service.name:<24} stopped")  # noqa: T201


def status(paths: StackPaths) -> int:
    all_healthy = True
    for service in services(paths):
        healthy = service.healthy()
        all_healthy &= healthy
        print(f"{service.name:<24} {'healthy' if healthy else 'down'}")  # noqa: T201
    return 0 if all_healthy else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["up", "down", "status", "env"])
    parser.add_argument("--dir", type=Path, default=None, help="stack folder (default .churnops/stack)")
    args = parser.parse_args()
    paths = StackPaths((args.dir or default_root()).resolve())
    if args.action == "up":
        up(paths)
    elif args.action == "down":
        down(paths)
    elif args.action == "env":
        env = stack_environment(paths)
        for key in sorted(k for k in env if k.startswith(("CHURNOPS_", "AIRFLOW", "PYSPARK", "SPARK_HOME"))):
            print(f"export {key}={shlex.quote(env[key])}")  # noqa: T201
    else:
        return status(paths)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
