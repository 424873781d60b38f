"""The fast first reading of a predict body: msgspec and numpy, straight into the model's matrix.

A body made only of what the API accepts without any leniency is read here: an object (or `{"instances": [...]}`
with 1 to `serving.max_batch_rows` of them) holding `features` with exactly the schema's features — numeric ones as
finite JSON numbers or null, categorical ones as strings of at most 256 characters or null — and, optionally, a
`customer_id` string of 1 to 128 characters. msgspec decodes the body against structs generated from the schema and
checks every one of those types in the same C pass (a boolean is not a number, a string is not one either); numpy
then builds the matrix. Before, orjson's parse, an item getter over every record and a type check per value were
three Python-level passes over a batch: the struct reading costs a quarter of them
(docs/benchmarks/serving.md, fifth round).

Anything else returns None: a numeric string from a CSV, a missing or unknown field, a `customer_id` alone (the
online look-up), a malformed body. The request then goes through the detailed pydantic models (`parse_body` in
serving/problems.py), which accept it with the same values or refuse it naming every problem. This reader decides
nothing on its own: what is accepted, the values and every 422 are the pydantic models' (tests/serving/
test_fast_body.py checks that both agree).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from typing import Annotated, Any

import msgspec
import numpy as np

from churnops.schema import FeatureSchema
from churnops.serving.records import MAX_CATEGORY_CHARS, MAX_CUSTOMER_ID_CHARS


@dataclass(frozen=True)
class RequestRows:
    """A predict request's customers, by column: what scoring, the response and the prediction log need."""

    customer_ids: list[str | None]
    # Each customer's features as validated, as mappings (explained on request); None when the reader kept only
    # `values` (`record_mappings` builds them then).
    records: Sequence[Mapping[str, Any]] | None
    matrix: np.ndarray
    # {row: cutoff of the published features} for the rows looked up in the online feature table.
    online_cutoffs: dict[int, str] = field(default_factory=dict)
    # Each row's feature values in the schema's column order, when the reader built them on the way (the prediction
    # log's layout: no second pass over the records).
    values: Sequence[Sequence[Any]] | None = None

    def record_mappings(self, feature_names: Sequence[str]) -> Sequence[Mapping[str, Any]]:
        """Each customer's features as a mapping (built from `values` when the reader kept only those)."""
        if self.records is not None:
            return self.records
        assert self.values is not None
        return [dict(zip(feature_names, row, strict=True)) for row in self.values]


_CustomerId = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_CUSTOMER_ID_CHARS)]
_Category = Annotated[str, msgspec.Meta(max_length=MAX_CATEGORY_CHARS)]


class FastBodyReader:
    """Reads the bodies that need no leniency and no look-up for one feature schema (built once per model)."""

    def __init__(self, schema: FeatureSchema, max_rows: int) -> None:
        self.max_rows = max_rows
        self._width = len(schema.columns)
        self._n_numeric = len(schema.numeric)
        # The schema's order: numeric features, then categorical ones (the matrix's columns). Struct fields get
        # generated names (a feature's name need not be a Python identifier) and are renamed to the features'.
        columns = (*schema.numeric, *schema.categorical)
        types = [float | None] * len(schema.numeric) + [_Category | None] * len(schema.categorical)
        features = msgspec.defstruct(
            "Features",
            [(f"f{index}", kind) for index, kind in enumerate(types)],
            rename={f"f{index}": name for index, name in enumerate(columns)},
            forbid_unknown_fields=True,
        )
        instance = msgspec.defstruct(
            "Instance",
            # Left out, or a string: an explicit null is the detailed path's to refuse.
            [("features", features), ("customer_id", _CustomerId | msgspec.UnsetType, msgspec.UNSET)],
            forbid_unknown_fields=True,
        )
        batch = msgspec.defstruct(
            "Batch",
            [("instances", Annotated[list[instance], msgspec.Meta(min_length=1, max_length=max_rows)])],  # type: ignore[valid-type]
            forbid_unknown_fields=True,
        )
        self._single = msgspec.json.Decoder(instance)
        self._batch = msgspec.json.Decoder(batch)
        self._codes = [
            {value: float(code) for code, value in enumerate(vocab)} for vocab in schema.categorical.values()
        ]

    def batch(self, body: bytes) -> RequestRows | None:
        """A `/batch_predict` body, or None when the detailed path must read it."""
        try:
            instances = self._batch.decode(body).instances
        except (msgspec.ValidationError, msgspec.DecodeError):
            return None
        return self._rows(instances)

    def single(self, body: bytes) -> RequestRows | None:
        """A `/predict` body, or None when the detailed path must read it."""
        try:
            instance = self._single.decode(body)
        except (msgspec.ValidationError, msgspec.DecodeError):
            return None
        return self._rows([instance])

    def _rows(self, instances: list[Any]) -> RequestRows | None:
        astuple = msgspec.structs.astuple
        rows = [astuple(instance.features) for instance in instances]  # each row's values in schema order
        customer_ids = [
            None if instance.customer_id is msgspec.UNSET else instance.customer_id for instance in instances
        ]
        n_numeric = self._n_numeric
        matrix = np.empty((len(rows), self._width), dtype=np.float64)
        if n_numeric:
            # None becomes NaN (missing); the types are msgspec's to check (floats, ints or None here).
            numbers = matrix[:, :n_numeric]
            numbers[:] = [row[:n_numeric] for row in rows] if self._width > n_numeric else rows
            if np.isinf(numbers).any():  # a number beyond a double's range: the detailed path refuses it
                return None
        if self._codes:
            nan = repeat(math.nan)
            categories = list(zip(*[row[n_numeric:] for row in rows], strict=True))
            for column, (codes, values) in enumerate(zip(self._codes, categories, strict=True), start=n_numeric):
                matrix[:, column] = list(map(codes.get, values, nan))  # unseen or null: missing
        return RequestRows(customer_ids, None, matrix, values=rows)
