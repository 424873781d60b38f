"""Prometheus configuration, alert rules and panel queries, checked by Prometheus' own promtool: syntax of both
configs and the rules, the alert unit tests, and the PromQL of every Grafana panel."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from tests.deploy.support import (
    PROMETHEUS_BUILTIN_SERIES,
    REPO,
    exporter_contract,
    grafana_expr_for_prometheus,
    metric_names_in,
    panel_targets,
    promtool,
    serving_metric_names,
)

ALERTS = REPO / "monitoring" / "alerts.yml"
REQUIRED_ALERTS = {
    "ChurnopsApiHighErrorRate",
    "ChurnopsApiHighLatencyP99",
    "ChurnopsFeatureDrift",
    "ChurnopsNoRecentTraining",
    "ChurnopsServingModelBehindChampion",
}


def run_promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool(), *args], capture_output=True, text=True, timeout=120, cwd=REPO)


def test_both_prometheus_configs_pass_promtool():
    for config in ("monitoring/prometheus.yml", "monitoring/prometheus.native.yml"):
        result = run_promtool("check", "config", config)
        assert result.returncode == 0, result.stdout + result.stderr


def test_alert_rules_pass_promtool():
    result = run_promtool("check", "rules", str(ALERTS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_alert_unit_tests_pass():
    result = run_promtool("test", "rules", "tests/deploy/alerts_test.yml", "tests/deploy/alerts_training_test.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_alert_unit_tests_fail_when_a_threshold_changes(tmp_path: Path):
    """The unit tests pin the thresholds: the error-rate alert at 50 % instead of 5 % fails them."""
    rules_dir = tmp_path / "monitoring"
    rules_dir.mkdir()
    (rules_dir / "alerts.yml").write_text(ALERTS.read_text().replace("> 0.05", "> 0.5"))
    tests_dir = tmp_path / "tests" / "deploy"
    tests_dir.mkdir(parents=True)
    (tests_dir / "alerts_test.yml").write_text((REPO / "tests/deploy/alerts_test.yml").read_text())
    result = subprocess.run(
        [promtool(), "test", "rules", "tests/deploy/alerts_test.yml"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert result.returncode != 0 and "ChurnopsApiHighErrorRate" in result.stdout + result.stderr


def test_the_required_alerts_exist():
    rules = [rule for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]]
    assert REQUIRED_ALERTS <= {rule.get("alert") for rule in rules}


def test_alert_rules_query_only_known_metrics():
    known = serving_metric_names() | set(exporter_contract()) | PROMETHEUS_BUILTIN_SERIES
    rules = [rule for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]]
    unknown = {
        (rule["alert"], metric) for rule in rules for metric in metric_names_in(rule["expr"]) if metric not in known
    }
    assert unknown == set()


def test_every_prometheus_panel_query_is_valid_promql(tmp_path: Path):
    """Each panel expression (Grafana macros replaced) as a recording rule: promtool parses every one."""
    rules = [
        {"record": f"churnops_panel:query_{index}", "expr": grafana_expr_for_prometheus(target["expr"])}
        for index, (_, _, target) in enumerate(panel_targets())
        if "expr" in target
    ]
    assert rules, "no Prometheus panel found"
    rule_file = tmp_path / "panels.yml"
    rule_file.write_text(yaml.safe_dump({"groups": [{"name": "grafana-panels", "rules": rules}]}, sort_keys=False))
    result = run_promtool("check", "rules", str(rule_file))
    assert result.returncode == 0, result.stdout + result.stderr
