"""The feature schema is the one encoding of rows shared by training and serving: its column order is the order the
booster was trained in, and it must survive the trip through the model registry's (sorted-key YAML) metadata."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import yaml

from churnops.schema import FeatureSchema

ROWS = pd.DataFrame(
    {
        "visits": [3.0, 1.0, None],
        "plan": ["plus", "basic", "premium"],
        "region": ["south", "north", None],
        "channel": ["web", "store", "partner"],
    }
)
# Deliberately not alphabetical, as in model_feature_columns (entity attributes, then event categoricals).
CATEGORICAL = ["plan", "region", "channel"]


def _through_registry_metadata(schema: FeatureSchema) -> FeatureSchema:
    """What MLflow does to model metadata: YAML with sorted keys, read back."""
    return FeatureSchema.from_dict(yaml.safe_load(yaml.safe_dump(schema.to_dict())))


def test_a_round_trip_through_sorted_yaml_keeps_the_column_order_and_the_encoding() -> None:
    trained = FeatureSchema.fit(ROWS, ["visits"], CATEGORICAL)
    loaded = _through_registry_metadata(trained)
    assert loaded.columns == ["visits", "plan", "region", "channel"]
    assert loaded == trained
    np.testing.assert_array_equal(loaded.encode_frame(ROWS), trained.encode_frame(ROWS))
    records = ROWS.replace({np.nan: None}).to_dict("records")
    np.testing.assert_array_equal(loaded.encode_records(records), trained.encode_frame(ROWS))


def test_the_column_order_is_part_of_equality() -> None:
    one = FeatureSchema(numeric=("visits",), categorical={"plan": ("a",), "region": ("b",)})
    other = FeatureSchema(numeric=("visits",), categorical={"region": ("b",), "plan": ("a",)})
    assert one != other


def test_a_schema_stored_without_its_order_is_put_in_the_boosters_order() -> None:
    trained = FeatureSchema.fit(ROWS, ["visits"], CATEGORICAL)
    legacy = {k: v for k, v in yaml.safe_load(yaml.safe_dump(trained.to_dict())).items() if k != "columns"}
    unordered = FeatureSchema.from_dict(legacy)
    assert unordered.columns != trained.columns  # sorted by the YAML round trip: the bug this guards against
    restored = unordered.in_column_order(trained.columns)
    assert restored == trained
    plan = restored.columns.index("plan")
    assert restored.encode_frame(ROWS)[:, plan].tolist() == [1.0, 0.0, 2.0]  # basic, plus, premium


@pytest.mark.parametrize(
    ("columns", "message"),
    [
        (["visits", "plan", "region"], "do not match"),
        (["visits", "plan", "region", "channel", "age"], "do not match"),
        (["plan", "visits", "region", "channel"], "numeric columns must precede"),
    ],
)
def test_a_booster_with_other_columns_is_refused(columns: list[str], message: str) -> None:
    trained = FeatureSchema.fit(ROWS, ["visits"], CATEGORICAL)
    with pytest.raises(ValueError, match=message):
        trained.in_column_order(columns)


def test_unseen_and_missing_categories_encode_as_missing() -> None:
    schema = FeatureSchema.fit(ROWS, ["visits"], CATEGORICAL)
    encoded = schema.encode_frame(
        pd.DataFrame({"visits": [1.0], "plan": ["gold"], "region": [None], "channel": ["web"]})
    )
    assert math.isnan(encoded[0, 1]) and math.isnan(encoded[0, 2]) and encoded[0, 3] == 2.0


def test_a_blank_category_is_never_learned_so_a_blank_cell_is_missing_everywhere() -> None:
    """The feature job reads blank categorical cells as null; a frame that still holds one (a snapshot written
    before that) must not teach the model a " " category that the API and `score --input` would then disagree on."""
    rows = ROWS.assign(plan=["plus", " ", ""])
    schema = FeatureSchema.fit(rows, ["visits"], CATEGORICAL)

    assert schema.categorical["plan"] == ("plus",)
    blank, missing = ({"visits": 1.0, "plan": p, "region": "north", "channel": "web"} for p in (" ", None))
    assert np.array_equal(schema.encode_records([blank]), schema.encode_records([missing]), equal_nan=True)
    assert np.array_equal(schema.encode_frame(pd.DataFrame([blank])), schema.encode_records([missing]), equal_nan=True)


def test_a_batch_encodes_exactly_like_its_rows_one_at_a_time() -> None:
    schema = FeatureSchema(numeric=("a", "b"), categorical={"plan": ("basic", "plus")})
    records = [
        {"a": 1, "b": None, "plan": "plus"},
        {"a": 2.5, "b": -3e300, "plan": None},
        {"a": None, "b": 0.0, "plan": "never-seen"},
    ]
    batch = schema.encode_records(records)
    one_by_one = np.vstack([schema.encode_records([record]) for record in records])
    assert np.array_equal(batch, one_by_one, equal_nan=True)
    assert batch[0].tolist()[:1] == [1.0] and math.isnan(batch[0, 1]) and batch[0, 2] == 1.0
    assert all(math.isnan(v) for v in (batch[1, 2], batch[2, 0], batch[2, 2]))
    assert schema.encode_records([]).shape == (0, 3)
