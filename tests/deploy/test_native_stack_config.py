"""The native stack's set-up, checked without starting it: ports chosen at run time reach every service, every
service listens on the loopback interface, Prometheus has no lifecycle API, and each service gets the credentials
compose gives it."""

from __future__ import annotations

import importlib
import json
import os
import re
import shlex
import socket
import subprocess
from pathlib import Path

import pytest
import yaml

from churnops.config import Settings
from tests.deploy.support import REPO, native_stack, promtool


@pytest.fixture
def stack_on_free_ports(tmp_path: Path):
    """A stack folder whose ports were chosen as `up --free-ports` chooses them, with generated secrets."""
    stack = native_stack()
    paths = stack.StackPaths(tmp_path / "stack")
    paths.root.mkdir()
    paths.ports_file.write_text(json.dumps(stack.choose_free_ports()))
    generated = subprocess.run(
        ["bash", str(REPO / "scripts" / "generate-secrets.sh"), str(paths.secrets)], capture_output=True, text=True
    )
    assert generated.returncode == 0, generated.stderr
    return paths


def test_free_ports_are_one_per_listener_all_different_and_bindable() -> None:
    chosen = native_stack().choose_free_ports()
    assert set(chosen) == set(native_stack().DEFAULT_PORTS)
    assert len(set(chosen.values())) == len(chosen)
    for port in chosen.values():
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", port))


def test_a_stack_on_free_ports_uses_none_of_the_default_ports(stack_on_free_ports) -> None:
    """A `make serve` on 8000, or a developer's stack on compose's ports, must not collide with the stack test."""
    stack, paths = native_stack(), stack_on_free_ports
    ports = stack.stack_ports(paths)
    assert ports == json.loads(paths.ports_file.read_text())
    stack.write_prometheus_config(paths)
    own = {k: v for k, v in stack.stack_environment(paths).items() if os.environ.get(k) != v}  # not inherited
    texts = [json.dumps(own), paths.prometheus_config.read_text()]
    for service in stack.services(paths):
        texts.append(" ".join(service.command) + json.dumps(service.extra_env))
    everything = "\n".join(texts)
    defaults_used = {
        name: port
        for name, port in stack.DEFAULT_PORTS.items()
        if port not in ports.values() and re.search(rf"(?<![\d.]){port}(?!\d)", everything)
    }
    assert defaults_used == {}
    for name in ("api", "mlflow", "airflow-apiserver", "prometheus", "monitoring-exporter", "spark-master"):
        assert str(ports[name]) in everything, name


def test_the_prometheus_config_scrapes_this_stacks_ports_and_passes_promtool(stack_on_free_ports) -> None:
    stack, paths = native_stack(), stack_on_free_ports
    stack.write_prometheus_config(paths)
    config = yaml.safe_load(paths.prometheus_config.read_text())
    ports = stack.stack_ports(paths)
    targets = {job["job_name"]: job["static_configs"][0]["targets"] for job in config["scrape_configs"]}
    assert targets == {
        "churnops-api": [f"127.0.0.1:{ports['api']}"],
        "churnops-monitoring": [f"127.0.0.1:{ports['monitoring-exporter']}"],
        "prometheus": [f"127.0.0.1:{ports['prometheus']}"],
    }
    checked = subprocess.run([promtool(), "check", "config", str(paths.prometheus_config)], capture_output=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_every_service_listens_on_the_loopback_interface_only(stack_on_free_ports) -> None:
    stack, paths = native_stack(), stack_on_free_ports
    environment = stack.stack_environment(paths)
    assert environment["AIRFLOW__API__HOST"] == "127.0.0.1"
    assert environment["AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_HOST"] == "127.0.0.1"
    assert environment["SPARK_LOCAL_IP"] == "127.0.0.1"  # Spark's daemons and web UIs
    commands = {service.name: service for service in stack.services(paths)}
    for name in ("spark-master", "spark-worker", "airflow-apiserver", "api"):
        command = commands[name].command
        assert command[command.index("--host") + 1] == "127.0.0.1", name
    assert commands["mlflow"].extra_env["MLFLOW_HOST"] == "127.0.0.1"
    # Airflow's log servers would bind every interface; the api-server reads task logs from the shared folder.
    for name in ("airflow-scheduler", "airflow-triggerer", "airflow-worker-1", "airflow-worker-2"):
        assert "--skip-serve-logs" in commands[name].command, name
    listen = [flag for flag in commands["prometheus"].command if flag.startswith("--web.listen-address=")]
    assert listen == [f"--web.listen-address=127.0.0.1:{stack.stack_ports(paths)['prometheus']}"]
    assert "0.0.0.0" not in json.dumps(environment)


def test_prometheus_runs_without_the_lifecycle_and_admin_apis(stack_on_free_ports) -> None:
    prometheus = next(s for s in native_stack().services(stack_on_free_ports) if s.name == "prometheus")
    assert not [
        flag for flag in prometheus.command if flag.startswith(("--web.enable-lifecycle", "--web.enable-admin"))
    ]


def test_mlflow_starts_through_compose_entrypoint_with_its_basic_auth_app(stack_on_free_ports) -> None:
    mlflow = next(s for s in native_stack().services(stack_on_free_ports) if s.name == "mlflow")
    assert mlflow.command == [str(REPO / "docker" / "entrypoints" / "churnops-mlflow-entrypoint.sh")]
    assert mlflow.extra_env["CHURNOPS_SECRETS_DIR"] == str(stack_on_free_ports.secrets)


def _settings_of(paths, service_name: str, monkeypatch) -> Settings:
    """Settings as that service's process builds them: the stack's environment plus its own."""
    stack = native_stack()
    service = next(s for s in stack.services(paths) if s.name == service_name)
    environment = {**stack.stack_environment(paths), **service.extra_env}
    for key in [k for k in environment if k.startswith("CHURNOPS_")]:
        monkeypatch.setenv(key, environment[key])
    return Settings(_secrets_dir=environment["CHURNOPS_SECRETS_DIR"])


def test_the_api_reads_the_database_as_its_own_role_and_mlflow_as_the_reader(stack_on_free_ports, monkeypatch) -> None:
    paths = stack_on_free_ports
    native_stack().make_secret_views(paths)
    api = _settings_of(paths, "api", monkeypatch)
    assert api.database_url.get_secret_value() == paths.secret("churnops_api_database_url")
    assert "://churnops_api:" in api.database_url.get_secret_value()
    assert api.mlflow_client_environment() == {
        "MLFLOW_TRACKING_USERNAME": "churnops-reader",
        "MLFLOW_TRACKING_PASSWORD": paths.secret("mlflow_reader_password"),
    }
    assert api.serving.api_key.get_secret_value() == paths.secret("churnops_serving__api_key")


def test_dag_tasks_write_as_the_owner_and_the_mlflow_administrator(stack_on_free_ports, monkeypatch) -> None:
    paths = stack_on_free_ports
    native_stack().make_secret_views(paths)
    scheduler = _settings_of(paths, "airflow-scheduler", monkeypatch)
    assert scheduler.database_url.get_secret_value() == paths.secret("churnops_database_url")
    assert scheduler.optuna_storage == paths.secret("churnops_optuna_storage_url")
    assert scheduler.mlflow_client_environment()["MLFLOW_TRACKING_PASSWORD"] == paths.secret("mlflow_admin_password")
    exporter = _settings_of(paths, "monitoring-exporter", monkeypatch)
    assert exporter.mlflow_client_environment()["MLFLOW_TRACKING_PASSWORD"] == paths.secret("mlflow_reader_password")


def test_secret_views_are_private_copies(stack_on_free_ports) -> None:
    paths = stack_on_free_ports
    native_stack().make_secret_views(paths)
    view = paths.secret_view("api")
    assert oct(view.stat().st_mode & 0o777) == "0o700"
    assert {oct(f.stat().st_mode & 0o777) for f in view.iterdir()} == {"0o600"}
    assert not [f for f in view.iterdir() if f.is_symlink()]


def test_two_celery_workers_run_one_task_each_and_say_which_ran_a_task(stack_on_free_ports) -> None:
    stack, paths = native_stack(), stack_on_free_ports
    workers = [s for s in stack.services(paths) if s.replica_of == "airflow-worker"]
    assert [w.name for w in workers] == ["airflow-worker-1", "airflow-worker-2"]
    nodes, names = set(), set()
    for worker in workers:
        command = worker.command
        assert command[:3] == ["airflow", "celery", "worker"]
        assert command[command.index("--concurrency") + 1] == "1"
        nodes.add(command[command.index("--celery-hostname") + 1])
        names.add(worker.extra_env["CHURNOPS_AIRFLOW_WORKER_NAME"])
    assert len(nodes) == len(names) == 2
    environment = stack.stack_environment(paths)
    hostname = environment["AIRFLOW__CORE__HOSTNAME_CALLABLE"]
    module, function = hostname.rsplit(".", 1)
    recorded = getattr(importlib.import_module(module), function)
    assert recorded.__name__ == "airflow_hostname"


def test_the_stack_queues_tasks_on_the_machines_redis_and_keeps_their_states_in_its_airflow_database(
    stack_on_free_ports, monkeypatch
) -> None:
    stack, paths = native_stack(), stack_on_free_ports
    environment = stack.stack_environment(paths)
    assert environment["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert environment["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://127.0.0.1:6379/")
    # Airflow runs a *_CMD itself, without a shell: run it the same way.
    backend = subprocess.run(
        shlex.split(environment["AIRFLOW__CELERY__RESULT_BACKEND_CMD"]), capture_output=True, text=True, check=True
    )
    assert backend.stdout == "db+" + paths.secret("airflow_db_url")
    # A second stack (the stack test's suffix) keeps its queues apart from a developer's.
    developer_prefix = environment["AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__GLOBAL_KEYPREFIX"]
    monkeypatch.setenv("CHURNOPS_STACK_DB_SUFFIX", "_second")
    second_prefix = stack.stack_environment(paths)["AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__GLOBAL_KEYPREFIX"]
    assert developer_prefix != second_prefix and not second_prefix.startswith(developer_prefix.rstrip(":") + ":")
