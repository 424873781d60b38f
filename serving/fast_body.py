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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import chain, repeat
from operator import itemgetter
from typing import Any

import numpy as np
import orjson

from churnops.schema import FeatureSchema
from churnops.serving.records import MAX_CATEGORY_CHARS, MAX_CUSTOMER_ID_CHARS

_NUMBER_TYPES = frozenset({float, int, type(None)})  # not bool: `type(True) is bool`
_CATEGORY_TYPES = frozenset({str, type(None)})
_CUSTOMER_ID_TYPES = _CATEGORY_TYPES
_DICT = frozenset({dict})


@dataclass(frozen=True)
class RequestRows:
    """A predict request's customers, by column: what scoring, the response and the prediction log need."""

    customer_ids: list[str | None]
    # Each customer's features as validated (logged, and explained on request).
    records: list[Mapping[str, Any]]
    matrix: np.ndarray
    # {row: cutoff of the published features} for the rows looked up in the online feature table.
    online_cutoffs: dict[int, str] = field(default_factory=dict)
    # Each row's feature values in the schema's column order, when the reader built them on the way (the prediction
    # log's layout: no second pass over the records).
    values: Sequence[Sequence[Any]] | None = None


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
        self._width = len(schema.columns)
        self._n_numeric = len(schema.numeric)
        # The schema's order: numeric features, then categorical ones (the matrix's columns).
        self._columns = (*schema.numeric, *schema.categorical)
        self._values = _values_of(self._columns)
        self._codes = [
            {value: float(code) for code, value in enumerate(vocab)} for vocab in schema.categorical.values()
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
        # Every check runs over the whole request at C speed (map, set, itemgetter), not a Python loop per row.
        if not set(map(type, instances)) <= _DICT:
            return None
        features = list(map(dict.get, instances, repeat("features")))
        if not set(map(type, features)) <= _DICT:
            return None
        # Exactly the schema's features: as many keys as features, and every feature found (the item getter raises
        # KeyError on a missing one). Same verdict as comparing each key set, without hashing every key again.
        if set(map(len, features)) != {self._width}:
            return None
        try:
            rows = list(map(self._values, features))  # each row's values in schema order
        except KeyError:
            return None
        customer_ids = self._customer_ids(instances)
        if customer_ids is None:
            return None
        matrix = self._encode_one(rows[0]) if len(rows) == 1 else self._encode(rows)
        if matrix is None:
            return None
        return RequestRows(customer_ids, features, matrix, values=rows)

    @staticmethod
    def _customer_ids(instances: list[dict[str, Any]]) -> list[str | None] | None:
        """Each instance's `customer_id` (None when left out), or None unless every instance is `features` alone
        or with a `customer_id` string of legal length."""
        sizes = set(map(len, instances))
        if not sizes <= {1, 2}:
            return None
        customer_ids = list(map(dict.get, instances, repeat("customer_id")))
        if 2 in sizes:
            if not set(map(type, customer_ids)) <= _CUSTOMER_ID_TYPES:
                return None
            # An instance of two fields without a customer_id has another field; one of one field never has it.
            with_id = len(customer_ids) - customer_ids.count(None)
            if with_id != sum(map((2).__eq__, map(len, instances))) or "" in customer_ids:
                return None
            if max(map(len, filter(None, customer_ids))) > MAX_CUSTOMER_ID_CHARS:
                return None
        return customer_ids

    def _encode_one(self, values: tuple[Any, ...]) -> np.ndarray | None:
        """`_encode` of a single row, with the same checks and values: for one row, the column-wise set-up (a
        transpose, a numpy conversion per block, a pass per categorical column) cost more than the checks."""
        n_numeric = self._n_numeric
        matrix = np.empty((1, self._width), dtype=np.float64)
        row = matrix[0]
        if n_numeric:
            numbers = values[:n_numeric]
            if not set(map(type, numbers)) <= _NUMBER_TYPES:
                return None
            row[:n_numeric] = numbers  # None becomes NaN (missing), as in np.array(..., dtype=float64)
            if np.isinf(row[:n_numeric]).any():
                return None
        for column, codes in enumerate(self._codes, start=n_numeric):
            value = values[column]
            if value is not None and (type(value) is not str or len(value) > MAX_CATEGORY_CHARS):
                return None
            row[column] = codes.get(value, math.nan)  # unseen or null: missing
        return matrix

    def _encode(self, rows: list[tuple[Any, ...]]) -> np.ndarray | None:
        """The model's matrix."""
        by_column = list(zip(*rows, strict=True))
        n_numeric = self._n_numeric
        matrix = np.empty((len(rows), self._width), dtype=np.float64)
        if n_numeric:
            if not set(map(type, chain.from_iterable(by_column[:n_numeric]))) <= _NUMBER_TYPES:
                return None
            numbers = np.array(by_column[:n_numeric], dtype=np.float64)  # None becomes NaN (missing)
            if np.isinf(numbers).any():  # a finite JSON number only (NaN here is always a null)
                return None
            matrix[:, :n_numeric] = numbers.T
        nan = repeat(math.nan)
        for column, codes in enumerate(self._codes, start=n_numeric):
            values = by_column[column]
            # Checked on the column's distinct values: a handful of categories, not one per row.
            try:
                distinct = set(values)
            except TypeError:  # a list or an object: unhashable, and never a category
                return None
            if not set(map(type, distinct)) <= _CATEGORY_TYPES:
                return None
            if max(map(len, filter(None, distinct)), default=0) > MAX_CATEGORY_CHARS:
                return None
            matrix[:, column] = list(map(codes.get, values, nan))  # unseen or null: missing
        return matrix


def _loads(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
