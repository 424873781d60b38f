"""What the compose file exposes and to whom: published ports on the loopback interface unless one variable says
otherwise, MLflow behind its basic-auth app, Prometheus without its lifecycle and admin APIs, and each churnops
service mounting its own credentials, the same ones its native-stack twin gets."""

from __future__ import annotations

from typing import Any

from tests.deploy.support import REPO, compose, compose_spec_errors, interpolate, native_stack
from tests.deploy.test_compose import deployed_compose, services


def published_ports(document: dict[str, Any]) -> dict[str, list[tuple[str, str, str]]]:
    """(host address, host port, container port) of every published port, by service; short or long syntax.
    An empty address is what compose then uses: every interface."""
    found: dict[str, list[tuple[str, str, str]]] = {}
    for name, service in document["services"].items():
        for mapping in service.get("ports", []):
            if isinstance(mapping, dict):
                entry = (str(mapping.get("host_ip", "")), str(mapping.get("published", "")), str(mapping["target"]))
            else:
                *address, host_port, container_port = ["", "", *str(mapping).split(":")][-3:]
                entry = (address[0], host_port, container_port)
            found.setdefault(name, []).append(entry)
    return found


def test_every_published_port_listens_on_the_loopback_interface_by_default():
    """Reaching a UI or an API from the network is a decision, not a default: no address means every interface."""
    published = published_ports(deployed_compose())
    assert set(published) >= {"airflow-apiserver", "mlflow", "api", "prometheus", "grafana", "spark-master"}
    opened = {name: ports for name, ports in published.items() if any(host != "127.0.0.1" for host, _, _ in ports)}
    assert opened == {}


def test_one_variable_publishes_every_port_on_the_network_deliberately():
    document = interpolate(compose(), {"CHURNOPS_PUBLISH_ADDRESS": "0.0.0.0", "API_PORT": "18000"})
    assert compose_spec_errors(document) == []
    published = published_ports(document)
    assert {host for ports in published.values() for host, _, _ in ports} == {"0.0.0.0"}
    assert ("0.0.0.0", "18000", "8000") in published["api"]
    assert "CHURNOPS_PUBLISH_ADDRESS" in (REPO / "docs" / "deployment.md").read_text()


def test_mlflow_runs_its_basic_auth_app_with_credentials_from_secrets():
    mlflow_start = (REPO / "docker/entrypoints/churnops-mlflow-entrypoint.sh").read_text()
    assert "--app-name basic-auth" in mlflow_start
    assert "churnops-mlflow-auth.py" in mlflow_start
    mlflow = services()["mlflow"]
    assert set(mlflow["secrets"]) == {
        "mlflow_db_url",
        "mlflow_auth_db_url",
        "mlflow_admin_password",
        "mlflow_reader_password",
        "mlflow_flask_secret_key",
    }
    assert "/tmp" in mlflow["tmpfs"] and mlflow["environment"]["MLFLOW_AUTH_CONFIG_DIR"].startswith("/tmp/")


def test_prometheus_runs_without_the_lifecycle_and_admin_apis():
    """`--web.enable-lifecycle` lets whoever reaches the port stop (`/-/quit`) or reload Prometheus."""
    flags = services()["prometheus"]["command"]
    assert not [flag for flag in flags if flag.startswith(("--web.enable-lifecycle", "--web.enable-admin-api"))]


def secret_targets(service: dict[str, Any]) -> dict[str, str]:
    """File name inside the container -> the declared secret mounted there."""
    mounted = {}
    for secret in service.get("secrets", []):
        if isinstance(secret, str):
            mounted[secret] = secret
        else:
            mounted[secret.get("target", secret["source"])] = secret["source"]
    return mounted


def test_each_churnops_service_sees_its_own_credentials_as_in_the_native_stack():
    """The API reads the database as its least-privilege role and MLflow as the read-only account; the DAG tasks
    as the owner and the administrator. Compose and the native stack hand out the same files under the same names."""
    stack = native_stack()
    views = stack.SECRET_VIEWS
    service_of_view = {"platform": "airflow-scheduler", "api": "api", "monitoring-exporter": "monitoring-exporter"}
    for view, name in service_of_view.items():
        churnops_files = {
            target: source
            for target, source in secret_targets(services()[name]).items()
            if target.startswith("churnops_")
        }
        assert churnops_files == views[view], name
    usernames = {
        "airflow-scheduler": stack.MLFLOW_ADMIN_USERNAME,
        "api": stack.MLFLOW_READER_USERNAME,
        "monitoring-exporter": stack.MLFLOW_READER_USERNAME,
    }
    for name, username in usernames.items():
        environment = deployed_compose()["services"][name]["environment"]
        assert environment["CHURNOPS_MLFLOW_TRACKING_USERNAME"] == username, name
