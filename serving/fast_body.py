"""The fast first reading of a predict body: orjson and numpy, column-wise, straight into the model's matrix.

A body made only of what the API accepts without any leniency is read here: an object (or `{"instances": [...]}`
with 1 to `serving.max_batch_rows` of them) holding `features` with exactly the schema's features — numeric ones as
finite JSON numbers or null, categorical ones as strings of at most 256 characters or null — and, optionally, a
non-empty `customer_id` string. The checks are per column (one `set(map(type, ...))` and one numpy conversion per
block) instead of a validator call per value.

Anything else returns None: a numeric string from a CSV, a missing or unknown field, a `customer_id` alone (the
online look-up), a malformed body. The request then goes through the detailed pydantic models (`parse_body` in
serving/problems.py), which accept it with the same values or refuse it naming every problem. This reader decides
nothing on its own: what is accepted, the values and every 422 are the pydantic models' (tests/serving/
test_fast_body.py checks that both agree).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from itertools import chain
from operator import itemgetter
from typing import Any

import numpy as np
import orjson

from churnops.schema import FeatureSchema
from churnops.serving.records import MAX_CATEGORY_CHARS, MAX_CUSTOMER_ID_CHARS

_NUMBER_TYPES = frozenset({float, int, type(None)})  # not bool: `type(True) is bool`
_CATEGORY_TYPES = frozenset({str, type(None)})


@dataclass(frozen=True)
class RequestRows:
    """A predict request's customers, by column: what scoring, the response and the prediction log need."""

    customer_ids: list[str | None]
    # Each customer's features as validated (logged, and explained on request).
    records: list[Mapping[str, Any]]
    matrix: np.ndarray
    # {row: cutoff of the published features} for the rows looked up in the online feature table.
    online_cutoffs: dict[int, str] = field(default_factory=dict)


def _values_of(names: tuple[str, ...]) -> Callable[[Mapping[str, Any]], tuple[Any, ...]]:
    # itemgetter of one name returns the value itself, not a 1-tuple.
    if len(names) == 1:
        (name,) = names
        return lambda record: (record[name],)
    return itemgetter(*names)


class FastBodyReader:
    """Reads the bodies that need no leniency and no look-up for one feature schema (built once per model)."""

    def __init__(self, schema: FeatureSchema, max_rows: int) -> None:
        self.max_rows = max_rows
        self._names = frozenset(schema.columns)
        self._width = len(schema.columns)
        self._n_numeric = len(schema.numeric)
        self._numeric = _values_of(schema.numeric) if schema.numeric else None
        self._categories = [
            (name, {value: float(code) for code, value in enumerate(vocab)})
            for name, vocab in schema.categorical.items()
        ]

    def batch(self, body: bytes) -> RequestRows | None:
        """A `/batch_predict` body, or None when the detailed path must read it."""
        parsed = _loads(body)
        if type(parsed) is not dict or len(parsed) != 1:
            return None
        instances = parsed.get("instances")
        if type(instances) is not list or not 1 <= len(instances) <= self.max_rows:
            return None
        return self._rows(instances)

    def single(self, body: bytes) -> RequestRows | None:
        """A `/predict` body, or None when the detailed path must read it."""
        parsed = _loads(body)
        return self._rows([parsed]) if type(parsed) is dict else None

    def _rows(self, instances: list[Any]) -> RequestRows | None:
        customer_ids: list[str | None] = []
        records: list[dict[str, Any]] = []
        names = self._names
        for instance in instances:
            if type(instance) is not dict:
                return None
            features = instance.get("features")
            if type(features) is not dict or features.keys() != names:
                return None
            if len(instance) == 1:
                customer_ids.append(None)
            else:
                customer_id = instance.get("customer_id")
                if len(instance) != 2 or type(customer_id) is not str:
                    return None
                if not 1 <= len(customer_id) <= MAX_CUSTOMER_ID_CHARS:
                    return None
                customer_ids.append(customer_id)
            records.append(features)
        matrix = self._encode(records)
        return None if matrix is None else RequestRows(customer_ids, records, matrix)

    def _encode(self, records: list[dict[str, Any]]) -> np.ndarray | None:
        matrix = np.empty((len(records), self._width), dtype=np.float64)
        if self._numeric is not None:
            block = list(map(self._numeric, records))
            if not set(map(type, chain.from_iterable(block))) <= _NUMBER_TYPES:
                return None
            numbers = np.array(block, dtype=np.float64)  # None becomes NaN (missing)
            if np.isinf(numbers).any():  # a finite JSON number only (NaN here is always a null)
                return None
            matrix[:, : self._n_numeric] = numbers
        for column, (name, codes) in enumerate(self._categories, start=self._n_numeric):
            values = [record[name] for record in records]
            if not set(map(type, values)) <= _CATEGORY_TYPES:
                return None
            if any(value is not None and len(value) > MAX_CATEGORY_CHARS for value in values):
                return None
            matrix[:, column] = [codes.get(value, math.nan) for value in values]  # unseen or null: missing
        return matrix


def _loads(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
