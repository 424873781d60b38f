"""The online feature table on the real PostgreSQL, and `/predict` by customer_id alone."""

from __future__ import annotations

import datetime as dt
from contextlib import closing

import pandas as pd
import psycopg2
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from churnops import online_store
from churnops.features import CUTOFF, ENTITY_ID
from churnops.serving.app import create_app
from churnops.snapshots import latest_snapshot_dir, load_snapshot
from tests.serving.conftest import unreachable_database_url


@pytest.fixture(scope="module")
def snapshot(trained_platform):
    frame, metadata = load_snapshot(latest_snapshot_dir(trained_platform.settings, "synthetic"))
    return frame, metadata, dt.date.fromisoformat(metadata.cutoffs["scoring"][0])


@pytest.fixture(scope="module")
def db_settings(trained_platform, platform_database_url):
    serving = trained_platform.settings.serving.model_copy(update={"prediction_log_enabled": False})
    return trained_platform.settings.model_copy(
        update={"database_url": SecretStr(platform_database_url), "serving": serving}
    )


@pytest.fixture
def conn(platform_database_url):
    with closing(psycopg2.connect(platform_database_url)) as connection:
        yield connection


@pytest.fixture
def published(db_settings, snapshot) -> int:
    frame, metadata, cutoff = snapshot
    return online_store.publish_online_features(
        db_settings,
        frame,
        "synthetic",
        cutoff,
        feature_columns=metadata.feature_columns,
        snapshot_hash=metadata.content_hash,
    )


@pytest.fixture(scope="module")
def client(db_settings):
    with TestClient(create_app(db_settings)) as client:
        yield client


def rows_at(frame: pd.DataFrame, cutoff: dt.date) -> pd.DataFrame:
    return frame[frame[CUTOFF] == pd.Timestamp(cutoff)]


def test_publish_writes_one_row_per_customer_at_the_cutoff(published, conn, snapshot) -> None:
    frame, metadata, cutoff = snapshot
    assert published == len(rows_at(frame, cutoff))
    current = online_store.published_set(conn, "synthetic")
    assert (current.cutoff, current.row_count, current.snapshot_hash) == (cutoff, published, metadata.content_hash)
    assert current.feature_columns == metadata.feature_columns


def test_lookup_returns_the_customers_features_with_missing_values_as_null(published, conn, snapshot) -> None:
    frame, metadata, cutoff = snapshot
    row = rows_at(frame, cutoff).iloc[0]
    found = online_store.lookup(conn, "synthetic", str(row[ENTITY_ID]))
    assert found is not None and found.cutoff == cutoff
    for name in metadata.feature_columns:
        expected = row[name]
        if pd.isna(expected):
            assert found.features[name] is None, name
        elif isinstance(expected, str):
            assert found.features[name] == expected
        else:
            assert found.features[name] == pytest.approx(float(expected), rel=1e-14), name
    assert online_store.lookup(conn, "synthetic", "no-such-customer") is None


def test_republishing_replaces_the_whole_set(published, db_settings, conn, snapshot) -> None:
    frame, metadata, cutoff = snapshot
    subset = rows_at(frame, cutoff).head(10)
    assert online_store.publish_online_features(db_settings, subset, "synthetic", cutoff) == 10
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM churnops.online_features WHERE dataset = 'synthetic'")
        assert cur.fetchone()[0] == 10
    dropped = rows_at(frame, cutoff).iloc[20][ENTITY_ID]
    assert online_store.lookup(conn, "synthetic", str(dropped)) is None


def test_a_publication_failing_mid_copy_leaves_the_previous_set(published, db_settings, conn, snapshot) -> None:
    frame, metadata, cutoff = snapshot
    broken = rows_at(frame, cutoff).copy()
    # PostgreSQL text cannot hold a NUL byte: the COPY fails on the last row, after the DELETE ran.
    broken.iloc[-1, broken.columns.get_loc(ENTITY_ID)] = "bad\x00id"
    with pytest.raises(psycopg2.Error):
        online_store.publish_online_features(db_settings, broken, "synthetic", cutoff)
    current = online_store.published_set(conn, "synthetic")
    assert current.row_count == published
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM churnops.online_features WHERE dataset = 'synthetic'")
        assert cur.fetchone()[0] == published


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda f: f.iloc[0:0], "no rows at cutoff"),
        (lambda f: pd.concat([f, f.head(1)]), "unique"),
        (lambda f: f.drop(columns=[ENTITY_ID]), "customer_id"),
    ],
    ids=["empty", "duplicate-customer", "no-customer-id"],
)
def test_bad_frames_are_refused_before_touching_the_database(db_settings, snapshot, change, message) -> None:
    frame, _, cutoff = snapshot
    with pytest.raises(ValueError, match=message):
        online_store.publish_online_features(db_settings, change(rows_at(frame, cutoff)), "synthetic", cutoff)


def test_predict_by_customer_id_scores_the_published_row_like_the_full_record(
    published, client, snapshot, example_request
) -> None:
    _, _, cutoff = snapshot
    by_id = client.post("/predict", json={"customer_id": example_request["customer_id"]})
    assert by_id.status_code == 200, by_id.text
    full = client.post("/predict", json=example_request).json()
    body = by_id.json()
    assert body["feature_source"] == "online_store"
    assert body["features_cutoff"] == cutoff.isoformat()
    assert body["probability"] == pytest.approx(full["probability"], rel=1e-12)


def test_batch_mixes_published_customers_and_full_records(published, client, snapshot, example_request) -> None:
    frame, _, cutoff = snapshot
    other = str(rows_at(frame, cutoff).iloc[5][ENTITY_ID])
    instances = [{"customer_id": other}, example_request, {"customer_id": example_request["customer_id"]}]
    body = client.post("/batch_predict?explain=true", json={"instances": instances}).json()
    sources = [p["feature_source"] for p in body["predictions"]]
    assert sources == ["online_store", "request", "online_store"]
    assert body["predictions"][1]["probability"] == pytest.approx(body["predictions"][2]["probability"], rel=1e-12)
    assert body["predictions"][0]["explanation"]["top_features"]


def test_unknown_customer_is_a_404_pointing_at_the_customer_id_without_echoing_it(
    published, client, example_request
) -> None:
    response = client.post("/predict", json={"customer_id": "nobody-by-that-id"})
    assert response.status_code == 404
    assert response.json()["detail"][0]["loc"] == ["customer_id"]
    assert "nobody-by-that-id" not in response.text
    known = {"customer_id": example_request["customer_id"]}
    batch = client.post("/batch_predict", json={"instances": [known, {"customer_id": "ghost"}]})
    assert batch.status_code == 404
    assert batch.json()["detail"][0]["loc"] == ["instances", 1, "customer_id"]
    assert "ghost" not in batch.text


def test_published_features_missing_a_model_feature_are_a_409_naming_it_without_the_id(
    published, db_settings, client, snapshot, example_request
) -> None:
    frame, metadata, cutoff = snapshot
    without_age = [c for c in metadata.feature_columns if c != "age"]
    online_store.publish_online_features(db_settings, frame, "synthetic", cutoff, feature_columns=without_age)
    response = client.post("/predict", json={"customer_id": example_request["customer_id"]})
    assert response.status_code == 409
    assert response.json()["detail"][0]["loc"] == ["customer_id", "online_features", "age"]
    assert f'"{example_request["customer_id"]}"' not in response.text  # the id is not echoed


def test_unreachable_online_store_is_a_503_not_a_500(trained_platform, example_request) -> None:
    settings = trained_platform.settings.model_copy(update={"database_url": SecretStr(unreachable_database_url())})
    with TestClient(create_app(settings)) as client:
        response = client.post("/predict", json={"customer_id": example_request["customer_id"]})
        assert response.status_code == 503
        assert response.json()["detail"][0]["loc"] == ["customer_id"]
        assert client.post("/predict", json=example_request).status_code == 200  # full records still score
