"""The hindsight blend of the ceiling diagnostics picks the weight that is best on the rows it is given."""

from __future__ import annotations

import numpy as np

from churnops.jobs.value.ceiling import best_blend_in_hindsight


def test_hindsight_blend_takes_all_of_the_forecast_that_matches_the_realised_values() -> None:
    rng = np.random.default_rng(1)
    actual = rng.gamma(0.5, 40.0, 300) * (rng.random(300) < 0.4)
    exact = actual + 1.0  # ranks customers exactly as they turned out
    noise = rng.gamma(2.0, 10.0, 300)
    weight, blend = best_blend_in_hindsight(actual, model=noise, btyd=exact)
    assert weight == 1.0
    np.testing.assert_allclose(blend, exact)
    weight, _ = best_blend_in_hindsight(actual, model=exact, btyd=noise)
    assert weight == 0.0
