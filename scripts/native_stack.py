"""The full deployment without Docker: the same services as docker-compose.yml, started natively on one machine.

    python scripts/native_stack.py up       # start everything, wait until each service is healthy
    python scripts/native_stack.py up --free-ports   # the same on free ports chosen now (kept in ports.json)
    python scripts/native_stack.py status   # what is running
    python scripts/native_stack.py down     # stop everything (reverse order), keep data
    python scripts/native_stack.py env      # print the environment a shell needs to talk to the stack

Services (compose name → native process): postgres → the machine's own PostgreSQL (roles, databases and schema
from postgres-init/), spark-master / spark-worker → Spark standalone via Spark's own `spark-daemon.sh` (shipped in
the pyspark package), mlflow → `mlflow server` on PostgreSQL with its basic-auth app (compose's entrypoint),
airflow-apiserver / -scheduler / -dag-processor /
-triggerer → Airflow 3 on PostgreSQL with the CeleryExecutor, airflow-worker (two replicas) → `airflow celery worker`
-1 and -2 on the machine's Redis (redis), api → uvicorn with 2 workers, monitoring-exporter →
`python -m churnops.monitoring.exporter`, prometheus → Debian's Prometheus with monitoring/prometheus.native.yml. As in
compose, the feature job is submitted to the Spark master, every service listens on the loopback interface only,
and every credential comes from secret files (generated once by scripts/generate-secrets.sh into the stack's own
secrets folder); the API reads them as compose's API does: its database role may only append to the prediction
log and read the online features and the tables its pages show, and its MLflow account only reads. Folders, ports,
environment and service commands live in scripts/native_stack_services.py.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from native_stack_services import (  # noqa: E402
    DEFAULT_PORTS,
    MLFLOW_ADMIN_USERNAME,
    MLFLOW_READER_USERNAME,
    PASSED_THROUGH,
    PORTS,
    REDIS_BROKER_URL,
    REPO,
    SECRET_VIEWS,
    Service,
    StackPaths,
    choose_free_ports,
    default_root,
    make_secret_views,
    redis_key_prefix,
    services,
    stack_environment,
    stack_ports,
    write_prometheus_config,
)

__all__ = [
    "DEFAULT_PORTS",
    "MLFLOW_ADMIN_USERNAME",
    "MLFLOW_READER_USERNAME",
    "PASSED_THROUGH",
    "PORTS",
    "REDIS_BROKER_URL",
    "SECRET_VIEWS",
    "Service",
    "StackPaths",
    "database_names",
    "down",
    "redis_key_prefix",
    "services",
    "stack_environment",
    "stack_ports",
    "start",
    "stop",
    "up",
]


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
        "MLFLOW_AUTH_DB": f"mlflow_auth{suffix}",
        "CHURNOPS_DB": f"churnops{suffix}",
        "API_DB_ROLE": f"churnops_api{suffix}",
        "GRAFANA_DB_ROLE": f"grafana_reader{suffix}",
    }


def prepare(paths: StackPaths, env: dict[str, str]) -> None:
    """Secrets (and each service's view of them), PostgreSQL roles/databases/schema (postgres-init/), the
    Prometheus configuration for this stack's ports, Airflow metadata and its admin user."""
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
    make_secret_views(paths)
    write_prometheus_config(paths)
    (paths.airflow_home / "passwords.json").write_text(json.dumps({"admin": paths.secret("airflow_admin_password")}))
    _run(["airflow", "db", "migrate"], env, "airflow db migrate")


def _pid_file(paths: StackPaths, name: str) -> Path:
    return paths.pids / f"{name}.pid"


def _alive(pid: int) -> bool:
    try:
        # A child of this process that exited answers `kill 0` until it is reaped: reap it, it is dead.
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    except ChildProcessError:
        pass  # not this process's child (started by an earlier `up`)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _group_alive(pgid: int) -> bool:
    """Whether any process of the group is left (a leader can exit before the children it started)."""
    _alive(pgid)  # reaps the leader if it is this process's child and has exited
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _running_pid(paths: StackPaths, name: str) -> int | None:
    pid_file = _pid_file(paths, name)
    if not pid_file.exists():
        return None
    pid = int(pid_file.read_text())
    return pid if _alive(pid) else None


def start(paths: StackPaths, env: dict[str, str], service: Service) -> None:
    """Start one service in a session of its own (its pid recorded) and wait until it is healthy."""
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


def up(paths: StackPaths, free_ports: bool = False) -> None:
    """Start every service not running yet and wait until each is healthy. `free_ports` picks free ports the
    first time (a stack keeps the ports it started with); otherwise the compose defaults are used."""
    paths.root.mkdir(parents=True, exist_ok=True)
    if free_ports and not paths.ports_file.exists():
        paths.ports_file.write_text(json.dumps(choose_free_ports(), indent=2))
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
        start(paths, env, service)
    ports = stack_ports(paths)
    print(  # noqa: T201
        f"Airflow http://127.0.0.1:{ports['airflow-apiserver']} (admin / {paths.secrets}/airflow_admin_password), "
        f"MLflow http://127.0.0.1:{ports['mlflow']} (admin / {paths.secrets}/mlflow_admin_password), "
        f"API http://127.0.0.1:{ports['api']}, Prometheus http://127.0.0.1:{ports['prometheus']}, "
        f"Spark http://127.0.0.1:{ports['spark-master-ui']}"
    )


def down(paths: StackPaths) -> None:
    env = stack_environment(paths)
    env["SPARK_PID_DIR"], env["SPARK_LOG_DIR"] = str(paths.pids), str(paths.logs)
    for service in reversed(services(paths)):
        if service.daemonizes:
            subprocess.run(service.stop, env=env, capture_output=True)
            continue
        stop(paths, service)
        print(f"{service.name:<24} stopped")  # noqa: T201


def stop(paths: StackPaths, service: Service) -> None:
    """Stop a service `start` started: its whole session (process group), children too."""
    pid_file = _pid_file(paths, service.name)
    pid = int(pid_file.read_text()) if pid_file.exists() else None
    if pid is not None and _group_alive(pid):
        os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while _group_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.3)
        if _group_alive(pid):
            os.killpg(pid, signal.SIGKILL)
    pid_file.unlink(missing_ok=True)


def status(paths: StackPaths) -> int:
    all_healthy = True
    for service in services(paths):
        # A service without a port of its own (the dag-processor, the triggerer, the workers) counts while it runs.
        healthy = service.healthy() and (service.listens or _running_pid(paths, service.name) is not None)
        all_healthy &= healthy
        print(f"{service.name:<24} {'healthy' if healthy else 'down'}")  # noqa: T201
    return 0 if all_healthy else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["up", "down", "status", "env"])
    parser.add_argument("--dir", type=Path, default=None, help="stack folder (default .churnops/stack)")
    parser.add_argument(
        "--free-ports", action="store_true", help="up: listen on free ports chosen now instead of compose's"
    )
    args = parser.parse_args()
    paths = StackPaths((args.dir or default_root()).resolve())
    if args.action == "up":
        up(paths, free_ports=args.free_ports)
    elif args.action == "down":
        down(paths)
    elif args.action == "env":
        env = stack_environment(paths)
        for key in sorted(k for k in env if k.startswith(("CHURNOPS_", "AIRFLOW", "PYSPARK", "SPARK_"))):
            print(f"export {key}={shlex.quote(env[key])}")  # noqa: T201
    else:
        return status(paths)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
