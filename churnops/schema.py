"""The feature schema a model was trained on, and the one encoding of rows into model input.

Training and serving share this module so that a row is encoded the same way in both: numeric columns as floats
(missing = NaN), categorical columns as the index of the value in the training vocabulary (unseen or missing = NaN,
which LightGBM treats as missing). Serving uses `encode_records` on plain dicts: no pandas on the hot path.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class FeatureSchema:
    numeric: tuple[str, ...]
    categorical: dict[str, tuple[str, ...]]
    _lookup: dict[str, dict[str, float]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        lookup = {name: {value: float(i) for i, value in enumerate(vocab)} for name, vocab in self.categorical.items()}
        object.__setattr__(self, "_lookup", lookup)

    @property
    def columns(self) -> list[str]:
        """Model input columns in order: numeric first, then categorical."""
        return [*self.numeric, *self.categorical]

    @property
    def categorical_indices(self) -> list[int]:
        return list(range(len(self.numeric), len(self.numeric) + len(self.categorical)))

    def to_dict(self) -> dict[str, Any]:
        return {
            "numeric": list(self.numeric),
            "categorical": {k: list(v) for k, v in self.categorical.items()},
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> FeatureSchema:
        return cls(
            numeric=tuple(raw["numeric"]),
            categorical={name: tuple(vocab) for name, vocab in raw["categorical"].items()},
        )

    @classmethod
    def fit(cls, frame: Any, numeric: Iterable[str], categorical: Iterable[str]) -> FeatureSchema:
        """Learn the categorical vocabularies from a training frame (sorted, so the encoding is reproducible)."""
        vocab = {name: tuple(sorted(str(v) for v in frame[name].dropna().unique())) for name in categorical}
        return cls(numeric=tuple(numeric), categorical=vocab)

    def encode_frame(self, frame: Any) -> np.ndarray:
        """Encode a pandas DataFrame (training, batch scoring) into a float64 matrix."""
        matrix = np.empty((len(frame), len(self.columns)), dtype=np.float64)
        for i, name in enumerate(self.numeric):
            matrix[:, i] = frame[name].astype("float64").to_numpy()
        for j, (name, lookup) in enumerate(self._lookup.items(), start=len(self.numeric)):
            matrix[:, j] = frame[name].map(lambda v, lookup=lookup: lookup.get(str(v), math.nan)).astype("float64")
        return matrix

    def encode_records(self, records: Iterable[Mapping[str, Any]]) -> np.ndarray:
        """Encode already-validated dicts (serving) into a float64 matrix without building a DataFrame."""
        rows = []
        for record in records:
            row = [math.nan if record[n] is None else float(record[n]) for n in self.numeric]
            row += [
                lookup.get(record[n], math.nan) if record[n] is not None else math.nan
                for n, lookup in self._lookup.items()
            ]
            rows.append(row)
        return np.asarray(rows, dtype=np.float64).reshape(len(rows), len(self.columns))
