"""The time tests share the feature tests' Spark session fixture (one JVM per module)."""

from tests.features.conftest import spark  # noqa: F401 - a pytest fixture, used by name
