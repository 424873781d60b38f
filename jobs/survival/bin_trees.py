"""A hazard booster predicted in every time bin without evaluating again the trees that cannot tell the bins apart.

The inputs of one customer in two bins differ only in the bin start and the time-since columns advanced to it. A
tree that splits on none of them gives the customer the same value in every bin; one that splits on the bin start
gives the same value in every bin on the same side of each of its thresholds; and a split on an advanced column
(days since the last purchase + bin start <= threshold) sends every customer of the scored rows the same way in
every bin whose start puts the whole range of that column, in those rows, on one side of the threshold (all the
bins past `threshold - min`, typically). A tree is evaluated once per class of bins it cannot tell apart, at the
class's first bin, instead of once per bin; a bin where a split depends on the customer is a class of its own.
The trees are grouped by those classes (each group's trees evaluated with numpy, `tree_arrays`), and a bin's raw
score is the sum of the raw scores of the groups it belongs to: the same trees and the same leaves as predicting
the whole booster bin by bin, only added in another order (equal up to float rounding, about 1e-15).

A booster whose trees are not plain sums of leaf values (linear trees, averaged random-forest output, several trees
per iteration) gets no plan: the caller predicts it whole in every bin.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import lightgbm as lgb
import numpy as np

from churnops.jobs.survival.tree_arrays import ColumnOf, TreeArrays, as_read, predict_trees

# LightGBM's decision_type bits (include/LightGBM/tree.h): categorical split, default direction, missing type.
_CATEGORICAL_MASK, _DEFAULT_LEFT_MASK = 1, 2
_MISSING_ZERO = 1
# LightGBM's kZeroThreshold: a value this close to 0 counts as missing when the split's missing type is Zero.
_ZERO_THRESHOLD = 1e-35
_TREE_HEADER = re.compile(r"^Tree=\d+$", re.MULTILINE)
_END_OF_TREES = "end of trees"
# Rows of one block, at least: below it a predict call's fixed cost outweighs the trees a narrower range saves.
ROWS_PER_BLOCK = 50_000
SPLITS_PER_COLUMN = 4


@dataclass(frozen=True)
class TreeGroup:
    """Trees predicted together: evaluated on `evaluated_bin`'s inputs, their raw score belongs to every bin of
    `bins` (a class of bins none of these trees can tell apart on the scored rows). `numbers`: the trees' indices
    in the booster; `trees`: those trees, as numpy evaluates them. No LightGBM booster is built per group (they
    were kept for every class of bins any batch of rows met, and only the tests read them)."""

    evaluated_bin: int
    bins: tuple[int, ...]
    numbers: tuple[int, ...]
    trees: tuple[TreeArrays, ...]


@dataclass(frozen=True)
class _Tree:
    split_features: tuple[int, ...]
    thresholds: tuple[float, ...]
    decision_types: tuple[int, ...]
    linear: bool
    arrays: TreeArrays


# A node's decision in one bin: left (True), right (False), the same in every bin (None), or depends on the
# customer (("bin", k): the bin is a class of its own; not a bare k, which True == 1 would alias).
_Decision = bool | None | tuple[str, int]


class BinTrees:
    """A booster's trees, ready to be grouped by the bins each can tell apart (`groups`)."""

    def __init__(self, trees: list[_Tree], bin_feature: int, advanced: dict[int, int]) -> None:
        self._trees, self._bin_feature, self._advanced = trees, bin_feature, advanced

    @classmethod
    def of(cls, booster: lgb.Booster, bin_feature: int, advanced: dict[int, int] | None = None) -> BinTrees | None:
        """The trees `booster.predict` uses by default (up to the best iteration when early stopping kept one);
        None when the booster is not a plain sum of trees. `bin_feature`: the input index of the bin start;
        `advanced`: the input index of each advanced column -> the input index of the column it advances."""
        header, trees = _split_model_text(booster.model_to_string())
        if trees is None or not _plain_sum(header, trees):
            return None
        return cls(trees, bin_feature, dict(advanced or {}))

    def predict_raw_by_bin(
        self, inputs: np.ndarray, bin_starts: Sequence[float], threads: int | None = None
    ) -> np.ndarray:
        """Raw scores (rows x bins) of `inputs`: one row per customer, its encoded features first (the bin start and
        the advanced columns are computed here for each bin, and never read from `inputs`, which may lack them).

        The rows are predicted in blocks of close values of the advanced columns (`row_blocks`): the narrower a
        block's range, the more bins its trees cannot tell apart. Rows come back in their order. `threads`: blocks
        predicted at once (default: one per core; a Spark task passes its own cores)."""
        order, blocks = row_blocks(inputs[:, list(self._advanced.values())])
        raw = np.empty((len(inputs), len(bin_starts)), dtype=float)

        def predict_block(block: slice) -> None:
            rows = inputs[order[block]]  # one gather of the block's rows; each split then reads a column of it
            ranges = {column: _finite_range(rows[:, source]) for column, source in self._advanced.items()}
            groups = self.groups(bin_starts, ranges)
            raw[block] = _predict_groups(groups, self._columns_at(rows, bin_starts), len(rows), len(bin_starts))

        # Blocks are independent and numpy releases the GIL inside each split's arithmetic: one thread per core.
        workers = min(len(blocks), threads or os.cpu_count() or 1)
        if workers == 1:
            for block in blocks:
                predict_block(block)
        else:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                list(pool.map(predict_block, blocks))
        restored = np.empty_like(raw)
        restored[order] = raw
        return restored

    def _columns_at(self, rows: np.ndarray, bin_starts: Sequence[float]) -> Callable[[int], ColumnOf]:
        """For a bin, the block's input columns as that bin reads them: the bin start, the advanced columns moved
        by it (computed as `column + start` in float64, as the inputs of a whole-booster prediction are), the
        others as they are."""
        given: dict[int, np.ndarray] = {}
        read: dict[int, np.ndarray] = {}

        def contiguous(feature: int) -> np.ndarray:
            if feature not in given:
                given[feature] = np.ascontiguousarray(rows[:, feature])
            return given[feature]

        def base(feature: int) -> np.ndarray:
            if feature not in read:
                read[feature] = as_read(contiguous(feature))
            return read[feature]

        def at_bin(k: int) -> ColumnOf:
            start = float(bin_starts[k])
            moved: dict[int, np.ndarray] = {}

            def column(feature: int) -> np.ndarray:
                if feature == self._bin_feature:
                    return start
                source = self._advanced.get(feature)
                if source is None:
                    return base(feature)
                if feature not in moved:
                    moved[feature] = as_read(contiguous(source) + start)
                return moved[feature]

            return column

        return at_bin

    def groups(self, bin_starts: Sequence[float], advanced_ranges: dict[int, tuple[float, float]]) -> list[TreeGroup]:
        """The trees grouped by class of bins. `advanced_ranges`: for each advanced column's input index, the
        smallest and largest value of the unadvanced column in the scored rows (NaN, NaN when all are missing)."""
        classes: dict[tuple[int, ...], list[int]] = {}
        for number, tree in enumerate(self._trees):
            for bins in self._bin_classes(tree, bin_starts, advanced_ranges):
                classes.setdefault(bins, []).append(number)
        return [
            TreeGroup(
                evaluated_bin=bins[0],
                bins=bins,
                numbers=tuple(numbers),
                trees=tuple(self._trees[number].arrays for number in numbers),
            )
            for bins, numbers in sorted(classes.items())
        ]

    def _bin_classes(
        self, tree: _Tree, bin_starts: Sequence[float], advanced_ranges: dict[int, tuple[float, float]]
    ) -> list[tuple[int, ...]]:
        """The classes of bins in which the tree gives each scored customer the same value."""
        nodes = [
            i
            for i, feature in enumerate(tree.split_features)
            if feature == self._bin_feature or feature in advanced_ranges
        ]
        if not nodes:
            return [tuple(range(len(bin_starts)))]
        by_decisions: dict[tuple[_Decision, ...], list[int]] = {}
        for k, start in enumerate(bin_starts):
            decisions = tuple(self._decision(tree, i, k, float(start), advanced_ranges) for i in nodes)
            by_decisions.setdefault(decisions, []).append(k)
        return [tuple(bins) for bins in by_decisions.values()]

    def _decision(
        self, tree: _Tree, node: int, k: int, start: float, advanced_ranges: dict[int, tuple[float, float]]
    ) -> _Decision:
        feature, threshold, decision_type = tree.split_features[node], tree.thresholds[node], tree.decision_types[node]
        if feature == self._bin_feature:
            return _goes_left(start, threshold, decision_type)
        low, high = advanced_ranges[feature]
        if math.isnan(low):
            return None  # every row missing: a missing value is one in every bin
        if decision_type & _CATEGORICAL_MASK or (decision_type >> 2) & 3 == _MISSING_ZERO:
            return ("bin", k)  # (a value of 0 would take the default way: not worth planning)
        # The inputs are computed as column + start in float64, and rounding keeps the order of sums.
        if high + start <= threshold:
            return True
        if low + start > threshold:
            return False
        return ("bin", k)


def _goes_left(value: float, threshold: float, decision_type: int) -> bool:
    """LightGBM's numerical decision (Tree::NumericalDecision) for a value that is never NaN."""
    if decision_type & _CATEGORICAL_MASK:
        raise ValueError("the bin start is a numeric input; a categorical split on it cannot be planned")
    missing_type = (decision_type >> 2) & 3
    if missing_type == _MISSING_ZERO and math.fabs(value) <= _ZERO_THRESHOLD:
        return bool(decision_type & _DEFAULT_LEFT_MASK)
    return value <= threshold


def _split_model_text(text: str) -> tuple[str, list[_Tree] | None]:
    """(header, the trees) of a LightGBM text model."""
    starts = [match.start() for match in _TREE_HEADER.finditer(text)]
    end = text.find(_END_OF_TREES)
    if not starts or end < 0:
        return text, None
    blocks = [text[a:b] for a, b in zip(starts, [*starts[1:], end], strict=True)]
    return text[: starts[0]], [_parse_tree(block) for block in blocks]


def _parse_tree(block: str) -> _Tree:
    fields = dict(line.split("=", 1) for line in block.splitlines()[1:] if "=" in line)

    def numbers(key: str, kind: type) -> tuple:
        return tuple(kind(value) for value in fields.get(key, "").split())

    return _Tree(
        split_features=numbers("split_feature", int),
        thresholds=numbers("threshold", float),
        decision_types=numbers("decision_type", int),
        linear=fields.get("is_linear", "0") != "0",
        arrays=TreeArrays.from_fields(fields),
    )


def _plain_sum(header: str, trees: list[_Tree]) -> bool:
    settings = dict(line.split("=", 1) for line in header.splitlines() if "=" in line)
    return (
        settings.get("num_tree_per_iteration") == "1"
        and "average_output" not in header.splitlines()
        and not any(tree.linear for tree in trees)
    )


def row_blocks(values: np.ndarray) -> tuple[np.ndarray, list[slice]]:
    """A row order and contiguous blocks of it: sorted by the first column and cut into up to SPLITS_PER_COLUMN
    blocks of equal size, each of those sorted by the next column and cut again, and so on."""
    blocks = [np.arange(len(values))]
    for column in range(values.shape[1]):
        cut = []
        for block in blocks:
            parts = max(1, min(SPLITS_PER_COLUMN, len(block) // ROWS_PER_BLOCK))
            cut.extend(np.array_split(block[np.argsort(values[block, column], kind="stable")], parts))
        blocks = cut
    ends = np.cumsum([len(block) for block in blocks])
    return np.concatenate(blocks), [slice(end - len(block), end) for block, end in zip(blocks, ends, strict=True)]


def _finite_range(values: np.ndarray) -> tuple[float, float]:
    """(min, max) of the non-missing values; (NaN, NaN) when every value is missing."""
    present = values[~np.isnan(values)]
    return (float(present.min()), float(present.max())) if len(present) else (math.nan, math.nan)


def _predict_groups(
    groups: Sequence[TreeGroup], columns_at: Callable[[int], ColumnOf], rows: int, n_bins: int
) -> np.ndarray:
    """Each group predicted on its evaluated bin's inputs and added to every bin of its class."""
    by_bin = np.zeros((n_bins, rows), dtype=float)  # one contiguous row per bin to add into
    for group in sorted(groups, key=lambda g: g.evaluated_bin):
        scores = predict_trees(group.trees, columns_at(group.evaluated_bin), rows)
        for k in group.bins:
            by_bin[k] += scores
    return by_bin.T
