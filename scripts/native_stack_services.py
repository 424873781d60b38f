"""What the native stack runs: its folders, ports, environment, the credentials each service sees, and the service
commands (the native twins of docker-compose.yml's services). scripts/native_stack.py starts and stops them.

Ports are the compose defaults unless the stack was brought up with `--free-ports`, which picks free ones at start
and records them in the stack folder (`ports.json`), so `status`, `env`, `down` and a test find them again.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from native_stack_health import http_ok, mlflow_answers, spark_worker_alive  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
PYSPARK_HOME = Path(__import__("pyspark").__file__).parent
ENTRYPOINTS = REPO / "docker" / "entrypoints"

# The compose defaults. Every port any service of the stack listens on is here, so that `--free-ports` moves all.
DEFAULT_PORTS = {
    "spark-master": 7077,
    "spark-master-ui": 8081,
    "spark-worker-ui": 8082,
    "mlflow": 5000,
    "airflow-apiserver": 8080,
    "airflow-scheduler-health": 8974,
    "airflow-worker-logs": 8793,
    "airflow-trigger-logs": 8794,
    "api": 8000,
    "monitoring-exporter": 9108,
    "prometheus": 9090,
}
PORTS = DEFAULT_PORTS  # the name older callers use

# The CeleryExecutor's broker: the machine's Redis (compose runs its own `redis` service). Every key a stack writes
# carries its own prefix (CHURNOPS_STACK_DB_SUFFIX, as for its databases), so a test stack's queues and a
# developer's never meet on the one server.
REDIS_BROKER_URL = "redis://127.0.0.1:6379/0"
# Celery workers, each running one task at a time (compose: `airflow-worker` with this many replicas).
AIRFLOW_WORKERS = 2

# MLflow accounts (docker/entrypoints/churnops-mlflow-auth.py): writers log in as the administrator, the API and
# the exporter as the read-only account. Usernames are not secret; compose takes the same defaults.
MLFLOW_ADMIN_USERNAME = "admin"
MLFLOW_READER_USERNAME = "churnops-reader"

# What each churnops service finds in its CHURNOPS_SECRETS_DIR: (file name read by Settings, generated secret it
# holds). Compose mounts the same sources under the same targets (tests/deploy/test_compose_exposure.py compares).
# Pairs rather than a literal mapping: a `name: value` line whose key ends in "password" reads, to a secret
# scanner, like a password written in the code.
_SECRET_VIEW_FILES = {
    # Airflow components (their DAG tasks) and a shell from `native_stack.py env`.
    "platform": (
        ("churnops_database_url", "churnops_database_url"),
        ("churnops_optuna_storage_url", "churnops_optuna_storage_url"),
        ("churnops_mlflow_tracking_password", "mlflow_admin_password"),
    ),
    "api": (
        ("churnops_database_url", "churnops_api_database_url"),
        ("churnops_serving__api_key", "churnops_serving__api_key"),
        ("churnops_serving__admin_token", "churnops_serving__admin_token"),
        ("churnops_mlflow_tracking_password", "mlflow_reader_password"),
    ),
    "monitoring-exporter": (
        ("churnops_database_url", "churnops_database_url"),
        ("churnops_mlflow_tracking_password", "mlflow_reader_password"),
    ),
}
SECRET_VIEWS: dict[str, dict[str, str]] = {view: dict(files) for view, files in _SECRET_VIEW_FILES.items()}

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

    @property
    def ports_file(self) -> Path:
        return self.root / "ports.json"

    @property
    def prometheus_config(self) -> Path:
        return self.root / "prometheus.yml"

    def secret_view(self, view: str) -> Path:
        return self.root / "run-secrets" / view

    def secret(self, name: str) -> str:
        return (self.secrets / name).read_text().strip()


def default_root() -> Path:
    return Path(os.environ.get("CHURNOPS_STACK_DIR", REPO / ".churnops" / "stack"))


def stack_ports(paths: StackPaths) -> dict[str, int]:
    """The ports this stack uses: those recorded at `up --free-ports`, else the compose defaults."""
    if paths.ports_file.exists():
        return {**DEFAULT_PORTS, **json.loads(paths.ports_file.read_text())}
    return dict(DEFAULT_PORTS)


def choose_free_ports() -> dict[str, int]:
    """One free loopback port per entry of DEFAULT_PORTS, all different (the OS hands out unused ephemeral ports)."""
    sockets, chosen = [], {}
    try:
        for name in DEFAULT_PORTS:
            probe = socket.socket()
            probe.bind(("127.0.0.1", 0))
            sockets.append(probe)  # held open until every port is chosen, so none is handed out twice
            chosen[name] = probe.getsockname()[1]
    finally:
        for probe in sockets:
            probe.close()
    return chosen


def stack_environment(paths: StackPaths) -> dict[str, str]:
    """The environment every platform process of the stack shares (the native twin of compose's x-common env)."""
    ports = stack_ports(paths)
    secret_cmd = f"cat {paths.secrets}"
    # Inherit the caller's environment but none of its Airflow, churnops or MLflow-credential settings: the stack's
    # own come below, and a stray AIRFLOW__DATABASE__SQL_ALCHEMY_CONN would silently win over the *_CMD secret.
    inherited = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AIRFLOW__", "AIRFLOW_CONN_", "CHURNOPS_", "MLFLOW_TRACKING_"))
    }
    inherited.update({k: v for k, v in os.environ.items() if k in PASSED_THROUGH})
    return {
        **inherited,
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "CHURNOPS_HOME": str(paths.home),
        "CHURNOPS_SECRETS_DIR": str(paths.secret_view("platform")),
        "CHURNOPS_MLFLOW_TRACKING_URI": f"http://127.0.0.1:{ports['mlflow']}",
        "CHURNOPS_MLFLOW_TRACKING_USERNAME": MLFLOW_ADMIN_USERNAME,
        "CHURNOPS_SPARK__MASTER": f"spark://127.0.0.1:{ports['spark-master']}",
        "CHURNOPS_SERVING__RELOAD_INTERVAL_SECONDS": os.environ.get("CHURNOPS_SERVING__RELOAD_INTERVAL_SECONDS", "5"),
        "CHURNOPS_MONITORING__EXPORTER_PORT": str(ports["monitoring-exporter"]),
        "PYSPARK_PYTHON": sys.executable,
        "PYSPARK_DRIVER_PYTHON": sys.executable,
        "SPARK_HOME": str(PYSPARK_HOME),
        # Spark's daemons and web UIs bind to this address instead of every interface.
        "SPARK_LOCAL_IP": "127.0.0.1",
        "AIRFLOW_HOME": str(paths.airflow_home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "airflow" / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__CELERY__BROKER_URL": REDIS_BROKER_URL,
        "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__GLOBAL_KEYPREFIX": redis_key_prefix(),
        # Task states go back through the stack's Airflow database (`db+` = Celery's SQLAlchemy backend); `sed`
        # rather than a shell, because Airflow runs a *_CMD without one.
        "AIRFLOW__CELERY__RESULT_BACKEND_CMD": f"sed s/^/db+/ {paths.secrets}/airflow_db_url",
        "AIRFLOW__CELERY__WORKER_CONCURRENCY": "1",
        # task_instance.hostname names the worker that ran the task (churnops/worker_identity.py).
        "AIRFLOW__CORE__HOSTNAME_CALLABLE": "churnops.worker_identity.airflow_hostname",
        # As in production: new DAGs wait paused until someone (the UI, the REST API) switches them on.
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_CMD": f"{secret_cmd}/airflow_db_url",
        "AIRFLOW__CORE__FERNET_KEY_CMD": f"{secret_cmd}/airflow_fernet_key",
        "AIRFLOW__API_AUTH__JWT_SECRET_CMD": f"{secret_cmd}/airflow_jwt_secret",
        "AIRFLOW__API__SECRET_KEY_CMD": f"{secret_cmd}/airflow_api_secret_key",
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(ports["airflow-apiserver"]),
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{ports['airflow-apiserver']}",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{ports['airflow-apiserver']}/execution/",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(paths.airflow_home / "passwords.json"),
        "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "True",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_HOST": "127.0.0.1",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT": str(ports["airflow-scheduler-health"]),
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(ports["airflow-worker-logs"]),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(ports["airflow-trigger-logs"]),
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "10",
        "AIRFLOW_CONN_SPARK_DEFAULT": json.dumps(
            {"conn_type": "spark", "host": "spark://127.0.0.1", "port": ports["spark-master"]}
        ),
        "OMP_NUM_THREADS": "1",
    }


def redis_key_prefix() -> str:
    return f"churnops{os.environ.get('CHURNOPS_STACK_DB_SUFFIX', '')}:"


def make_secret_views(paths: StackPaths) -> None:
    """Each service's secrets folder: copies of the generated secrets it may read, under the names its Settings
    read (what compose's per-service `secrets:` mounts do). Copies, not links: pydantic-settings ignores a secret
    file that resolves outside its folder. Rebuilt at every `up`, so a rotated secret reaches every view."""
    for view, files in SECRET_VIEWS.items():
        folder = paths.secret_view(view)
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True, mode=0o700)
        for target, source in files.items():
            descriptor = os.open(folder / target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "w") as handle:
                handle.write((paths.secrets / source).read_text())


def write_prometheus_config(paths: StackPaths) -> None:
    """monitoring/prometheus.native.yml with this stack's ports and the alert rules' absolute path."""
    ports = stack_ports(paths)
    config = yaml.safe_load((REPO / "monitoring" / "prometheus.native.yml").read_text())
    config["rule_files"] = [str(REPO / "monitoring" / rule) for rule in config["rule_files"]]
    port_of_job = {"churnops-api": "api", "churnops-monitoring": "monitoring-exporter", "prometheus": "prometheus"}
    for job in config["scrape_configs"]:
        job["static_configs"] = [{"targets": [f"127.0.0.1:{ports[port_of_job[job['job_name']]]}"]}]
    paths.prometheus_config.write_text(yaml.safe_dump(config, sort_keys=False))


@dataclass
class Service:
    name: str
    command: list[str]
    healthy: Callable[[], bool]
    # Generous: on a loaded two-core machine MLflow alone took two minutes to answer.
    timeout_s: float = 900
    daemonizes: bool = False  # started by a script that forks (Spark's spark-daemon.sh) and stopped by `stop`
    stop: list[str] = field(default_factory=list)
    extra_env: dict[str, str] = field(default_factory=dict)
    # False for services with no port of their own (their health check cannot tell ours from a stranger).
    listens: bool = True
    # The compose service this one is a replica of (the Celery workers), when the names differ.
    replica_of: str | None = None


def services(paths: StackPaths) -> list[Service]:
    ports = stack_ports(paths)
    daemon = str(PYSPARK_HOME / "sbin" / "spark-daemon.sh")
    master_class, worker_class = "org.apache.spark.deploy.master.Master", "org.apache.spark.deploy.worker.Worker"
    master = ["--host", "127.0.0.1", "--port", str(ports["spark-master"])]
    master += ["--webui-port", str(ports["spark-master-ui"])]
    worker = [f"spark://127.0.0.1:{ports['spark-master']}", "--host", "127.0.0.1", "--cores", "2", "--memory", "4g"]
    return [
        Service(
            "spark-master",
            [daemon, "start", master_class, "1", *master],
            lambda: http_ok(f"http://127.0.0.1:{ports['spark-master-ui']}/json/"),
            daemonizes=True,
            stop=[daemon, "stop", master_class, "1"],
        ),
        Service(
            "spark-worker",
            [daemon, "start", worker_class, "1", *worker, "--webui-port", str(ports["spark-worker-ui"])],
            lambda: spark_worker_alive(ports),
            daemonizes=True,
            stop=[daemon, "stop", worker_class, "1"],
        ),
        Service(
            "mlflow",
            # compose's entrypoint: secrets read into MLflow's environment, users set from their secret files,
            # then `mlflow server --app-name basic-auth`.
            [str(ENTRYPOINTS / "churnops-mlflow-entrypoint.sh")],
            lambda: mlflow_answers(paths.secrets / "mlflow_reader_password", MLFLOW_READER_USERNAME, ports["mlflow"]),
            extra_env={
                "CHURNOPS_SECRETS_DIR": str(paths.secrets),
                "MLFLOW_HOST": "127.0.0.1",
                "MLFLOW_PORT": str(ports["mlflow"]),
                "MLFLOW_WORKERS": "1",
                "MLFLOW_ARTIFACTS_DESTINATION": str(paths.root / "mlflow-artifacts"),
                "MLFLOW_ALLOWED_HOSTS": "localhost:*,127.0.0.1:*",
                "MLFLOW_AUTH_CONFIG_DIR": str(paths.root / "mlflow-auth"),
                "MLFLOW_ADMIN_USERNAME": MLFLOW_ADMIN_USERNAME,
                "MLFLOW_READER_USERNAME": MLFLOW_READER_USERNAME,
            },
        ),
        Service(
            "airflow-apiserver",
            ["airflow", "api-server", "--host", "127.0.0.1", "--port", str(ports["airflow-apiserver"])],
            lambda: http_ok(f"http://127.0.0.1:{ports['airflow-apiserver']}/api/v2/monitor/health"),
        ),
        # Airflow's log servers bind every interface (not configurable in 3.3) and are not needed here: the
        # api-server reads the task logs from the shared AIRFLOW_HOME. So neither component starts one.
        Service(
            "airflow-scheduler",
            ["airflow", "scheduler", "--skip-serve-logs"],
            lambda: http_ok(f"http://127.0.0.1:{ports['airflow-scheduler-health']}/health"),
        ),
        Service("airflow-dag-processor", ["airflow", "dag-processor"], lambda: True, listens=False),
        Service("airflow-triggerer", ["airflow", "triggerer", "--skip-serve-logs"], lambda: True, listens=False),
        *airflow_workers(),
        Service(
            "api",
            [sys.executable, "-m", "churnops.cli", "serve", "--host", "127.0.0.1", "--port", str(ports["api"])]
            + ["--workers", "2"],
            lambda: http_ok(f"http://127.0.0.1:{ports['api']}/health"),
            extra_env={
                # Only the API runs several workers; the exporter must keep prometheus-client's normal registry.
                "PROMETHEUS_MULTIPROC_DIR": str(paths.root / "api-metrics"),
                # The API's database role and read-only MLflow account, as compose mounts them.
                "CHURNOPS_SECRETS_DIR": str(paths.secret_view("api")),
                "CHURNOPS_MLFLOW_TRACKING_USERNAME": MLFLOW_READER_USERNAME,
            },
        ),
        Service(
            "monitoring-exporter",
            [sys.executable, "-m", "churnops.monitoring.exporter"],
            lambda: http_ok(f"http://127.0.0.1:{ports['monitoring-exporter']}/metrics"),
            extra_env={
                "CHURNOPS_SECRETS_DIR": str(paths.secret_view("monitoring-exporter")),
                "CHURNOPS_MLFLOW_TRACKING_USERNAME": MLFLOW_READER_USERNAME,
            },
        ),
        Service(
            "prometheus",
            # No --web.enable-lifecycle and no --web.enable-admin-api, as in compose.
            [
                _prometheus_binary(),
                f"--config.file={paths.prometheus_config}",
                f"--storage.tsdb.path={paths.root / 'prometheus-data'}",
                f"--web.listen-address=127.0.0.1:{ports['prometheus']}",
            ],
            lambda: http_ok(f"http://127.0.0.1:{ports['prometheus']}/-/ready"),
        ),
    ]


def airflow_workers() -> list[Service]:
    """The Celery workers, one task at a time each. Their node names (`--celery-hostname`) and the name Airflow
    records as a task's host differ per worker; like the scheduler they start no log server."""
    workers = []
    for number in range(1, AIRFLOW_WORKERS + 1):
        name = f"airflow-worker-{number}"
        command = ["airflow", "celery", "worker", "--celery-hostname", f"{name}@%h", "--concurrency", "1"]
        workers.append(
            Service(
                name,
                [*command, "--skip-serve-logs"],
                lambda: True,
                listens=False,
                extra_env={"CHURNOPS_AIRFLOW_WORKER_NAME": name},
                replica_of="airflow-worker",
            )
        )
    return workers


def _prometheus_binary() -> str:
    return shutil.which("prometheus") or "/usr/bin/prometheus"
