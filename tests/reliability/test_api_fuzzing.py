"""API fuzzing with schemathesis against the live OpenAPI schema of the real API (uvicorn on loopback, a real
champion, PostgreSQL with the online feature table and the prediction log): every operation, with and without
credentials, valid and invalid inputs generated from the schema. No response may be a 5xx, and every response
must conform to the schema (status code, content type, body, headers); invalid inputs must be refused and an
operation that declares auth must enforce it."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator

import httpx
import pytest

from tests.reliability.figures import record
from tests.serving.conftest import Server, start_server

API_KEY = "fuzz-api-key-0123456789"
ADMIN_TOKEN = "fuzz-admin-token-9876543210"
CREDENTIALS = {"X-API-Key": API_KEY, "Authorization": f"Bearer {ADMIN_TOKEN}"}
MAX_BATCH_ROWS = 20
# Generated cases per operation, generation mode and credential set: bounded so the module takes well under a
# minute on two busy cores, yet enough to reach every field's type, bound and format.
EXAMPLES = 30
OPERATIONS = (
    "POST /predict",
    "POST /batch_predict",
    "GET /health",
    "GET /ready",
    "GET /model",
    "GET /metrics",
    "POST /admin/reload",
)


@pytest.fixture(scope="module")
def live_api(published_platform, tmp_path_factory) -> Iterator[Server]:
    """`churnops serve` with an API key, an admin token, batch and body limits and the platform database."""
    server = start_server(
        published_platform,
        tmp_path_factory.mktemp("fuzz"),
        env={
            "CHURNOPS_DATABASE_URL": published_platform.database_url.get_secret_value(),
            "CHURNOPS_SERVING__API_KEY": API_KEY,
            "CHURNOPS_SERVING__ADMIN_TOKEN": ADMIN_TOKEN,
            "CHURNOPS_SERVING__MAX_BATCH_ROWS": str(MAX_BATCH_ROWS),
            "CHURNOPS_SERVING__MAX_BODY_BYTES": "200000",
        },
    )
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def schema(live_api):
    import schemathesis

    loaded = schemathesis.openapi.from_url(f"{live_api.base_url}/openapi.json")
    loaded.config.generation.update(
        # Credentials are the test's to choose (valid, or none): generated ones would only ever be wrong keys.
        with_security_parameters=False,
        # Undeclared query parameters are ignored by design (tracing tags, cache busters), as most HTTP APIs do;
        # undeclared *body* fields are refused, and that is fuzzed.
        allow_extra_parameters=False,
    )
    return loaded


@pytest.fixture(scope="module")
def tally(live_api) -> Iterator[Counter]:
    """Responses by (credentials, status) over the module; the figures are recorded at the end."""
    counts: Counter = Counter()
    yield counts
    record(
        "api_fuzzing",
        operations=len(OPERATIONS),
        requests_sent=sum(counts.values()),
        server_errors_5xx=sum(n for (_, status), n in counts.items() if status >= 500),
        by_status={f"{who} {status}": n for (who, status), n in sorted(counts.items())},
        examples_per_operation_mode_and_credentials=EXAMPLES,
    )


def test_the_live_schema_lists_exactly_the_fuzzed_operations(schema) -> None:
    """A new endpoint must be added to OPERATIONS, so that it is fuzzed too."""
    assert sorted(result.ok().label for result in schema.get_all_operations()) == sorted(OPERATIONS)


def _has_inputs(operation) -> bool:
    raw = operation.definition.raw
    return bool(raw.get("requestBody") or raw.get("parameters"))


@pytest.mark.parametrize("credentials", ["with_credentials", "without_credentials"])
@pytest.mark.parametrize("label", OPERATIONS)
def test_fuzzed_requests_never_get_a_5xx_and_every_response_conforms_to_the_schema(
    schema, tally, label, credentials
) -> None:
    from schemathesis import GenerationMode
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        ignored_auth,
        negative_data_rejection,
        response_headers_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    method, path = label.split(" ")
    operation = schema[path][method]
    headers = CREDENTIALS if credentials == "with_credentials" else None
    conformance = [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_headers_conformance,
        response_schema_conformance,
    ]
    # Operations without a body or parameters have no invalid input to generate.
    modes = [GenerationMode.POSITIVE] + ([GenerationMode.NEGATIVE] if _has_inputs(operation) else [])
    for mode in modes:
        checks = list(conformance)
        if mode is GenerationMode.NEGATIVE:
            checks.append(negative_data_rejection)
        if headers is not None:
            checks.append(ignored_auth)  # it probes the same request without and with wrong credentials

        run_generated_cases(operation, mode, headers, checks, lambda status: tally.update([(credentials, status)]))


def run_generated_cases(operation, mode, headers, checks, count: Callable[[int], None]) -> None:
    """Send EXAMPLES generated cases of `operation` (seeded) and validate every response with `checks`."""
    from hypothesis import HealthCheck, Phase, given, settings

    @given(case=operation.as_strategy(mode))
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,  # the same cases on every run: a failure here reproduces
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
    )
    def fuzz(case) -> None:
        # A generous ceiling: a loaded machine may take seconds to answer (a reload reads the registry).
        response = case.call_and_validate(headers=headers, checks=checks, timeout=60)
        count(response.status_code)

    fuzz()


def test_the_api_still_answers_after_the_fuzzing(live_api) -> None:
    assert httpx.get(f"{live_api.base_url}/ready", timeout=5).json()["ready"] is True
