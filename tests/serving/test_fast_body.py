"""The fast first reading of a predict body (serving/fast_body.py) decides nothing on its own: a body it reads gets
the same customers and the same encoded values as through the detailed pydantic path, and every body the detailed
path refuses it leaves to that path, so the 422s are the detailed path's, word for word."""

from __future__ import annotations

import json

import numpy as np
import pytest

from churnops.schema import FeatureSchema
from churnops.serving.fast_body import FastBodyReader
from churnops.serving.problems import ApiProblem, BatchLimit, parse_body
from churnops.serving.records import batch_request_model, predict_request_model

SCHEMA = FeatureSchema(numeric=("age", "spend"), categorical={"plan": ("basic", "plus")})
MAX_ROWS = 5
REQUEST = predict_request_model(SCHEMA)
BATCH = batch_request_model(REQUEST, MAX_ROWS)


def row(**features):
    return {"customer_id": "7", "features": {"age": 45, "spend": 3.5, "plan": "plus"} | features}


# Each kind of body: plain ones the fast reader takes, and every kind the detailed path has to word or read.
VALUES = [45, -4.5e1, 0.0, None, 1e308, -0.0, 2**63 - 1, " 4.5 ", "", "4.5e1", True, "forty", "1e400", "NaN", [1], {}]
CATEGORIES = ["basic", "unseen", None, "", "x" * 256, "x" * 257, 3, True, ["plus"]]
CUSTOMER_IDS = ["7", "", "x" * 128, "x" * 129, 7, None]
ROWS = (
    [row(age=value) for value in VALUES]
    + [row(plan=value) for value in CATEGORIES]
    + [{"customer_id": value, "features": row()["features"]} for value in CUSTOMER_IDS]
    + [
        {"features": row()["features"]},  # no customer_id
        {"customer_id": "7"},  # the online look-up
        {"customer_id": "7", "features": None},
        {"customer_id": "7", "features": {"age": 45, "spend": 3.5}},  # missing feature
        {"customer_id": "7", "features": row()["features"] | {"colour": "blue"}},  # unknown feature
        {"customer_id": "7", "features": row()["features"], "extra": 1},
        {"features": row()["features"], "extra": 1},  # two fields, but no customer_id
        {},
        [row()],
        "row",
    ]
)


def batch_verdict(body: bytes):
    try:
        batch = parse_body(BATCH, body, BatchLimit(MAX_ROWS, "synthetic"))
    except ApiProblem as problem:
        return "refused", problem.status, problem.problems
    instances = batch.instances
    if any(instance.features is None for instance in instances):
        return "look-up"
    records = [i.features.__dict__ for i in instances]
    return [i.customer_id for i in instances], SCHEMA.encode_records(records), records


def assert_same_reading(fast, detailed) -> None:
    assert fast is None or detailed[0] not in ("refused", "look-up"), f"fast path read what {detailed} is"
    if fast is not None:
        customer_ids, matrix, records = detailed
        assert fast.customer_ids == customer_ids
        assert np.array_equal(fast.matrix, matrix, equal_nan=True)
        assert fast.matrix.dtype == np.float64
        # The values it hands the prediction log are the records the detailed path reads, in the schema's column
        # order, and the mappings it builds for `explain` are those records.
        assert fast.values is not None
        assert [list(values) for values in fast.values] == [
            [record[name] for name in SCHEMA.columns] for record in records
        ]
        assert fast.record_mappings(SCHEMA.columns) == records


@pytest.mark.parametrize("instance", ROWS, ids=[f"row{i}" for i in range(len(ROWS))])
def test_a_body_is_read_the_same_by_both_paths_or_left_to_the_detailed_one(instance) -> None:
    reader = FastBodyReader(SCHEMA, MAX_ROWS)
    batch = json.dumps({"instances": [row(), instance]}).encode()
    assert_same_reading(reader.batch(batch), batch_verdict(batch))
    single = json.dumps(instance).encode()
    wrapped = json.dumps({"instances": [instance]}).encode()
    assert_same_reading(reader.single(single), batch_verdict(wrapped))


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"{not json",
        b"[]",
        b'{"instances": []}',
        b'{"instances": {}}',
        json.dumps({"instances": [row()] * (MAX_ROWS + 1)}).encode(),
        json.dumps({"instances": [row()], "extra": 1}).encode(),
        b'{"instances": [' + json.dumps(row()).encode().replace(b"45", b"NaN") + b"]}",
        b'{"instances": [' + json.dumps(row()).encode().replace(b"45", b"Infinity") + b"]}",
        b'{"instances": [' + json.dumps(row()).encode().replace(b"45", b"1e400") + b"]}",
        b'{"instances": [' + json.dumps(row()).encode().replace(b"45", b"9" * 400) + b"]}",
        b'{"instances": [' + json.dumps(row()).encode() + b"]} trailing",
        b'{"instances": [' + json.dumps(row()).encode().replace(b'"7"', b'"\\ud800"') + b"]}",
    ],
    ids=[
        "empty",
        "malformed",
        "array",
        "no-rows",
        "rows-not-list",
        "too-many",
        "extra-top",
        "nan",
        "infinity",
        "overflow",
        "huge-integer",
        "trailing",
        "lone-surrogate",
    ],
)
def test_malformed_or_out_of_bounds_batches_are_left_to_the_detailed_path(body) -> None:
    assert_same_reading(FastBodyReader(SCHEMA, MAX_ROWS).batch(body), batch_verdict(body))


def test_a_plain_batch_takes_the_fast_path() -> None:
    body = json.dumps({"instances": [row(), row(age=None, plan="unseen")]}).encode()
    fast = FastBodyReader(SCHEMA, MAX_ROWS).batch(body)
    assert fast is not None
    assert fast.matrix.tolist()[0] == [45.0, 3.5, 1.0]
    assert np.isnan(fast.matrix[1, [0, 2]]).all()


def test_duplicate_keys_keep_the_last_value_on_both_paths() -> None:
    text = json.dumps(row()).replace('"age": 45', '"age": "forty", "age": 45')
    body = ('{"instances": [' + text + "]}").encode()
    assert_same_reading(FastBodyReader(SCHEMA, MAX_ROWS).batch(body), batch_verdict(body))


def test_features_whose_names_are_not_python_identifiers_are_read_by_name() -> None:
    schema = FeatureSchema(numeric=("days since", "class", "spend-30d"), categorical={"plan.kind": ("a", "b")})
    features = {"plan.kind": "b", "spend-30d": 2.5, "class": None, "days since": 3}
    body = json.dumps({"instances": [{"customer_id": "7", "features": features}]}).encode()
    fast = FastBodyReader(schema, MAX_ROWS).batch(body)
    assert fast is not None
    assert fast.matrix.tolist()[0][0::2] == [3.0, 2.5] and np.isnan(fast.matrix[0, 1]) and fast.matrix[0, 3] == 1.0
    assert fast.record_mappings(schema.columns) == [
        {"days since": 3, "class": None, "spend-30d": 2.5, "plan.kind": "b"}
    ]
