"""The scalar post-processing of a single-row `/predict` (serving/single_row.py) gives the batch path's score bit for
bit: the same blend and calibration over many customer-like rows, edge rows included, compared with
`ScorePostprocess.apply` on the whole matrix at once (what `/batch_predict` and batch scoring compute)."""

from __future__ import annotations

import numpy as np
import pytest

from churnops.postprocess import BGNBD_INPUT_COLUMNS, ScorePostprocess
from churnops.serving.single_row import SingleRowPostprocess

COLUMNS = ["spend", *BGNBD_INPUT_COLUMNS, "visits"]
BGNBD = {"r": 2.16, "alpha": 1.168, "a": 0.238, "b": 1453.17}
BLEND = {"weight": 0.4, "bgnbd": BGNBD, "horizon_days": 60, "label": "churn"}
ISOTONIC_X = [0.0005, 0.0012, 0.003, 0.0063, 0.0095, 0.02, 0.05, 0.2, 0.4, 0.7, 0.99]
ISOTONIC = {
    "method": "isotonic",
    "x": ISOTONIC_X,
    "y": [0.0, 0.0004, 0.0022, 0.0037, 0.0094, 0.016, 0.05, 0.2, 0.5, 0.8, 1.0],
    "tie_break_weight": 0.0001,
}
VARIANTS = {
    "blend+isotonic": {"blend": BLEND, "calibration": ISOTONIC},
    "blend+isotonic without tie-break": {"blend": BLEND, "calibration": ISOTONIC | {"tie_break_weight": 0.0}},
    "blend (propensity)+platt": {
        "blend": BLEND | {"label": "purchase"},
        "calibration": {"method": "platt", "slope": 1.3, "intercept": -0.4},
    },
    "blend only": {"blend": BLEND},
    "platt only": {"calibration": {"method": "platt", "slope": 0.8, "intercept": 0.1}},
    "isotonic only": {"calibration": ISOTONIC},
}


def customer_rows(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Booster scores and rows: customer-like RFM days and counts, plus missing, zero, negative, huge and
    inconsistent ones (first purchase after the last), and scores on the isotonic knots and outside [0, 1]."""
    rng = np.random.default_rng(22)
    first = rng.integers(0, 1500, size=n).astype(np.float64)
    last = np.floor(first * rng.uniform(0, 1, size=n))
    active = rng.integers(0, 60, size=n).astype(np.float64)
    spend, visits = rng.lognormal(3, 1, size=n), rng.integers(0, 100, size=n).astype(np.float64)
    rows = np.column_stack([spend, active, first, last, visits])
    edges = [np.nan, 0.0, -1.0, -5.0, 1e12, 1e308, 0.5]
    for index, value in enumerate(edges):
        rows[index::97, 1 + index % 3] = value
    rows[7::89, 3] = rows[7::89, 2] + 30  # last after first: negative recency
    raw = rng.uniform(0, 1, size=n)
    raw[::50] = rng.choice(ISOTONIC_X, size=len(raw[::50]))
    raw[1::211], raw[2::211], raw[3::211] = 0.0, 1.0, 1e-9
    return raw, rows


@pytest.mark.parametrize("name", VARIANTS)
def test_the_scalar_path_gives_the_batch_paths_score_bit_for_bit(name: str) -> None:
    postprocess = ScorePostprocess.from_metadata(VARIANTS[name], COLUMNS)
    assert postprocess is not None
    raw, rows = customer_rows(20_000)
    single_row = SingleRowPostprocess(postprocess)
    scalar = np.array([single_row(float(score), row) for score, row in zip(raw, rows, strict=True)])
    batch = postprocess.apply(raw, rows)
    assert np.array_equal(scalar, batch, equal_nan=True), np.flatnonzero(scalar != batch)[:10]
    # The comparison can fail: the scores do move with the rows.
    assert len(np.unique(batch)) > 1_000


def test_the_checked_constructor_refuses_a_path_that_differs() -> None:
    postprocess = ScorePostprocess.from_metadata(VARIANTS["blend+isotonic"], COLUMNS)
    assert postprocess is not None
    raw, rows = customer_rows(300)
    assert SingleRowPostprocess.checked(postprocess, raw, rows) is not None
    # A post-processing whose stored blend weight no longer matches what the scalar path was built from.
    drifted = ScorePostprocess.from_metadata(VARIANTS["blend+isotonic"] | {"blend": BLEND | {"weight": 0.5}}, COLUMNS)

    class Drifted(SingleRowPostprocess):
        def __init__(self, _: ScorePostprocess) -> None:
            super().__init__(drifted)  # type: ignore[arg-type]

    assert Drifted.checked(postprocess, raw, rows) is None
