"""The feature schema a model was trained on, and the one encoding of rows into model input.

Training and serving share this module so that a row is encoded the same way in both: numeric columns as floats
(missing = NaN), categorical columns as the index of the value in the training vocabulary (unseen or missing = NaN,
which LightGBM treats as missing). Serving uses `encode_records` on plain dicts: no pandas on the hot path.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

import numpy as np
import pandas as pd


@dataclass(frozen=True, eq=False)
class FeatureSchema:
    numeric: tuple[str, ...]
    # Insertion order is the model's column order: it matters (see `columns`), so equality compares it too.
    categorical: dict[str, tuple[str, ...]]
    _lookup: dict[str, dict[str, float]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        lookup = {name: {value: float(i) for i, value in enumerate(vocab)} for name, vocab in self.categorical.items()}
        object.__setattr__(self, "_lookup", lookup)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, FeatureSchema):
            return NotImplemented
        return self.columns == other.columns and self.categorical == other.categorical

    @property
    def columns(self) -> list[str]:
        """Model input columns in order: numeric first, then categorical."""
        return [*self.numeric, *self.categorical]

    @property
    def categorical_indices(self) -> list[int]:
        return list(range(len(self.numeric), len(self.numeric) + len(self.categorical)))

    def to_dict(self) -> dict[str, Any]:
        # `columns` carries the order: the model metadata is stored as YAML with sorted keys, so the order of the
        # `categorical` mapping does not survive a round trip through the registry.
        return {
            "numeric": list(self.numeric),
            "categorical": {k: list(v) for k, v in self.categorical.items()},
            "columns": self.columns,
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> FeatureSchema:
        schema = cls(
            numeric=tuple(raw["numeric"]),
            categorical={name: tuple(vocab) for name, vocab in raw["categorical"].items()},
        )
        # Schemas stored before `columns` existed have their categorical order only in the booster's feature names
        # (see `in_column_order`).
        return schema.in_column_order(raw["columns"]) if "columns" in raw else schema

    def in_column_order(self, columns: Iterable[str]) -> FeatureSchema:
        """The same schema with its columns in the given order (e.g. the booster's feature names, the order it was
        trained in); numeric columns must still come first. Refuses a different set of columns."""
        columns = list(columns)
        if sorted(columns) != sorted(self.columns):
            raise ValueError(
                f"the model's columns {columns} are not the schema's {self.columns}: schema and model do not match"
            )
        numeric = tuple(c for c in columns if c not in self.categorical)
        if columns[: len(numeric)] != list(numeric):
            raise ValueError(f"numeric columns must precede categorical ones in {columns}")
        return FeatureSchema(numeric=numeric, categorical={c: self.categorical[c] for c in columns[len(numeric) :]})

    @classmethod
    def fit(cls, frame: Any, numeric: Iterable[str], categorical: Iterable[str]) -> FeatureSchema:
        """Learn the categorical vocabularies from a training frame (sorted, so the encoding is reproducible). A blank
        value is a missing one, never a category."""
        vocab = {
            name: tuple(sorted(str(v) for v in frame[name].dropna().unique() if str(v).strip())) for name in categorical
        }
        return cls(numeric=tuple(numeric), categorical=vocab)

    def encode_frame(self, frame: Any) -> np.ndarray:
        """Encode a pandas DataFrame (training, batch scoring) into a float64 matrix."""
        matrix = np.empty((len(frame), len(self.columns)), dtype=np.float64)
        for i, name in enumerate(self.numeric):
            matrix[:, i] = frame[name].astype("float64").to_numpy()
        for j, (name, vocab) in enumerate(self.categorical.items(), start=len(self.numeric)):
            # A value's code is its position in the vocabulary, compared as text (as `encode_records` does for
            # validated strings); unseen values and missing ones are NaN. One vectorised look-up per column.
            codes = pd.Index(vocab, dtype=object).get_indexer(frame[name].astype(str).to_numpy(dtype=object))
            matrix[:, j] = np.where(codes >= 0, codes, np.nan)
        return matrix

    def encode_records(self, records: Iterable[Mapping[str, Any]]) -> np.ndarray:
        """Encode already-validated dicts (serving) into a float64 matrix without building a DataFrame.

        Column-wise, so that a batch costs one numpy conversion per block instead of a Python float() per value:
        numpy turns a None into NaN (missing) when it builds a float64 array.
        """
        records = list(records)
        if len(records) == 1:  # one row (most API calls): Python floats cost less than numpy's array set-up
            record = records[0]
            row = [math.nan if record[n] is None else float(record[n]) for n in self.numeric]
            row += [lookup.get(record[n], math.nan) for n, lookup in self._lookup.items()]
            return np.array([row], dtype=np.float64)
        matrix = np.empty((len(records), len(self.columns)), dtype=np.float64)
        if not records:
            return matrix
        n_numeric = len(self.numeric)
        if n_numeric:
            values = itemgetter(*self.numeric)
            block = [values(record) for record in records]
            matrix[:, :n_numeric] = np.array(block, dtype=np.float64).reshape(len(records), n_numeric)
        for j, (name, lookup) in enumerate(self._lookup.items(), start=n_numeric):
            matrix[:, j] = [lookup.get(record[name], math.nan) for record in records]  # None is never in a vocabulary
        return matrix
