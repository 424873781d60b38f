"""Fixtures of the reliability suite: the serving tests' real request body, throwaway PostgreSQL database and
loopback servers are reused, not rebuilt (tests/serving/conftest.py)."""

from __future__ import annotations

import datetime as dt

import pytest
from pydantic import SecretStr

from churnops import online_store
from churnops.config import Settings
from churnops.snapshots import latest_snapshot_dir, load_snapshot
from tests.serving.conftest import example_request, platform_database_url  # noqa: F401 - fixtures re-exported
from tests.serving.test_hot_swap import restore_champion  # noqa: F401 - fixture re-exported


@pytest.fixture(scope="session")
def published_platform(trained_platform, platform_database_url) -> Settings:  # noqa: F811 - the fixture above
    """The trained platform with a migrated PostgreSQL database whose online feature table holds the customers
    at the scoring cutoff: the full configuration of a deployment (look-ups by customer_id, prediction log)."""
    settings = trained_platform.settings.model_copy(update={"database_url": SecretStr(platform_database_url)})
    frame, metadata = load_snapshot(latest_snapshot_dir(settings, trained_platform.contract.name))
    online_store.publish_online_features(
        settings,
        frame,
        trained_platform.contract.name,
        dt.date.fromisoformat(metadata.cutoffs["scoring"][0]),
        feature_columns=metadata.feature_columns,
        snapshot_hash=metadata.content_hash,
    )
    return settings
