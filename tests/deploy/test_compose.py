"""docker-compose.yml, checked without a container engine: the compose-spec parser (the `compose-spec` package
from PyPI) plus the cross-references it cannot see (services, volumes, bind-mounted paths), the native stack's
service names, and the rules of the deployment (healthchecks, pinned images, no credentials in the file)."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from typing import Any

import pytest
import yaml

from tests.deploy.support import (
    COMPOSE_FILE,
    NATIVE_STACK_SERVICES,
    REPO,
    SECRETS_DIR,
    InterpolationError,
    compose,
    compose_spec_errors,
    interpolate,
    native_stack,
)

ONE_SHOT_SERVICES = {"airflow-init"}
AIRFLOW_COMPONENTS = (
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "airflow-worker",
)


def services() -> dict[str, dict[str, Any]]:
    return compose()["services"]


def depends_on(service: dict[str, Any]) -> dict[str, dict[str, Any]]:
    declared = service.get("depends_on", {})
    return {name: {"condition": "service_started"} for name in declared} if isinstance(declared, list) else declared


def volume_entries(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(source, target) of every volume of a service, short or long syntax."""
    entries = []
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            source, target = volume.split(":")[:2]
        else:
            source, target = volume.get("source", ""), volume["target"]
        entries.append((source, target))
    return entries


# With no variable set, as in a fresh checkout: every `${VAR:-default}` takes its default.
NO_VARIABLES: dict[str, str] = {}


def deployed_compose() -> dict[str, Any]:
    """docker-compose.yml as compose would run it with no variables set: merge keys resolved, defaults filled in."""
    return interpolate(compose(), NO_VARIABLES)


def test_compose_file_is_accepted_by_the_compose_spec_parser():
    assert compose_spec_errors(deployed_compose()) == []


def errors_after(change: Callable[[dict[str, Any]], None]) -> list[str]:
    """compose-spec errors for the deployed compose file after `change` edits a copy of it."""
    broken = copy.deepcopy(deployed_compose())
    change(broken)
    return compose_spec_errors(broken)


def test_compose_spec_check_catches_a_misspelled_healthcheck_key():
    errors = errors_after(lambda doc: doc["services"]["api"]["healthcheck"].update(intervall="10s"))
    assert any(error.startswith("services.api:") and "intervall" in error for error in errors), errors


def test_compose_spec_check_catches_an_unknown_depends_on_condition():
    def wait_for_a_condition_compose_lacks(doc: dict[str, Any]) -> None:
        doc["services"]["api"]["depends_on"]["postgres"]["condition"] = "service_ready"

    errors = errors_after(wait_for_a_condition_compose_lacks)
    assert any("service_ready" in error for error in errors), errors


def test_compose_spec_check_catches_an_unknown_service_key():
    errors = errors_after(lambda doc: doc["services"]["grafana"].update(restrat="always"))
    assert any(error.startswith("services.grafana:") and "restrat" in error for error in errors), errors


@pytest.mark.parametrize(
    ("mapping", "complaint"),
    [
        ("99999:8000", "too large"),
        ("api:8000", "error parsing port"),
        ("127.0.0.1.1:8000:8000", "ip address"),
        ({"published": 8000}, "missing field `target`"),
    ],
)
def test_compose_spec_check_catches_a_bad_port_mapping(mapping: str | dict[str, int], complaint: str):
    errors = errors_after(lambda doc: doc["services"]["api"].update(ports=[mapping]))
    assert any(error.startswith("services.api:") and complaint in error for error in errors), errors


def test_compose_spec_check_catches_a_secret_that_is_used_but_not_declared():
    errors = errors_after(lambda doc: doc["services"]["api"]["secrets"].append("api_signing_key"))
    assert any("api_signing_key" in error for error in errors), errors


def test_x_extension_keys_are_allowed_where_compose_allows_them():
    assert errors_after(lambda doc: doc["services"]["api"].update({"x-owner": "platform"})) == []


def test_interpolation_fills_defaults_like_compose():
    environment = {"SET": "value", "EMPTY": ""}
    assert interpolate("${UNSET:-d} ${EMPTY:-d} ${EMPTY-d} ${SET:-d} ${UNSET-d}", environment) == "d d  value d"
    assert interpolate("${UNSET:-${SET}}-${SET:+alt}-${EMPTY+alt}-$SET-${UNSET}", environment) == "value-alt-alt-value-"
    assert interpolate({"k": ["$${HOSTNAME}", "$$", 3]}, environment) == {"k": ["${HOSTNAME}", "$", 3]}


def test_interpolation_fails_on_a_required_variable_without_a_value():
    with pytest.raises(InterpolationError, match="API_PORT has no value: set API_PORT"):
        interpolate("${API_PORT:?set API_PORT}", {"API_PORT": ""})
    assert interpolate("${API_PORT?unset}", {"API_PORT": ""}) == ""
    with pytest.raises(InterpolationError, match="invalid interpolation"):
        interpolate("${API PORT}", {})


def test_the_compose_file_interpolates_with_no_variables_set():
    api = deployed_compose()["services"]["api"]
    assert api["image"] == "churnops-api:latest"
    assert api["ports"] == ["127.0.0.1:8000:8000"]


def test_every_native_stack_service_is_in_the_compose_file():
    stack = native_stack()
    native = stack.services(stack.StackPaths(REPO / ".no-stack"))
    # The native Celery workers airflow-worker-1, -2 are replicas of compose's airflow-worker.
    started = {service.replica_of or service.name for service in native}
    # PostgreSQL and Redis are the machine's own, airflow-init is `prepare`, Grafana is not installable here.
    assert started | {"postgres", "redis", "airflow-init", "grafana"} == set(NATIVE_STACK_SERVICES)
    assert sorted(set(NATIVE_STACK_SERVICES) - set(services())) == []


def test_every_depends_on_target_is_a_service_with_the_state_its_condition_waits_for():
    for name, service in services().items():
        for target, rule in depends_on(service).items():
            assert target in services(), f"{name} depends on unknown service {target}"
            if rule["condition"] == "service_healthy":
                assert "healthcheck" in services()[target], f"{name} waits for {target} to be healthy: no healthcheck"
            if rule["condition"] == "service_completed_successfully":
                assert target in ONE_SHOT_SERVICES, f"{name} waits for long-running {target} to complete"


def test_every_airflow_component_waits_for_the_database_migration():
    for name in AIRFLOW_COMPONENTS:
        assert depends_on(services()[name])["airflow-init"]["condition"] == "service_completed_successfully"
    assert depends_on(services()["airflow-init"])["postgres"]["condition"] == "service_healthy"


def test_every_long_running_service_has_a_healthcheck_and_a_restart_policy():
    for name, service in services().items():
        if name in ONE_SHOT_SERVICES:
            assert service.get("restart") == "no", f"one-shot {name} must not be restarted"
            continue
        assert "test" in service.get("healthcheck", {}), f"{name} has no healthcheck"
        assert service.get("restart") == "unless-stopped", f"{name} should restart unless stopped"


def test_every_secret_a_service_uses_is_declared_and_has_a_committed_example():
    declared = compose()["secrets"]
    for name, service in services().items():
        for secret in service.get("secrets", []):
            secret_name = secret if isinstance(secret, str) else secret["source"]
            assert secret_name in declared, f"{name} uses undeclared secret {secret_name}"
    for secret_name, definition in declared.items():
        assert definition["file"] == f"./secrets/{secret_name}", f"{secret_name} must live in ./secrets"
        example = SECRETS_DIR / f"{secret_name}.example"
        assert example.is_file(), f"secret {secret_name} has no committed {example.relative_to(REPO)}"


def test_every_declared_secret_is_used_by_some_service():
    used = {s if isinstance(s, str) else s["source"] for svc in services().values() for s in svc.get("secrets", [])}
    assert sorted(set(compose()["secrets"]) - used) == []


def test_real_secret_files_are_ignored_by_git():
    ignore_rules = (REPO / ".gitignore").read_text().splitlines()
    assert "secrets/*" in ignore_rules and "!secrets/*.example" in ignore_rules


def test_every_named_volume_is_declared_and_every_bind_mount_source_exists():
    declared = set(compose().get("volumes", {}))
    for name, service in services().items():
        for source, target in volume_entries(service):
            assert target.startswith("/"), f"{name}: volume target {target} is not absolute"
            if source.startswith((".", "/")):
                assert (REPO / source).exists(), f"{name} bind-mounts {source}, which is not in the repository"
            else:
                assert source in declared, f"{name} uses undeclared volume {source}"


def test_every_declared_volume_is_mounted_somewhere():
    mounted = {source for service in services().values() for source, _ in volume_entries(service)}
    assert sorted(set(compose().get("volumes", {})) - mounted) == []


def test_postgres_16_keeps_its_data_on_a_named_volume_and_runs_postgres_init():
    postgres = services()["postgres"]
    assert re.fullmatch(r"postgres:16\.\d+(-\w+)?", postgres["image"])
    mounts = {target: source for source, target in volume_entries(postgres)}
    assert mounts["/var/lib/postgresql/data"] in compose()["volumes"]
    assert mounts["/docker-entrypoint-initdb.d"] == "./postgres-init"
    assert postgres["environment"]["POSTGRES_PASSWORD_FILE"] == "/run/secrets/postgres_password"


def test_grafana_mounts_its_provisioning_and_dashboards_and_reads_the_admin_password_from_a_secret():
    grafana = services()["grafana"]
    mounts = {target: source for source, target in volume_entries(grafana)}
    assert mounts["/etc/grafana/provisioning"] == "./grafana/provisioning"
    provider = yaml.safe_load((REPO / "grafana/provisioning/dashboards/churnops.yml").read_text())["providers"][0]
    assert mounts[provider["options"]["path"]] == "./grafana/dashboards"
    assert grafana["environment"]["GF_SECURITY_ADMIN_PASSWORD__FILE"] == "/run/secrets/grafana_admin_password"
    assert "grafana_admin_password" in grafana["secrets"]


def test_prometheus_mounts_its_config_and_the_alert_rules_it_names():
    prometheus = services()["prometheus"]
    mounts = {target: source for source, target in volume_entries(prometheus)}
    assert mounts["/etc/prometheus/prometheus.yml"] == "./monitoring/prometheus.yml"
    config = yaml.safe_load((REPO / "monitoring/prometheus.yml").read_text())
    for rule_file in config["rule_files"]:
        assert f"/etc/prometheus/{rule_file}" in mounts, f"prometheus.yml loads {rule_file}, which is not mounted"


def test_prometheus_scrapes_the_api_and_the_exporter_at_their_compose_addresses():
    config = yaml.safe_load((REPO / "monitoring/prometheus.yml").read_text())
    targets = {job["job_name"]: job["static_configs"][0]["targets"] for job in config["scrape_configs"]}
    assert targets["churnops-api"] == ["api:8000"]
    assert targets["churnops-monitoring"] == ["monitoring-exporter:9108"]


def test_airflow_components_share_one_jwt_secret_and_read_every_credential_from_secret_files():
    for name in ("airflow-init", *AIRFLOW_COMPONENTS):
        environment = services()[name]["environment"]
        assert environment["AIRFLOW__API_AUTH__JWT_SECRET_CMD"] == "cat /run/secrets/airflow_jwt_secret"
        assert environment["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_CMD"] == "cat /run/secrets/airflow_db_url"
        assert environment["AIRFLOW__CORE__FERNET_KEY_CMD"] == "cat /run/secrets/airflow_fernet_key"
        assert environment["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
        assert environment["AIRFLOW__CELERY__BROKER_URL"] == "redis://redis:6379/0"
        assert environment["AIRFLOW__CELERY__RESULT_BACKEND_CMD"] == "sed s/^/db+/ /run/secrets/airflow_db_url"
        assert environment["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://airflow-apiserver:8080/execution/"
        for secret in ("airflow_db_url", "airflow_fernet_key", "airflow_jwt_secret"):
            assert secret in services()[name]["secrets"], f"{name} reads {secret} but does not mount it"


def test_two_celery_workers_run_one_task_each_on_the_redis_broker():
    deployed = deployed_compose()["services"]
    worker = deployed["airflow-worker"]
    assert worker["command"] == ["airflow", "celery", "worker"]
    assert worker["deploy"]["replicas"] == 2
    assert worker["environment"]["AIRFLOW__CELERY__WORKER_CONCURRENCY"] == "1"
    # The health check pings this container's own Celery node.
    assert 'inspect ping -d "celery@${HOSTNAME}"' in worker["healthcheck"]["test"][-1]
    for name in ("airflow-scheduler", "airflow-worker"):
        assert depends_on(services()[name])["redis"]["condition"] == "service_healthy", name
    redis = deployed["redis"]
    assert "ports" not in redis, "the broker is reachable on the compose network only"
    assert redis["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]


def test_the_feature_job_is_submitted_to_the_spark_master_from_airflow():
    scheduler_env = services()["airflow-scheduler"]["environment"]
    assert json.loads(scheduler_env["AIRFLOW_CONN_SPARK_DEFAULT"]) == {
        "conn_type": "spark",
        "host": "spark://spark-master",
        "port": 7077,
    }
    assert "spark://spark-master:7077" in services()["spark-worker"]["command"]


def test_mlflow_is_reachable_under_its_service_name():
    mlflow_start = (REPO / "docker/entrypoints/churnops-mlflow-entrypoint.sh").read_text()
    assert re.search(r'--allowed-hosts "\$\{MLFLOW_ALLOWED_HOSTS:-mlflow:\*,', mlflow_start)
    assert services()["mlflow"]["healthcheck"]["test"] == ["CMD", "churnops-mlflow-healthcheck.sh"]
    healthcheck = (REPO / "docker/entrypoints/churnops-mlflow-healthcheck.sh").read_text()
    assert '--header "Host: mlflow:${MLFLOW_PORT:-5000}"' in healthcheck and "/api/2.0/mlflow/" in healthcheck


def test_the_api_runs_several_workers_with_multiprocess_metrics_and_checks_readiness():
    api = services()["api"]
    assert int(api["environment"]["CHURNOPS_API_WORKERS"].split(":-")[-1].rstrip("}")) >= 2
    assert api["environment"]["PROMETHEUS_MULTIPROC_DIR"]
    assert api["healthcheck"]["test"][-1].endswith("/ready")
    assert api["environment"]["CHURNOPS_SECRETS_DIR"] == "/run/secrets"
    start = (REPO / "docker/entrypoints/churnops-api-entrypoint.sh").read_text()
    assert "exec churnops serve" in start and '--workers "${CHURNOPS_API_WORKERS' in start
    assert 'rm -rf "$PROMETHEUS_MULTIPROC_DIR"' in start


def test_images_are_pinned_and_built_ones_come_from_the_repository_dockerfile():
    dockerfile = (REPO / "docker/Dockerfile").read_text()
    stages = set(re.findall(r"^FROM \S+ AS (\w+)$", dockerfile, flags=re.MULTILINE))
    for name, service in services().items():
        if "build" in service:
            assert (REPO / service["build"]["context"] / service["build"]["dockerfile"]).is_file()
            assert service["build"]["target"] in stages, f"{name} builds unknown stage {service['build']['target']}"
        else:
            image = service["image"]
            assert re.search(r":[\w.-]*\d[\w.-]*$", image), f"{name} uses an unpinned image {image}"
    for base in re.findall(r"^FROM (\S+)", dockerfile, flags=re.MULTILINE):
        assert base in stages or re.search(r":\S*\d", base), f"Dockerfile base image {base} is not pinned"


def test_services_from_churnops_images_run_as_a_non_root_user():
    for name, service in services().items():
        if "build" in service:
            assert service.get("user", "").split(":")[0] not in ("", "0", "root"), f"{name} runs as root"
    assert "\nUSER 50000\n" in (REPO / "docker/Dockerfile").read_text()


# Keys that hold a credential themselves (not a path to one, like CHURNOPS_SECRETS_DIR).
SECRET_NAME = re.compile(r"(PASSWORD|SECRET|TOKEN|_KEY|DATABASE_URL|DB_URL|SQL_ALCHEMY_CONN)$", re.IGNORECASE)


def test_no_credential_is_written_in_the_compose_file():
    text = COMPOSE_FILE.read_text()
    assert not re.search(r"://[^/\s:@]+:[^/\s@]+@", text), "a URL with credentials is written in docker-compose.yml"
    for name, service in services().items():
        for key, value in (service.get("environment") or {}).items():
            if SECRET_NAME.search(key) and not key.endswith(("_FILE", "_CMD")):
                pytest.fail(f"{name} sets {key} in the environment: read it from a /run/secrets file instead")
            if key.endswith(("_FILE", "_CMD")):
                assert "/run/secrets/" in str(value), f"{name}: {key} does not read a Docker secret"


def test_every_variable_in_the_compose_file_has_a_default_or_fails_fast():
    """`${VAR:-default}` or `${VAR:?message}`: never a variable that silently becomes empty."""
    lines = [line for line in COMPOSE_FILE.read_text().splitlines() if not line.lstrip().startswith("#")]
    text = "\n".join(lines).replace("$$", "")  # `$$` is compose's escape for a literal `$`
    assert re.findall(r"\$\w+", text) == [], "use the braced ${VAR:-default} form"
    silent = [expr for expr in re.findall(r"\$\{([^}]*)\}", text) if not re.match(r"\w+:?[-?]", expr)]
    assert silent == [], f"variables without a default or a :? message: {silent}"
