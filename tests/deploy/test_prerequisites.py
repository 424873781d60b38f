"""`make test` checks what the suite needs and says what is missing; only CI's .ci/run installs or starts anything."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

from tests.deploy.support import REPO

CHECK = REPO / ".ci" / "check-prerequisites"
# Commands that install, start or stop something. A shim of each records that it was called.
INTRUSIVE = ("apt-get", "apt", "dpkg", "pg_ctlcluster", "pg_ctl", "systemctl", "service", "pkill", "killall", "kill")


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]  # nothing listens there once the probe is closed


def _check(path: str, postgres_url: str, redis_url: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": path, "CHURNOPS_TEST_POSTGRES_URL": postgres_url}
    if redis_url is not None:
        env["CHURNOPS_TEST_REDIS_URL"] = redis_url
    env.pop("JAVA_HOME", None)
    return subprocess.run([sys.executable, str(CHECK)], env=env, capture_output=True, text=True, timeout=120)


def _shims(folder: Path, called: Path) -> str:
    folder.mkdir()
    for name in INTRUSIVE:
        shim = folder / name
        shim.write_text(f'#!/bin/sh\necho "{name} $*" >> "{called}"\nexit 0\n')
        shim.chmod(0o755)
    return str(folder)


def test_each_missing_prerequisite_is_named_with_the_command_that_fixes_it(tmp_path: Path) -> None:
    called = tmp_path / "called.txt"
    result = _check(
        _shims(tmp_path / "bin", called),
        f"postgresql://root@127.0.0.1:{_closed_port()}/test",
        f"redis://127.0.0.1:{_closed_port()}/0",
    )
    assert result.returncode != 0
    assert "nothing was installed or started" in result.stderr
    for expected in (
        "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start",
        "apt-get install -y redis-server && redis-server --daemonize yes --bind 127.0.0.1 --port 6379",
        "promtool is not on PATH; fix: apt-get install -y prometheus",
        "prometheus is not on PATH; fix: apt-get install -y prometheus",
        "fix: apt-get install -y openjdk-17-jre-headless",
    ):
        assert expected in result.stderr, result.stderr
    assert not called.exists(), f"the check ran {called.read_text()}"


def test_the_check_passes_where_everything_is_in_place() -> None:
    from tests.deploy.support import POSTGRES_ADMIN_URL

    result = _check(os.environ["PATH"], POSTGRES_ADMIN_URL)
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.findall(r"^(\S+(?: \S+)?)\s+ok$", result.stdout, flags=re.MULTILINE) == [
        "PostgreSQL",
        "Redis",
        "promtool",
        "prometheus",
        "Java 17+",
        "chromium",
        "JDBC driver",
    ]


def _recipe(target: str) -> str:
    """The commands `make <target>` would run (make --dry-run prints them, `@` ones included)."""
    dry = subprocess.run(["make", "--dry-run", "--always-make", target], cwd=REPO, capture_output=True, text=True)
    assert dry.returncode == 0, dry.stderr
    return dry.stdout


def test_make_test_checks_prerequisites_and_installs_starts_or_kills_nothing() -> None:
    recipe = _recipe("test")
    assert ".ci/check-prerequisites" in recipe
    called_scripts = set(re.findall(r"\.ci/[\w.-]+", recipe))
    assert called_scripts == {".ci/check-prerequisites"}, called_scripts
    for command in INTRUSIVE:
        assert not re.search(rf"(^|[\s;&|]){re.escape(command)}\s", recipe), f"`make test` runs {command}"


def test_make_stack_up_checks_the_same_prerequisites() -> None:
    assert ".ci/check-prerequisites" in _recipe("stack-up")


def test_ci_installs_and_starts_what_it_needs_then_runs_the_readmes_test_command() -> None:
    ci = (REPO / ".ci" / "run").read_text()
    assert "apt-get install" in ci and "pg_ctlcluster" in ci
    assert "apt_install redis-server" in ci and "redis-server --daemonize yes" in ci
    assert ci.rstrip().endswith("make test")
    assert "make test" in (REPO / "README.md").read_text()
    assert not re.search(r"\b(pkill|killall)\b", ci), "CI must not kill processes by name"
