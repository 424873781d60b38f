"""Security: auth where configured without leaking anything, admin separate from the API key, SQL built with
parameters only, no secret in the repository, and credentials that reach the services only from secret files and
never on a command line. (Body size and batch limits, and non-root containers, are proved in tests/serving and
tests/deploy: see docs/reliability.md.)"""

from __future__ import annotations

import ast
import math
import os
import re
import secrets
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from churnops.config import Settings
from churnops.serving.app import create_app
from churnops.serving.exposure import OpenExposureError, refuse_open_exposure
from tests.reliability.figures import record

REPO = Path(__file__).resolve().parents[2]
API_KEY = secrets.token_hex(16)
ADMIN_TOKEN = secrets.token_hex(16)
JSON_TYPE = {"content-type": "application/json"}  # admin calls must be JSON (a web page cannot forge them)


# ---------------------------------------------------------------------------------------------------------------
# Auth: 401/403 that say nothing an attacker can use
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def guarded(trained_platform):
    serving = trained_platform.settings.serving.model_copy(
        update={"api_key": SecretStr(API_KEY), "admin_token": SecretStr(ADMIN_TOKEN)}
    )
    with TestClient(create_app(trained_platform.settings.model_copy(update={"serving": serving}))) as client:
        yield client


def test_a_missing_and_a_wrong_api_key_get_the_same_401_that_echoes_no_secret(guarded, example_request) -> None:
    wrong = API_KEY[:-1] + ("0" if API_KEY[-1] != "0" else "1")  # right but for the last character
    answers = [
        guarded.post(path, json=body, headers=headers)
        for path, body in (("/predict", example_request), ("/batch_predict", {"instances": [example_request]}))
        for headers in ({}, {"X-API-Key": wrong}, {"X-API-Key": ADMIN_TOKEN}, {"Authorization": f"Bearer {API_KEY}"})
    ]
    assert {answer.status_code for answer in answers} == {401}
    assert len({answer.text for answer in answers}) == 1, "the refusal must not tell a near miss from no key"
    for answer in answers:
        assert API_KEY not in answer.text and ADMIN_TOKEN not in answer.text and wrong not in answer.text
        assert answer.headers["www-authenticate"] == "APIKey"
        # The refusal comes before the body is read: nothing of the request (features, customer_id) is echoed.
        assert example_request["customer_id"] not in answer.text


def test_the_admin_endpoint_takes_only_the_admin_token(guarded, trained_platform) -> None:
    refused = [
        guarded.post("/admin/reload", headers=headers | JSON_TYPE)
        for headers in (
            {},
            {"X-API-Key": API_KEY},
            {"Authorization": f"Bearer {API_KEY}"},
            {"Authorization": f"Bearer {ADMIN_TOKEN}x"},
            {"Authorization": f"Basic {ADMIN_TOKEN}"},
            {"X-API-Key": ADMIN_TOKEN},
        )
    ]
    assert {answer.status_code for answer in refused} == {403}
    assert len({answer.text for answer in refused}) == 1
    assert all(API_KEY not in a.text and ADMIN_TOKEN not in a.text for a in refused)
    allowed = guarded.post("/admin/reload", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"} | JSON_TYPE)
    assert allowed.status_code == 200 and allowed.json()["model_version"] == trained_platform.model_version


def test_probes_and_scrapes_need_no_credentials_and_reveal_none(guarded) -> None:
    for path in ("/health", "/ready", "/model", "/metrics"):
        answer = guarded.get(path)
        assert answer.status_code == 200, path
        assert API_KEY not in answer.text and ADMIN_TOKEN not in answer.text, f"{path} shows a credential"


@pytest.mark.parametrize(
    ("host", "keys", "refused_for"),
    [
        ("0.0.0.0", {}, "serving.api_key and serving.admin_token"),
        ("10.1.2.3", {"api_key": SecretStr(API_KEY)}, "serving.admin_token"),
        ("api.example.internal", {"admin_token": SecretStr(ADMIN_TOKEN)}, "serving.api_key"),
    ],
)
def test_the_api_refuses_to_listen_beyond_loopback_without_its_key_and_token(host, keys, refused_for) -> None:
    serving = Settings().serving.model_copy(update={"host": host, **keys})
    with pytest.raises(OpenExposureError, match=rf"refusing to serve on {re.escape(host)} without {refused_for}"):
        refuse_open_exposure(serving)


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost"])
def test_the_api_needs_no_key_on_loopback(host) -> None:
    refuse_open_exposure(Settings().serving.model_copy(update={"host": host}))


def test_churnops_serve_says_no_before_starting_uvicorn(tmp_path) -> None:
    keyless = {k: v for k, v in os.environ.items() if not k.startswith("CHURNOPS_SERVING__")}
    answer = subprocess.run(
        [sys.executable, "-m", "churnops.cli", "serve", "--host", "0.0.0.0", "--port", "1"],
        env=keyless | {"CHURNOPS_HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert answer.returncode == 2
    said = " ".join(answer.stderr.split())  # the console writes to stderr and wraps long lines
    assert "refusing to serve on 0.0.0.0 without serving.api_key and serving.admin_token" in said


# ---------------------------------------------------------------------------------------------------------------
# Parameterized SQL only
# ---------------------------------------------------------------------------------------------------------------

# Methods that run SQL text: DB-API cursors, psycopg2 helpers, pandas, DuckDB connections.
SQL_METHODS = {
    "execute",
    "executemany",
    "execute_values",
    "mogrify",
    "copy_expert",
    "read_sql",
    "read_sql_query",
    "sql",
}
# Code the platform runs; tests build throwaway databases with generated names and are left out.
PLATFORM_CODE = ("churnops/", "jobs/", "serving/", "monitoring/", "airflow/", "scripts/", "benchmarks/")


def _safe_interpolation(node: ast.expr) -> bool:
    """Values that cannot carry user data into SQL: an int() cast, or a module constant (UPPER_CASE), joined."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("int", "float"):
        return True
    if isinstance(node, ast.Name) and node.id.isupper():
        return True
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "join"
        and all(isinstance(arg, ast.Name) and arg.id.isupper() for arg in node.args)
    )


def _formats_values_into_text(node: ast.expr) -> bool:
    """An f-string, `%` or `+` on a string literal, or `"...".format()`: SQL text built from values."""
    if isinstance(node, ast.JoinedStr):
        return any(isinstance(part, ast.FormattedValue) and not _safe_interpolation(part.value) for part in node.values)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mod | ast.Add):
        sides = (node.left, node.right)
        has_text = any(isinstance(s, ast.Constant) and isinstance(s.value, str) for s in sides)
        return has_text or any(_formats_values_into_text(s) for s in sides)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "format":
        # psycopg2.sql.SQL("...").format(Identifier(...)) composes safely; only a plain string literal is text.
        return isinstance(node.func.value, ast.Constant) and isinstance(node.func.value.value, str)
    return False


def string_formatted_sql(source: str, filename: str) -> list[str]:
    """Calls of SQL_METHODS whose SQL argument (or the value last assigned to the variable passed) is built by
    string formatting, as `file:line: code`."""
    tree = ast.parse(source, filename)
    found = []
    for scope in ast.walk(tree):
        if not isinstance(scope, ast.Module | ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        assigned: dict[str, list[ast.expr]] = {}
        for node in ast.walk(scope):
            if isinstance(node, ast.Assign):
                for target in node.targets:
                    if isinstance(target, ast.Name):
                        assigned.setdefault(target.id, []).append(node.value)
        for node in ast.walk(scope):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            if node.func.attr not in SQL_METHODS or not node.args:
                continue
            statement = node.args[1] if node.func.attr == "execute_values" and len(node.args) > 1 else node.args[0]
            candidates = [statement, *(assigned.get(statement.id, []) if isinstance(statement, ast.Name) else [])]
            if any(_formats_values_into_text(candidate) for candidate in candidates):
                found.append(f"{filename}:{node.lineno}: {ast.unparse(node)[:120]}")
    return sorted(set(found))


def tracked_files(*patterns: str) -> list[str]:
    """Files git tracks or would track (new files not ignored), relative to the repository."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", *patterns],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    return [name for name in listed if (REPO / name).is_file()]


def test_the_sql_check_catches_every_way_of_formatting_values_into_sql() -> None:
    hostile = """
def f(cur, conn, name, table):
    cur.execute(f"SELECT * FROM scores WHERE customer_id = '{name}'")
    cur.execute("DELETE FROM scores WHERE dataset = '%s'" % name)
    cur.execute("SELECT * FROM " + table)
    conn.sql("SELECT {}".format(name))
    statement = f"DROP TABLE {table}"
    cur.execute(statement)
"""
    safe = """
def g(cur, name, threads):
    cur.execute("SELECT * FROM scores WHERE customer_id = %s", (name,))
    cur.execute(sql.SQL("DROP DATABASE {}").format(sql.Identifier(name)))
    cur.execute(f"SET threads = {int(threads)}")
    cur.execute(f"COPY t ({', '.join(LOG_COLUMNS)}) FROM STDIN")
"""
    assert len(string_formatted_sql(hostile, "hostile.py")) == 5
    assert string_formatted_sql(safe, "safe.py") == []


def test_the_platform_passes_values_to_sql_only_as_parameters() -> None:
    files = [name for name in tracked_files("*.py") if name.startswith(PLATFORM_CODE)]
    assert len(files) > 30, files  # the scan sees the code
    offending = [line for name in files for line in string_formatted_sql((REPO / name).read_text(), name)]
    record("parameterized_sql", python_files_scanned=len(files), string_formatted_sql_calls=len(offending))
    assert offending == []


# ---------------------------------------------------------------------------------------------------------------
# No secret in the repository
# ---------------------------------------------------------------------------------------------------------------

KEY_PATTERNS = {
    "AWS access key id": re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
    "private key": re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    "GitHub token": re.compile(r"\bgh[pousr]_[A-Za-z0-9]{36,}|\bgithub_pat_[A-Za-z0-9_]{40,}"),
    "Slack token": re.compile(r"\bxox[abprs]-[A-Za-z0-9-]{10,}"),
    "Google API key": re.compile(r"\bAIza[0-9A-Za-z_-]{35}\b"),
    "Stripe live key": re.compile(r"\b[rs]k_live_[0-9A-Za-z]{20,}"),
    "JSON web token": re.compile(r"\beyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}"),
}
# A literal after a credential-like name, or the password part of a URL.
ASSIGNED_SECRET = re.compile(
    r"(?i)\b[\w.-]*(?:password|passwd|secret|token|api_?key|access_?key|private_?key)[\w.-]*[\"']?\s*[:=]\s*"
    r"[\"']([^\"'\s]{8,})[\"']"
)
URL_PASSWORD = re.compile(r"\b[a-z][a-z0-9+.-]*://[^/\s:@'\"]+:([^/\s@'\"]+)@")
RANDOM_LOOKING = re.compile(r"[A-Za-z0-9+_=-]{32,}")
# References and placeholders, not values: shell/compose variables, f-string fields, printf, <...>, paths.
NOT_A_VALUE = re.compile(r"[$%{<]|^/|CHANGE_ME")
# Test and benchmark code configures throwaway local services with made-up credentials on purpose; there only
# real-world key formats count.
FIXTURE_CODE = ("tests/", "benchmarks/")


@dataclass(frozen=True)
class Finding:
    path: str
    line: int
    rule: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.rule}"


def shannon_entropy(text: str) -> float:
    counts = Counter(text)
    return -sum(n / len(text) * math.log2(n / len(text)) for n in counts.values())


def scan_for_secrets(path: str, text: str) -> list[Finding]:
    """Known key formats anywhere; literal credentials and random-looking tokens outside test fixtures."""

    def line_of(position: int) -> int:
        return text.count("\n", 0, position) + 1

    findings = [
        Finding(path, line_of(match.start()), rule)
        for rule, pattern in KEY_PATTERNS.items()
        for match in pattern.finditer(text)
    ]
    if path.startswith(FIXTURE_CODE):
        return findings
    for rule, pattern in (("literal credential", ASSIGNED_SECRET), ("password in a URL", URL_PASSWORD)):
        findings += [
            Finding(path, line_of(m.start()), rule) for m in pattern.finditer(text) if not NOT_A_VALUE.search(m[1])
        ]
    # Random tokens (base64 of random bytes has ~5 bits of entropy per character; words and hex hashes far less).
    findings += [
        Finding(path, line_of(m.start()), "random-looking token")
        for m in RANDOM_LOOKING.finditer(text)
        if shannon_entropy(m[0]) > 4.5
        and re.search(r"\d", m[0])
        and re.search(r"[a-z]", m[0])
        and re.search(r"[A-Z]", m[0])
    ]
    return findings


def test_the_secret_scanner_finds_planted_secrets_and_passes_placeholders() -> None:
    # Assembled at run time, so that this file itself holds no key in a known format.
    planted = {
        "config/aws.ini": "aws_access_key_id = " + "AKIA" + "QWERTYUIOPASDFGH\n",
        "deploy/key.pem": "-----BEGIN OPENSSH " + "PRIVATE KEY-----\nabc\n",
        "app/settings.py": f'API_TOKEN = "{secrets.token_hex(20)}"\n',
        "app/db.py": 'URL = "postgresql://churnops:hunter2hunter2@db:5432/churnops"\n',
        "docs/notes.md": f"the key was {secrets.token_urlsafe(32)} yesterday\n",
        "tests/test_x.py": "token = 'ghp_" + "a1B2" * 9 + "'\n",
    }
    flagged = {path for path, text in planted.items() if scan_for_secrets(path, text)}
    assert flagged == set(planted)
    placeholders = {
        "secrets/x.example": "postgresql://churnops:CHANGE_ME@postgres:5432/churnops\n",
        "docker/entry.sh": 'secret="${CHURNOPS_SECRETS_DIR:-/run/secrets}/mlflow_db_url"\n',
        "churnops/db.py": '"e.g. postgresql://churnops:<password>@127.0.0.1:5432/churnops"\n',
        "tests/test_api.py": 'API_KEY = "test-api-key"\n',
        "docs/hashes.md": "snapshot sha256 " + "0123456789abcdef" * 4 + "\n",
    }
    assert [finding for path, text in placeholders.items() for finding in scan_for_secrets(path, text)] == []


def test_no_file_in_the_repository_holds_a_secret() -> None:
    scanned, findings = 0, []
    for name in tracked_files():
        if name.endswith(".example"):
            continue  # placeholders by design; checked below to stay placeholders
        data = (REPO / name).read_bytes()
        if b"\0" in data[:8192]:
            continue  # binary (images)
        scanned += 1
        findings += scan_for_secrets(name, data.decode("utf-8", errors="replace"))
    record("secret_scan", files_scanned=scanned, findings=len(findings))
    assert scanned > 100
    assert [str(f) for f in findings] == []


def test_only_placeholder_secret_files_are_in_the_repository() -> None:
    in_secrets = tracked_files("secrets/")
    assert {Path(name).name for name in in_secrets if not name.endswith(".example")} == {"README.md"}
    for name in in_secrets:
        if name.endswith(".example"):
            assert "CHANGE_ME" in (REPO / name).read_text(), f"{name} is not a placeholder"


# ---------------------------------------------------------------------------------------------------------------
# Credentials reach the native stack only from secret files, and never on a command line
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def native_stack_with_secrets(tmp_path_factory):
    """scripts/native_stack.py's environment and services for a stack root whose secrets were generated."""
    sys.path.insert(0, str(REPO / "scripts"))
    import native_stack

    paths = native_stack.StackPaths(tmp_path_factory.mktemp("stack"))
    generated = subprocess.run(
        ["bash", str(REPO / "scripts" / "generate-secrets.sh"), str(paths.secrets)], capture_output=True, text=True
    )
    assert generated.returncode == 0, generated.stderr
    values = {path.name: path.read_text().strip() for path in paths.secrets.iterdir()}
    return native_stack, paths, values


def test_no_secret_value_is_in_the_native_stack_environment(native_stack_with_secrets) -> None:
    native_stack, paths, values = native_stack_with_secrets
    environment = native_stack.stack_environment(paths)
    leaked = [(key, name) for key, value in environment.items() for name, secret in values.items() if secret in value]
    assert leaked == []
    for key, value in environment.items():
        if re.search(r"(PASSWORD|SECRET|TOKEN|_KEY|DATABASE_URL|DB_URL|SQL_ALCHEMY_CONN)(_CMD|_FILE)?$", key):
            assert key.endswith(("_CMD", "_FILE")) and str(paths.secrets) in value, f"{key}={value}"


def test_no_native_stack_service_gets_a_secret_on_its_command_line(native_stack_with_secrets) -> None:
    """A command line is world-readable (`ps`, /proc/<pid>/cmdline); a secret read by `$(cat file)` into an
    argument ends up there once the shell runs it. Read it into the service's environment instead (as
    docker/entrypoints/churnops-mlflow-entrypoint.sh does with MLFLOW_BACKEND_STORE_URI)."""
    native_stack, paths, _ = native_stack_with_secrets
    # `$(cat <secrets>/x)` or `$(<x)` not on the right of a VAR= assignment.
    argument_from_secret = re.compile(r"(?<![\w]=)\"?\$\((?:cat |<)[^)]*" + re.escape(str(paths.secrets)))
    on_command_line = [
        f"{service.name}: {part[:120]}"
        for service in native_stack.services(paths)
        for part in service.command
        if argument_from_secret.search(part)
    ]
    assert on_command_line == []


def test_no_compose_service_is_switched_to_root() -> None:
    """Images built here run as UID 50000 (tests/deploy/test_compose.py); the third-party images (PostgreSQL,
    Prometheus, Grafana) keep their own unprivileged users, which a `user: root` override would undo."""
    from tests.deploy.support import compose

    users = {name: str(service.get("user", "")) for name, service in compose()["services"].items()}
    assert [name for name, user in users.items() if user.split(":")[0] in ("root", "0")] == []
