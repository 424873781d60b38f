"""LightGBM trees evaluated with numpy, one split at a time over a whole block of rows.

`Booster.predict` pays, per call and per row, for turning the row into LightGBM's sparse pairs and back: about as
much as evaluating a dozen shallow trees. The hazard booster is predicted as dozens of small groups of trees per
block of customers (`churnops.jobs.survival.bin_trees`), so that overhead outweighed the trees themselves. Here a
tree is evaluated column-wise instead: each split compares one input column of every row with its threshold and
the leaves are picked with `numpy.where`.

The decisions are LightGBM's own (include/LightGBM/tree.h, `NumericalDecision` and `CategoricalDecision`), with
its reading of a dense row (c_api.cpp: a value within 1e-35 of zero is read as 0), and a group's trees are added in
order starting from 0, as `GBDT::PredictRaw` does: the raw scores are bit-identical to `Booster.predict(...,
raw_score=True)` (tests/survival/test_tree_arrays.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

# LightGBM's decision_type bits and missing types (include/LightGBM/tree.h).
_CATEGORICAL_MASK, _DEFAULT_LEFT_MASK = 1, 2
_MISSING_ZERO, _MISSING_NAN = 1, 2
# kZeroThreshold: LightGBM reads a dense value this close to 0 as 0 (and a Zero-missing split sends it the default way).
ZERO_THRESHOLD = 1e-35

# An input column of the scored rows, by the booster's feature index, as LightGBM reads it (`as_read`); a float for
# a column that holds one value in every row.
ColumnOf = Callable[[int], np.ndarray | float]


@dataclass(frozen=True)
class TreeArrays:
    """One tree's nodes as arrays (LightGBM's text model fields); a child < 0 is the leaf ~child."""

    split_feature: np.ndarray
    threshold: np.ndarray
    decision_type: np.ndarray
    left_child: np.ndarray
    right_child: np.ndarray
    leaf_value: np.ndarray
    cat_boundaries: np.ndarray
    cat_threshold: np.ndarray

    @classmethod
    def from_fields(cls, fields: dict[str, str]) -> TreeArrays:
        """From the `key=value` lines of one tree of `Booster.model_to_string()`."""

        def values(key: str, kind: type) -> np.ndarray:
            return np.array([kind(value) for value in fields.get(key, "").split()], dtype=kind)

        return cls(
            split_feature=values("split_feature", int),
            threshold=values("threshold", float),
            decision_type=values("decision_type", int),
            left_child=values("left_child", int),
            right_child=values("right_child", int),
            leaf_value=values("leaf_value", float),
            cat_boundaries=values("cat_boundaries", int),
            cat_threshold=values("cat_threshold", int),
        )

    def predict(self, column: ColumnOf, rows: int) -> np.ndarray:
        """The tree's output for each of `rows` rows whose input columns `column` gives."""
        if len(self.split_feature) == 0:  # a single leaf
            return np.full(rows, self.leaf_value[0])
        values = self._subtree(0, column)
        return values if np.ndim(values) else np.full(rows, values)

    def _subtree(self, node: int, column: ColumnOf) -> np.ndarray | float:
        if node < 0:
            return float(self.leaf_value[~node])
        left = self._goes_left(node, column(int(self.split_feature[node])))
        if np.ndim(left) == 0:  # a column with one value for every row (the bin start): one side is taken
            return self._subtree(int(self.left_child[node] if left else self.right_child[node]), column)
        return np.where(
            left, self._subtree(int(self.left_child[node]), column), self._subtree(int(self.right_child[node]), column)
        )

    def _goes_left(self, node: int, values: np.ndarray | float) -> np.ndarray:
        decision = int(self.decision_type[node])
        if decision & _CATEGORICAL_MASK:
            return self._in_category_set(node, values)
        threshold, default_left = float(self.threshold[node]), bool(decision & _DEFAULT_LEFT_MASK)
        missing_type = (decision >> 2) & 3
        below = values <= threshold  # False for NaN
        if missing_type == _MISSING_NAN:
            return below | np.isnan(values) if default_left else below
        if missing_type == _MISSING_ZERO:  # NaN is read as 0 first; 0 goes the default way
            zero = np.isnan(values) | (values == 0.0)
            return below | zero if default_left else below & ~zero
        # No missing type: NaN is read as 0 and compared like any value.
        return below | np.isnan(values) if 0.0 <= threshold else below

    def _in_category_set(self, node: int, values: np.ndarray | float) -> np.ndarray:
        """LightGBM's bitset test of the category int(value); NaN and negative categories go right."""
        index = int(self.threshold[node])
        words = self.cat_threshold[self.cat_boundaries[index] : self.cat_boundaries[index + 1]]
        in_set = ((words[:, None] >> np.arange(32)) & 1).astype(bool).ravel()  # category c -> in_set[c]
        present = ~np.isnan(values)
        category = np.where(present, values, -1.0).astype(np.int64)  # truncated towards 0, as a C++ cast
        known = present & (category >= 0) & (category < len(in_set))
        return known & in_set[np.where(known, category, 0)]


def predict_trees(trees: Sequence[TreeArrays], column: ColumnOf, rows: int) -> np.ndarray:
    """The trees' summed raw score per row, added in order from 0 (LightGBM's order of the sum)."""
    total = np.zeros(rows, dtype=np.float64)
    for tree in trees:
        total += tree.predict(column, rows)
    return total


def as_read(values: np.ndarray) -> np.ndarray:
    """A column as LightGBM reads a dense row: values within ZERO_THRESHOLD of 0 become 0 (NaN stays NaN)."""
    tiny = np.abs(values) <= ZERO_THRESHOLD
    return np.where(tiny, 0.0, values) if tiny.any() else values
